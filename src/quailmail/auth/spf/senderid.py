"""Sender ID (RFC 4406, RFC 4407; historic): the purported responsible
address of a message, checked against `spf2.0/pra` records.

Reported, never enforced by default: RFC 4406 and RFC 4408 were published
side by side with a warning that they conflict (Resent-* headers, v=spf1
records read as PRA policies), and receivers that enforced Sender ID lost
forwarded mail.  The seeds' reflector report still shows the check.
"""

from __future__ import annotations

from quailmail.auth.message import Message, strip_comments
from quailmail.auth.spf.check import (
    DEFAULT_EXPLANATION,
    TIME_LIMIT,
    Address,
    client_address,
    run_check,
    split_sender,
)
from quailmail.auth.spf.result import PRA, SpfResult, SpfVerdict
from quailmail.core.clock import Clock
from quailmail.core.dns import Resolver

_TRACE = frozenset({"received", "return-path"})


def pra(message: Message) -> str | None:
    """The Purported Responsible Address (RFC 4407 §2), or None when the
    message is ill-formed for it (§2 step 6)."""
    found = pra_field(message)
    return found[1] if found else None


def pra_field(message: Message) -> tuple[str, str] | None:
    """(lower-case field name, PRA): the PRA and the field it came from
    (for Authentication-Results' `header.<field>=`), or None."""
    fields = [(h.lname, h.text()) for h in message.headers]
    chosen = _choose(fields)
    if chosen is None:
        return None
    address = _single_mailbox(chosen[1])
    return None if address is None else (chosen[0], address)


def _choose(fields: list[tuple[str, str]]) -> tuple[str, str] | None:
    nonempty = [(i, name, value) for i, (name, value) in enumerate(fields) if value]
    # Step 1: the first non-empty Resent-Sender, unless a Resent-From comes
    # before it with Received or Return-Path fields in between (then the
    # Resent-Sender belongs to an older resent block).
    resent_sender = next((x for x in nonempty if x[1] == "resent-sender"), None)
    if resent_sender is not None:
        at = resent_sender[0]
        froms = [i for i, name, _ in nonempty if name == "resent-from" and i < at]
        older = any(name in _TRACE for name, _ in fields[froms[0] + 1 : at]) if froms else False
        if not older:
            return "resent-sender", resent_sender[2]
    # Step 2: the first non-empty Resent-From.
    for _, name, value in nonempty:
        if name == "resent-from":
            return name, value
    # Steps 3 and 4: exactly one non-empty Sender, else exactly one From.
    for wanted in ("sender", "from"):
        values = [value for _, name, value in nonempty if name == wanted]
        if len(values) == 1:
            return wanted, values[0]
        if values:
            return None  # several: step 6
    return None


def _single_mailbox(value: str) -> str | None:
    """Step 5: one mailbox with a domain, or None (several mailboxes, a
    group, no "@", hopeless syntax)."""
    text = strip_comments(value)
    items = [item.strip() for item in _split_top(text) if item.strip()]
    if len(items) != 1:
        return None
    item = items[0]
    if _has_top(item, ":") or _has_top(item, ";"):
        return None  # a group (RFC 5322 §3.4)
    lt = item.rfind("<")
    if lt >= 0:
        gt = item.find(">", lt)
        if gt < 0:
            return None
        address = item[lt + 1 : gt].strip()
        address = address.rsplit(":", 1)[-1]  # an obsolete route (RFC 5322 §4.4)
    else:
        address = item
    local, at, domain = address.rpartition("@")
    domain = domain.strip()
    if not at or not local.strip() or not domain or any(c in domain for c in ' <>"\\'):
        return None
    return f"{local.strip()}@{domain}"


def _split_top(text: str) -> list[str]:
    """Split on commas outside quotes and angle brackets."""
    items: list[str] = []
    start = 0
    quoted = angle = False
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            angle = True
        elif not quoted and ch == ">":
            angle = False
        elif ch == "," and not quoted and not angle:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return items


def _has_top(text: str, char: str) -> bool:
    """`char` outside quotes and angle brackets."""
    quoted = angle = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            angle = True
        elif not quoted and ch == ">":
            angle = False
        elif ch == char and not quoted and not angle:
            return True
    return False


async def check_senderid(
    ip: str | Address,
    pra_address: str | None,
    resolver: Resolver,
    *,
    helo: str = "",
    receiver: str = "unknown",
    default_explanation: str = DEFAULT_EXPLANATION,
    clock: Clock | None = None,
    time_limit: float | None = TIME_LIMIT,
) -> SpfVerdict:
    """Sender ID's check of the PRA (RFC 4406 §4): check_host() of RFC 7208
    on the PRA's domain, with the records of scope "pra" (`spf2.0/pra`,
    `spf2.0/mfrom,pra`; a v=spf1 record when the name has no spf2.0 record
    at all, RFC 4406 §3.4).  No PRA (RFC 4407 §2 step 6) is a permerror."""
    if not pra_address:
        return SpfVerdict(
            result=SpfResult.PERMERROR,
            domain="",
            sender="",
            client_ip=str(client_address(ip)),
            helo=helo,
            identity=PRA,
            receiver=receiver or "unknown",
            reason="no purported responsible address (RFC 4407 §2)",
        )
    return await run_check(
        ip,
        split_sender(pra_address)[1],
        pra_address,
        resolver,
        helo=helo,
        receiver=receiver,
        identity=PRA,
        scope=PRA,
        default_explanation=default_explanation,
        clock=clock,
        time_limit=time_limit,
    )
