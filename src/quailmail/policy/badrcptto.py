"""`control/badrcptto` (the qmail-smtpd badrcptto patch, also in spamcontrol
and s/qmail): recipients we refuse, e.g. addresses that only spam reaches.

Lines as in `badmailfrom`: an address, or `@host` for every address at that
host, without regard to case.  Answered per RCPT with
`553 sorry, your envelope recipient is in my badrcptto list`; the other
recipients of the message are not affected.
"""

from __future__ import annotations

from quailmail.core.reply import Reply
from quailmail.policy.badmailfrom import listed
from quailmail.policy.base import Client

REFUSED = Reply(553, "5.7.1", "sorry, your envelope recipient is in my badrcptto list")


async def check(client: Client, sender: str, recipient: str) -> Reply | None:
    entries = client.control.domains("badrcptto")
    if entries and listed(entries, recipient):
        return REFUSED
    return None
