"""Verdicts kept for the next message with the same inputs, while the DNS
answers they were reached from stand.

A check such as check_host() (SPF) or DMARC's evaluation is a function of
its inputs (client address, sender, HELO, From domain, the other methods'
verdicts, …) and of the DNS answers it reads.  A busy sender's next message
has the same inputs, so `AnswerMemo` keeps each verdict with the answers
it read, and hands it out again only while every one of those answers is
still the resolver's answer: the very same `DnsResult`, which a caching
resolver returns on a hit until the record's TTL runs out.  A kept verdict
is therefore the verdict a new evaluation would reach, without the
evaluation; when a TTL ends or an answer changes, the next check evaluates
anew.  A resolver without a cache returns a new object each time, so with
it nothing is ever reused.

The caller decides what may be kept: nothing that read no DNS answer
(nothing to validate it by), nothing temporary, nothing that depends on
the time or on chance (SPF's `%{t}` in a fail's explanation, DMARC's pct
sampling).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar, cast

from quailmail.core.dns import DnsResult, MxRecord, Resolver

V = TypeVar("V")

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


KEPT_ANSWERS_MAX = 8192  # bytes of DNS records behind one kept verdict


def _answer_bytes(reads: list[Read]) -> int:
    return sum(
        len(record) if isinstance(record, bytes | str) else 64  # an MX: name and preference
        for _, _, answer in reads
        for record in answer.records
    )


class AnswerMemo(Generic[V]):
    """Verdicts by their inputs, at most `size` of them (the oldest go first)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._kept: dict[Hashable, tuple[V, tuple[Read, ...]]] = {}

    def __len__(self) -> int:
        return len(self._kept)

    async def through(
        self,
        key: Hashable,
        resolver: Resolver,
        evaluate: Callable[[Resolver], Awaitable[V]],
        keep: Callable[[V], bool],
    ) -> V:
        """The verdict kept for `key`, else `evaluate(resolver)`'s, read
        through a Recorder and kept when `keep` says it may be."""
        kept = await self.get(key, resolver)
        if kept is not None:
            return kept
        recorder = Recorder(resolver)
        verdict = await evaluate(recorder)
        if keep(verdict):
            self.put(key, verdict, recorder.reads)
        return verdict

    async def get(self, key: Hashable, resolver: Resolver) -> V | None:
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

    def put(self, key: Hashable, verdict: V, reads: list[Read]) -> None:
        """Keep `verdict` (the caller judged it may be kept) if it read DNS,
        and no more than KEPT_ANSWERS_MAX bytes of it: hostile zones must not
        fill memory with big records through a full memory of verdicts."""
        if not reads or _answer_bytes(reads) > KEPT_ANSWERS_MAX:
            return
        if len(self._kept) >= self.size:
            del self._kept[next(iter(self._kept))]
        self._kept[key] = (verdict, tuple(reads))
