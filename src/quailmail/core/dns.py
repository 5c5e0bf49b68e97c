"""The resolver contract that `auth`, `policy` and `deliver` are handed.

Every lookup ends in one of four states, never an exception: an answer, no such
name (NXDOMAIN), no data of that type (NOERROR/NODATA), or a temporary failure
(SERVFAIL, timeout, refused, network error).  RFC 6376 §6.1.2, RFC 7208 §5 and
RFC 5782 all treat the last one differently from the two "does not exist" ones.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")


class DnsStatus(enum.Enum):
    ANSWER = "answer"
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    TEMPFAIL = "tempfail"


@dataclass(frozen=True, slots=True)
class DnsResult(Generic[T]):
    status: DnsStatus
    records: tuple[T, ...] = ()
    reason: str = ""
    ttl: int = 0

    @property
    def ok(self) -> bool:
        return self.status is DnsStatus.ANSWER

    @property
    def missing(self) -> bool:
        """The name or the type does not exist (a permanent answer)."""
        return self.status in (DnsStatus.NXDOMAIN, DnsStatus.NODATA)


@dataclass(frozen=True, slots=True)
class MxRecord:
    preference: int
    exchange: str  # no trailing dot; "" for the null MX of RFC 7505


class Resolver(Protocol):
    """What pure code may ask of DNS.  TXT character-strings come joined."""

    async def txt(self, name: str) -> DnsResult[bytes]: ...

    async def a(self, name: str) -> DnsResult[str]: ...

    async def aaaa(self, name: str) -> DnsResult[str]: ...

    async def mx(self, name: str) -> DnsResult[MxRecord]: ...

    async def ptr(self, address: str) -> DnsResult[str]: ...
