"""`quail inject`: local programs submit mail as they do to qmail-inject or
sendmail (`/usr/sbin/sendmail -t -i` from web applications).

The message is read from standard input, completed with the header fields
qmail-inject adds when they are missing (From, Date, Message-ID), and
queued through the same durable path as SMTP mail: exit 0 means the message
is fsynced in the queue.  Exit codes are qmail-inject's: 100 for a message
that can never go (no recipient, bad address), 111 for a temporary failure.

Addresses are rewritten as qmail-inject(8) and qmail-header(5) say
(`core/qmailheader`): `joe` gets `@defaulthost`, `ann@mail` gets
`.defaultdomain`, `ann@mail+` gets `.plusdomain`, in the envelope (the
arguments, `-t`'s header recipients, `-f` and the sender made from the
environment) and in the address fields qmail-inject rewrites.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import sys
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import format_datetime, getaddresses
from pathlib import Path
from typing import Any

from quailmail.auth.message import Header, parse_message, to_crlf
from quailmail.cli.common import CliError, add_root_option, control_value
from quailmail.core.qmailheader import Rewriting, valid_host_value
from quailmail.queue import Queue, QueueError
from quailmail.queue.shards import INJECT

PERMANENT, TEMPORARY = 100, 111

# qmail-inject.c's `doheaderfield` (hfield.c's names): the fields whose
# address lists it rewrites.  Return-Path (its sender) and Mail-Followup-To
# (which it only writes, from QMAILMFTFILE) are not among them.
REWRITTEN = frozenset({
    "sender", "from", "reply-to", "return-receipt-to", "errors-to",
    "resent-sender", "resent-from", "resent-reply-to",
    "to", "cc", "bcc", "apparently-to", "resent-to", "resent-cc", "resent-bcc",
})  # fmt: skip
# -t's recipients (qmail-inject -h): these, or for a resent message the
# Resent- ones (qmail-header(5), RESENT MESSAGES).
RECIPIENT_FIELDS = ("to", "cc", "bcc", "apparently-to")
RESENT_RECIPIENT_FIELDS = ("resent-to", "resent-cc", "resent-bcc")
RESENT_FIELDS = frozenset({
    "resent-sender", "resent-from", "resent-reply-to", "resent-to", "resent-cc",
    "resent-bcc", "resent-date", "resent-message-id",
})  # fmt: skip
HIDDEN = ("bcc", "resent-bcc")  # used, then removed, as qmail-inject does


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "inject",
        help="queue a message from standard input (sendmail / qmail-inject)",
        description="Queue the message on standard input for RCPT... (or, with -t, for "
        "the To:, Cc: and Bcc: addresses).",
    )
    p.add_argument("recipients", metavar="RCPT", nargs="*")
    p.add_argument("-t", dest="from_headers", action="store_true",
                   help="take recipients from To:, Cc:, Bcc: (Bcc: is removed)")  # fmt: skip
    p.add_argument("-f", dest="sender", metavar="SENDER", help="envelope sender")
    p.add_argument("-i", "-oi", dest="ignore_dots", action="store_true",
                   help="a line with a single dot does not end the message")  # fmt: skip
    p.add_argument("-F", dest="fullname", metavar="NAME", help="full name for a made-up From:")
    add_root_option(p)
    p.set_defaults(handler=run)


def _cut_at_dot(data: bytes) -> bytes:
    """sendmail without -i: a line holding only "." ends the message."""
    for marker in (b"\r\n.\r\n", b"\n.\n", b"\n.\r\n"):
        index = data.find(marker)
        if index >= 0:
            return data[: index + 2 if marker[:2] == b"\r\n" else index + 1]
    if data.startswith((b".\n", b".\r\n")):
        return b""
    return data


def _first(env: Mapping[str, str], *names: str) -> str | None:
    """The first of qmail-inject's variables that is set; an empty value
    counts as unset."""
    for name in names:
        if env.get(name):
            return env[name]
    return None


def _login_name() -> str:
    """Who runs us, when no variable says (qmail-inject writes `anonymous`)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return "anonymous"


