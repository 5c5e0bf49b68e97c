"""Authentication-Results fields that claim to be ours are removed.

RFC 8601 §5: a border MTA MUST remove (or rename) any Authentication-Results
field whose authserv-id is its own before it adds its own, or a sender
could write "dkim=pass" in our name and be believed by the mail store and
the user's client.  The authserv-id is `control/me` (the pipeline writes
ours with it), compared without regard to case (it is a domain name,
RFC 8601 §2.5).  Fields of other authserv-ids stay: they are someone
else's statements, and readers that trust them know whose.

Done for every client, relay clients included (RFC 8601 §5 allows removing
more than it requires; no client of ours has a reason to speak in our
name).  The message is rewritten in its header section only: our
Received: field stays first and the body's bytes are not touched.  It runs
after the verifiers, which must see the message as it was signed.
"""

from __future__ import annotations

import logging
import re

from quailmail.core.reply import Reply
from quailmail.policy.base import Client, Message

log = logging.getLogger("quailmail.policy")

_NAME = b"authentication-results"
_TOKEN = re.compile(r'[^\s;()"]+')


def _skip_cfws(text: str, at: int) -> int:
    """Past folding white space and (nested) comments (RFC 5322 §3.2.2)."""
    depth = 0
    while at < len(text):
        ch = text[at]
        if depth:
            if ch == "\\":
                at += 1
            elif ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
        elif ch == "(":
            depth = 1
        elif not ch.isspace():
            break
        at += 1
    return at


def authserv_id(value: bytes) -> str | None:
    """The authserv-id of an Authentication-Results field's value: a
    token or a quoted string after optional CFWS (RFC 8601 §2.2)."""
    text = value.decode("utf-8", "replace")
    at = _skip_cfws(text, 0)
    if at < len(text) and text[at] == '"':
        out = []
        at += 1
        while at < len(text) and text[at] != '"':
            if text[at] == "\\":
                at += 1
            if at < len(text):
                out.append(text[at])
            at += 1
        return "".join(out)
    match = _TOKEN.match(text, at)
    return match.group(0) if match else None


def _claims(field: bytes, ours: str) -> bool:
    name, colon, value = field.partition(b":")
    if not colon or name.rstrip(b" \t").lower() != _NAME:
        return False
    claimed = authserv_id(value)
    if claimed is None:
        return False
    return claimed.rstrip(".").lower() == ours


def strip_claims(message: Message, ours: str) -> int:
    """Remove from the client's header section every Authentication-Results
    field with authserv-id `ours`; the number removed."""
    ours = ours.rstrip(".").lower()
    return message.remove_client_fields(_NAME, lambda field: _claims(field, ours))


async def at_data(client: Client, message: Message) -> Reply | None:
    removed = strip_claims(message, client.hostname)
    if removed:
        log.info(
            "%s: removed %d Authentication-Results field(s) claiming to be %s",
            client.ip, removed, client.hostname,
        )  # fmt: skip
    return None
