"""MAIL FROM verdicts kept for the next message with the same inputs.

check_host() is a function of its inputs (client address, sender, HELO,
receiver name, default explanation, the receiver's local policy) and of the
DNS answers it reads.  A busy sender's next message has the same inputs, so
`SpfMemo` keeps each verdict with the answers it read, and hands it out
again only while every one of those answers is still the resolver's
answer: the very same `DnsResult`, which a caching resolver returns on a hit
until the record's TTL runs out.  A kept verdict is therefore the verdict a
new evaluation would reach, without the evaluation; when a TTL ends or an
answer changes, the next check evaluates anew.

Never kept: temperror (it must be tried again), fail (its explanation may
name the time, `%{t}`), and checks that read no DNS answer (nothing to
validate them by).  A resolver without a cache returns a new object each
time, so with it nothing is ever reused.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, cast

from quailmail.auth.spf.result import SpfResult, SpfVerdict
from quailmail.core.dns import DnsResult, MxRecord, Resolver

_NOT_KEPT = frozenset({SpfResult.TEMPERROR, SpfResult.FAIL})

# (method name, query name, the answer read)
Read = tuple[str, str, DnsResult[Any]]


class Recorder:
    """A Resolver that notes every answer read through it."""

    __slots__ = ("inner", "reads")

    def __init__(self, inner: Resolver) -> None:
        self.inner = inner
        self.reads: list[Read] = []

    async def _read(self, method: str, name: str) -> Any:
        answer = await getattr(self.inner, method)(name)
        self.reads.append((method, name, answer))
        return answer

    async def txt(self, name: str) -> DnsResult[bytes]:
        return cast(DnsResult[bytes], await self._read("txt", name))

    async def a(self, name: str) -> DnsResult[str]:
        return cast(DnsResult[str], await self._read("a", name))

    async def aaaa(self, name: str) -> DnsResult[str]:
        return cast(DnsResult[str], await self._read("aaaa", name))

    async def mx(self, name: str) -> DnsResult[MxRecord]:
        return cast(DnsResult[MxRecord], await self._read("mx", name))

    async def ptr(self, address: str) -> DnsResult[str]:
        return cast(DnsResult[str], await self._read("ptr", address))


class SpfMemo:
    """Verdicts by their inputs, at most `size` of them (the oldest go first)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._kept: dict[Hashable, tuple[SpfVerdict, tuple[Read, ...]]] = {}

    def __len__(self) -> int:
        return len(self._kept)

    async def get(self, key: Hashable, resolver: Resolver) -> SpfVerdict | None:
        """The verdict kept for `key`, if every answer it read is still current."""
        kept = self._kept.get(key)
        if kept is None:
            return None
        verdict, reads = kept
        for method, name, answer in reads:
            if await getattr(resolver, method)(name) is not answer:
                self._kept.pop(key, None)
                return None
        return verdict

    def put(self, key: Hashable, verdict: SpfVerdict, reads: list[Read]) -> None:
        if verdict.result in _NOT_KEPT or not reads:
            return
        if len(self._kept) >= self.size:
            del self._kept[next(iter(self._kept))]
        self._kept[key] = (verdict, tuple(reads))
