"""MAIL FROM verdicts reused while their DNS answers stand (auth/memo.py),
over the wire: the loopback DNS server, a real caching DnsResolver."""

from __future__ import annotations

import asyncio

from quailmail.auth.memo import AnswerMemo
from quailmail.auth.spf import SpfResult, SpfVerdict, check_mailfrom
from quailmail.core.clock import FixedClock
from quailmail.core.dns import DnsResult
from quailmail.dns.resolver import DnsResolver
from quailmail.dns.zone import Fault
from quailmail.dns.zoneserver import ZoneServer

from dnsfixtures import FakeMonotonic, resolver_for

Memo = AnswerMemo[SpfVerdict]


def _check(resolver: DnsResolver, memo: Memo, ip: str, sender: str, **kw: str) -> SpfVerdict:
    return asyncio.run(check_mailfrom(ip, sender, kw.pop("helo", "mx.example.org"), resolver,
                                      memo=memo, **kw))  # fmt: skip


def test_the_same_inputs_reuse_the_verdict_without_asking_dns(dns_server: ZoneServer) -> None:
    zone = dns_server.zone
    zone.add_txt("example.com", "v=spf1 include:_spf.example.net -all", ttl=300)
    zone.add_txt("_spf.example.net", "v=spf1 ip4:192.0.2.0/24 ~all", ttl=300)
    resolver, memo = resolver_for(dns_server), AnswerMemo[SpfVerdict]()
    first = _check(resolver, memo, "192.0.2.7", "joe@example.com")
    assert first.result is SpfResult.PASS and len(memo) == 1
    asked = dns_server.count()
    again = _check(resolver, memo, "192.0.2.7", "joe@example.com")
    assert again is first
    assert dns_server.count() == asked  # every answer came from the cache
    # Any other input is another check: another address, sender, HELO.
    assert _check(resolver, memo, "192.0.2.8", "joe@example.com") is not first
    assert _check(resolver, memo, "192.0.2.7", "ann@example.com").sender == "ann@example.com"
    assert _check(resolver, memo, "192.0.2.7", "joe@example.com", helo="b.example").helo == (
        "b.example"
    )
    assert len(memo) == 4


def test_an_answer_past_its_ttl_makes_a_new_evaluation(dns_server: ZoneServer) -> None:
    zone = dns_server.zone
    zone.add_txt("example.com", "v=spf1 ip4:192.0.2.0/24 -all", ttl=60)
    clock = FakeMonotonic()
    resolver, memo = resolver_for(dns_server, clock=clock), AnswerMemo[SpfVerdict]()
    first = _check(resolver, memo, "192.0.2.7", "joe@example.com")
    assert first.result is SpfResult.PASS
    zone.remove("example.com", "TXT")
    zone.add_txt("example.com", "v=spf1 ?all", ttl=60)
    assert _check(resolver, memo, "192.0.2.7", "joe@example.com") is first  # TTL still runs
    clock.advance(61)
    changed = _check(resolver, memo, "192.0.2.7", "joe@example.com")
    assert changed.result is SpfResult.NEUTRAL and changed.mechanism == "?all"


def test_fail_and_temperror_are_never_kept(dns_server: ZoneServer) -> None:
    zone = dns_server.zone
    zone.add_txt("example.com", "v=spf1 -all", ttl=300)
    zone.add_txt("broken.example", "v=spf1 -all")
    zone.set_fault("broken.example", Fault.SERVFAIL)
    resolver, memo = resolver_for(dns_server), AnswerMemo[SpfVerdict]()
    failed = _check(resolver, memo, "192.0.2.7", "joe@example.com")
    assert failed.result is SpfResult.FAIL
    assert _check(resolver, memo, "192.0.2.7", "joe@example.com") is not failed
    temp = _check(resolver, memo, "192.0.2.7", "joe@broken.example")
    assert temp.result is SpfResult.TEMPERROR
    assert len(memo) == 0


def test_a_resolver_without_a_cache_never_reuses(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt("example.com", "v=spf1 ip4:192.0.2.0/24 -all", ttl=300)

    class Uncached:
        """Every answer a new object, as from a resolver with no cache."""

        def __init__(self, inner: DnsResolver) -> None:
            self.inner = inner

        async def txt(self, name: str) -> DnsResult[bytes]:
            answer = await self.inner.txt(name)
            return DnsResult(answer.status, answer.records, answer.reason, answer.ttl)

    resolver, memo = Uncached(resolver_for(dns_server)), AnswerMemo[SpfVerdict]()

    async def twice() -> tuple[SpfVerdict, SpfVerdict]:
        one = await check_mailfrom("192.0.2.7", "joe@example.com", "h", resolver, memo=memo)  # type: ignore[arg-type]
        two = await check_mailfrom("192.0.2.7", "joe@example.com", "h", resolver, memo=memo)  # type: ignore[arg-type]
        return one, two

    one, two = asyncio.run(twice())
    assert one == two and one is not two


def test_a_clock_of_the_callers_or_no_memo_evaluates_every_time(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt("x.example", "v=spf1 ip4:192.0.2.0/24 -all", ttl=300)
    resolver, memo = resolver_for(dns_server), AnswerMemo[SpfVerdict]()

    async def run() -> list[SpfVerdict]:
        clock = FixedClock(1_700_000_000)
        return [
            await check_mailfrom(
                "192.0.2.7", "j@example.com", "h", resolver, memo=memo, clock=clock
            ),
            await check_mailfrom("192.0.2.7", "j@x.example", "h", resolver),
            await check_mailfrom("192.0.2.7", "j@x.example", "h", resolver),
        ]

    verdicts = asyncio.run(run())
    assert len(memo) == 0
    assert verdicts[1] == verdicts[2] and verdicts[1] is not verdicts[2]


def test_the_oldest_verdict_goes_first_when_full(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt("example.com", "v=spf1 ip4:192.0.2.0/24 -all", ttl=300)
    resolver, memo = resolver_for(dns_server), AnswerMemo[SpfVerdict](size=2)
    first = _check(resolver, memo, "192.0.2.1", "joe@example.com")
    _check(resolver, memo, "192.0.2.2", "joe@example.com")
    _check(resolver, memo, "192.0.2.3", "joe@example.com")
    assert len(memo) == 2
    assert _check(resolver, memo, "192.0.2.1", "joe@example.com") is not first


def test_a_verdict_read_from_big_records_is_not_kept(dns_server: ZoneServer) -> None:
    big = ["v=spf1 ip4:192.0.2.0/24 -all", *(f"verification-{i}=" + "x" * 200 for i in range(50))]
    for text in big:
        dns_server.zone.add_txt("example.com", text, ttl=300)
    resolver, memo = resolver_for(dns_server), Memo()
    assert _check(resolver, memo, "192.0.2.7", "joe@example.com").result is SpfResult.PASS
    assert len(memo) == 0