def mail_user(env: Mapping[str, str]) -> str:
    """The From: user: QMAILUSER, MAILUSER, USER or LOGNAME (qmail-inject(8))."""
    return _first(env, "QMAILUSER", "MAILUSER", "USER", "LOGNAME") or _login_name()


def _with_host(user: str, host: str | None) -> str:
    return f"{user}@{host}" if host else user


def default_from(env: Mapping[str, str]) -> str:
    """The made-up From: address before rewriting: the user at QMAILHOST or
    MAILHOST, else the bare user (which then gets defaulthost)."""
    return _with_host(mail_user(env), _first(env, "QMAILHOST", "MAILHOST"))


def default_sender(env: Mapping[str, str]) -> str:
    """The envelope sender without -f, before rewriting: as the From:
    address, with QMAILSUSER and QMAILSHOST in front (qmail-inject(8))."""
    user = _first(env, "QMAILSUSER") or mail_user(env)
    return _with_host(user, _first(env, "QMAILSHOST", "QMAILHOST", "MAILHOST"))


def _control(root: Path, name: str) -> str | None:
    """A control file's value; one we cannot read is a temporary failure
    (qmail-inject's `die_read`)."""
    try:
        return control_value(root, name)
    except OSError as exc:
        raise CliError(f"cannot read control/{name}: {exc.strerror or exc}", TEMPORARY) from None


def _host_setting(root: Path, env: Mapping[str, str], variable: str, name: str,
                  default: str) -> str:  # fmt: skip
    """One of qmail-inject's names: the variable, else control/NAME, else
    `default` (`me`), as its `control_rldef` and `env_get` calls read them."""
    value, where = env.get(variable), variable
    if not value:
        value, where = _control(root, name), f"control/{name}"
    if not value:
        value, where = default, "control/me"
    if not valid_host_value(value):
        raise CliError(f"{where}: not a host name: {value!r}", code=TEMPORARY)
    return value


def settings(root: Path, env: Mapping[str, str]) -> tuple[Rewriting, str]:
    """The rewriting names and idhost (qmail-inject.c's `getcontrols`)."""
    me = _control(root, "me") or "localhost"
    rewriting = Rewriting(
        defaulthost=_host_setting(root, env, "QMAILDEFAULTHOST", "defaulthost", me),
        defaultdomain=_host_setting(root, env, "QMAILDEFAULTDOMAIN", "defaultdomain", me),
        plusdomain=_host_setting(root, env, "QMAILPLUSDOMAIN", "plusdomain", me),
    )
    return rewriting, _host_setting(root, env, "QMAILIDHOST", "idhost", me)


def _rewrite_field(header: Header, rewriting: Rewriting) -> tuple[bytes, list[str]]:
    """The field with its addresses rewritten, and those addresses.  A field
    that does not parse is kept byte for byte (qmail-inject would refuse the
    message); its addresses are still found as before and rewritten."""
    name, colon, value = header.raw.partition(b":")
    field = rewriting.field(value.decode("utf-8", "surrogateescape"))
    if field is None:
        found = [a for _, a in getaddresses([header.text()]) if a]
        return header.raw, [rewriting.envelope(a) for a in found]
    raw = name + colon + field.value.encode("utf-8", "surrogateescape")
    return raw, field.addresses


def _phrase(name: str) -> str:
    """A full name as a quoted string (qmail-inject's TOKEN822_QUOTE); line
    breaks become spaces, so -F cannot add header fields."""
    flat = " ".join(name.splitlines())
    return '"' + flat.replace("\\", "\\\\").replace('"', '\\"') + '"'


