"""`control/badmailfrom` (qmail-control(5)): envelope senders we refuse.

A line is an address (`spammer@example.com`) or `@host`, every address at
that host; compared without regard to case, as qmail's constmap does.  The
null sender is never looked up (bounces must get through).  qmail 1.03
answers each RCPT of such a transaction; we answer the MAIL itself, with
qmail's text: `553 sorry, your envelope sender is in my badmailfrom list`.
"""

from __future__ import annotations

from quailmail.core.reply import Reply
from quailmail.policy.base import Client

REFUSED = Reply(553, "5.7.1", "sorry, your envelope sender is in my badmailfrom list")


def listed(entries: frozenset[str], address: str) -> bool:
    """`address` or its `@domain` in `entries` (lowercased lines)."""
    address = address.lower()
    if address in entries:
        return True
    at = address.rfind("@")
    return at >= 0 and address[at:] in entries


async def check(client: Client, sender: str) -> Reply | None:
    if not sender:
        return None
    entries = client.control.domains("badmailfrom")
    if entries and listed(entries, sender):
        return REFUSED
    return None
