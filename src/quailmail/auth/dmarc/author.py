"""The RFC5322.From domain that DMARC (and ADSP) judge a message by.

RFC 7489 §6.6.1: DMARC needs one author domain.  A message with no From
field, several From fields (RFC 5322 §3.6 allows one), or a From that names
mailboxes in different domains gives none; the receiver decides what to do
with it (§6.6.1 lets it reject), and this module only says why.  Several
mailboxes in one and the same domain are fine: §6.6.1's rule for multi-valued
From (check each domain, keep the strictest) gives that domain's verdict.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from quailmail.auth.message import KEPT_FIELD_MAX, Message, address_domain
from quailmail.core.kept import kept_by_text

# Letters, digits, hyphens and underscores, 1 to 63 of them per label, 253 a
# name (RFC 1035 §2.3.4): what a domain in a From address can sensibly be.
# Letters include non-ASCII ones: an EAI address has U-labels.
_LABEL = re.compile(r"[\w-]{1,63}\Z")
_MAX_NAME = 253


class AuthorDomain(NamedTuple):
    domain: str | None  # lowercase, no trailing dot; None when unusable
    reason: str = ""  # why domain is None


def is_domain_name(name: str) -> bool:
    if not name or len(name) > _MAX_NAME:
        return False
    return all(_LABEL.match(label) for label in name.split("."))


def author_domain(message: Message) -> AuthorDomain:
    """The From domain, or None and the reason (RFC 7489 §6.6.1)."""
    fields = message.fields_by_name().get("from", [])
    if not fields:
        return AuthorDomain(None, "no From header field")
    if len(fields) > 1:
        return AuthorDomain(None, f"{len(fields)} From header fields")
    value = fields[0].partition(b":")[2].replace(b"\r\n", b"")
    return from_value_domain(value.decode("utf-8", "surrogateescape"))


@kept_by_text(KEPT_FIELD_MAX)  # a sender's From field repeats from message to message
def from_value_domain(value: str) -> AuthorDomain:
    """The domain of a From field's value (a mailbox-list, RFC 5322 §3.6.2)."""
    if any(ch in value for ch in '",(\\'):
        mailboxes = [part for part in split_mailboxes(value) if part.strip(" \t")]
    else:  # no quotes, comments or commas: one mailbox, or none
        mailboxes = [value] if value.strip(" \t") else []
    if not mailboxes:
        return AuthorDomain(None, "From has no address")
    domains: list[str] = []
    for mailbox in mailboxes:
        found = address_domain(mailbox)
        if found is None:
            return AuthorDomain(None, f"From address without a domain: {mailbox.strip()[:60]!r}")
        domain = found[1]
        if domain.startswith("["):
            return AuthorDomain(None, f"From domain is an address literal: {domain[:60]!r}")
        if not is_domain_name(domain):
            return AuthorDomain(None, f"From domain is not a domain name: {domain[:60]!r}")
        domains.append(domain)
    distinct = sorted(set(domains))
    if len(distinct) > 1:
        return AuthorDomain(None, f"From names {len(distinct)} domains: {', '.join(distinct)}")
    return AuthorDomain(distinct[0])


def split_mailboxes(value: str) -> list[str]:
    """Split a mailbox-list at the commas outside quotes, comments and <>."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0  # comment nesting
    quoted = angle = escaped = False
    for ch in value:
        current.append(ch)
        if escaped:
            escaped = False
        elif ch == "\\" and (quoted or depth):
            escaped = True
        elif quoted:
            quoted = ch != '"'
        elif depth:
            depth += {"(": 1, ")": -1}.get(ch, 0)
        elif ch == '"':
            quoted = True
        elif ch == "(":
            depth = 1
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == "," and not angle:
            current.pop()
            parts.append("".join(current))
            current = []
    parts.append("".join(current))
    return parts