def compose(data: bytes, *, rewriting: Rewriting, idhost: str, from_address: str,
            fullname: str | None, from_headers: bool,
            recipients: list[str]) -> tuple[bytes, list[str]]:  # fmt: skip
    """The message as queued (CRLF, addresses rewritten, with
    From/Date/Message-ID) and its recipients, rewritten."""
    data = to_crlf(data)
    message = parse_message(data)
    names = {h.lname for h in message.headers}
    wanted = RESENT_RECIPIENT_FIELDS if names & RESENT_FIELDS else RECIPIENT_FIELDS
    found = [rewriting.envelope(r.strip()) for r in recipients]
    kept = []
    for header in message.headers:
        raw = header.raw
        if header.lname in REWRITTEN:
            raw, addresses = _rewrite_field(header, rewriting)
            if from_headers and header.lname in wanted:
                found.extend(addresses)
        if header.lname in HIDDEN:
            continue  # never shown to the recipients
        kept.append(raw + b"\r\n")
    added = []
    if "from" not in names:
        shown = f"{_phrase(fullname)} <{from_address}>" if fullname else from_address
        added.append(f"From: {shown}\r\n".encode("utf-8", "surrogateescape"))
    if "date" not in names:
        added.append(f"Date: {format_datetime(datetime.now(UTC))}\r\n".encode())
    if "message-id" not in names:
        added.append(f"Message-ID: <{uuid.uuid4().hex}@{idhost}>\r\n".encode())
    body = data[message.body_offset :]
    return b"".join(added + kept) + b"\r\n" + body, [_text(r) for r in found]


def _text(address: str) -> str:
    """An address as the queue takes it: bytes that are not UTF-8 (from a
    header or the environment) become U+FFFD rather than an exception."""
    return address.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _bracketless(sender: str) -> str:
    """`-f '<>'` and `-f '<joe@example.com>'`, as sendmail callers write them."""
    sender = sender.strip()
    if sender.startswith("<") and sender.endswith(">"):
        return sender[1:-1].strip()
    return sender


def run(args: argparse.Namespace) -> int:
    root = args.root
    if root is None:
        raise CliError("give --root DIR (or set $QUAIL_ROOT)", code=TEMPORARY)
    env = os.environ
    rewriting, idhost = settings(root, env)
    # -f wins (and, as sendmail's, is also the From: made up); otherwise
    # qmail-inject's variables.  Both are rewritten as every address is.
    if args.sender is not None:
        sender = from_address = rewriting.envelope(_bracketless(args.sender))
    else:
        sender = rewriting.envelope(default_sender(env))
        from_address = rewriting.envelope(default_from(env))
    fullname = args.fullname or _first(env, "QMAILNAME", "MAILNAME", "NAME")
    data = sys.stdin.buffer.read()
    if not args.ignore_dots:
        data = _cut_at_dot(data)
    message, recipients = compose(
        data, rewriting=rewriting, idhost=idhost, from_address=from_address,
        fullname=fullname, from_headers=args.from_headers, recipients=list(args.recipients),
    )  # fmt: skip
    recipients = [r.strip() for r in recipients if r.strip()]
    if not recipients:
        raise CliError("no recipients", code=PERMANENT)
    for recipient in recipients:
        if any(c in recipient for c in "\r\n\0<>") or recipient.count("@") > 1:
            raise CliError(f"bad recipient {recipient!r}", code=PERMANENT)
    sender = _text(sender)
    if any(c in sender for c in "\r\n\0<>"):
        raise CliError(f"bad sender {sender!r}", code=PERMANENT)
    return asyncio.run(_queue(root / "queue" / INJECT, sender, recipients, message))


async def _queue(path: os.PathLike[str], sender: str, recipients: list[str], data: bytes) -> int:
    try:
        queue = Queue.open(path, wait=True)
    except QueueError as exc:
        raise CliError(f"cannot open the queue: {exc}", code=TEMPORARY) from None
    try:
        await queue.put(sender, recipients, data, meta={"client": "inject"})
    except QueueError as exc:
        raise CliError(f"message not queued: {exc}", code=TEMPORARY) from None
    finally:
        await queue.close()
    return 0
