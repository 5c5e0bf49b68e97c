"""The sending address a DomainKeys signature speaks for (RFC 4870's
"sending address"): the Sender: header's address if there is one, else the From: header's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from quailmail.auth.domainkeys.status import DkProblem, DkStatus
from quailmail.auth.message import Header, address_domain
from quailmail.auth.results import Result


@dataclass(frozen=True, slots=True)
class SendingAddress:
    local: str
    domain: str  # lower case
    field: str  # "sender" or "from"

    @property
    def address(self) -> str:
        return f"{self.local}@{self.domain}"


def sending_address(headers: Sequence[Header], *, where: str = "") -> SendingAddress:
    """The sending address among `headers`, or DkProblem.

    No Sender:/From: at all is NOSIG: the seeds (qmail-dk's table) file "a
    signature header without a From: header" under C, where libdomainkeys
    0.69 returns SYNTAX; RFC 8601 §2.7.1 calls "a required header field being
    absent" permerror.  Two fields of the kind that decides (two Sender:, or
    two From: and no Sender:) make the sender ambiguous: SYNTAX, as in
    libdomainkeys ("if we already got a From: header, fuhgeddabout it").
    An address without a domain is SYNTAX too (libdomainkeys' dkparse822).
    """
    senders = [h for h in headers if h.lname == "sender"]
    fields = senders or [h for h in headers if h.lname == "from"]
    if not fields:
        raise DkProblem(DkStatus.NOSIG, f"no From: or Sender: header{where}", Result.PERMERROR)
    name = fields[0].name
    if len(fields) > 1:
        raise DkProblem(DkStatus.SYNTAX, f"{len(fields)} {name}: headers{where}")
    parsed = address_domain(fields[0].text())
    if parsed is None:
        raise DkProblem(DkStatus.SYNTAX, f"{name}: holds no address with a domain")
    local, domain = parsed
    return SendingAddress(local=local, domain=domain, field="sender" if senders else "from")
