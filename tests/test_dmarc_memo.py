"""DMARC verdicts reused while their DNS answers stand (auth/memo.py), over
the wire: the loopback DNS server, a real caching DnsResolver."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from quailmail.auth.dmarc import DmarcResult, evaluate
from quailmail.auth.memo import AnswerMemo
from quailmail.auth.results import Result
from quailmail.dns.resolver import DnsResolver
from quailmail.dns.zone import Fault
from quailmail.dns.zoneserver import ZoneServer

from dnsfixtures import FakeMonotonic, resolver_for

Memo = AnswerMemo[DmarcResult]
PASSING = (("pass", "example.com"), (("example.com", True),))
FAILING = (("fail", "example.com"), ())


def _run(resolver: DnsResolver, memo: Memo, inputs: tuple[Any, Any], **kw: Any) -> DmarcResult:
    spf, dkim = inputs
    domain = kw.pop("domain", "example.com")
    return asyncio.run(evaluate(domain, spf=spf, dkim=dkim, resolver=resolver, memo=memo, **kw))


def test_the_same_evidence_reuses_the_verdict_without_asking_dns(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt("_dmarc.example.com", "v=DMARC1; p=reject", ttl=300)
    resolver, memo = resolver_for(dns_server), Memo()
    first = _run(resolver, memo, PASSING)
    assert first.result is Result.PASS and len(memo) == 1
    asked = dns_server.count()
    assert _run(resolver, memo, PASSING) is first
    assert dns_server.count() == asked
    # Other evidence is another evaluation: a failing message, kept apart.
    failed = _run(resolver, memo, FAILING)
    assert failed.result is Result.FAIL and failed.disposition.value == "reject"
    assert _run(resolver, memo, FAILING) is failed  # pct=100: nothing left to chance
    assert _run(resolver, memo, PASSING) is first


def test_a_record_past_its_ttl_makes_a_new_evaluation(dns_server: ZoneServer) -> None:
    zone = dns_server.zone
    zone.add_txt("_dmarc.example.com", "v=DMARC1; p=reject", ttl=60)
    clock = FakeMonotonic()
    resolver, memo = resolver_for(dns_server, clock=clock), Memo()
    first = _run(resolver, memo, FAILING)
    zone.remove("_dmarc.example.com", "TXT")
    zone.add_txt("_dmarc.example.com", "v=DMARC1; p=quarantine", ttl=60)
    assert _run(resolver, memo, FAILING) is first
    clock.advance(61)
    assert _run(resolver, memo, FAILING).disposition.value == "quarantine"


def test_sampled_fails_temperrors_and_a_callers_rng_are_never_kept(
    dns_server: ZoneServer,
) -> None:
    zone = dns_server.zone
    zone.add_txt("_dmarc.example.com", "v=DMARC1; p=reject; pct=50", ttl=300)
    zone.add_txt("_dmarc.broken.example", "v=DMARC1; p=reject")
    zone.set_fault("_dmarc.broken.example", Fault.SERVFAIL)
    resolver, memo = resolver_for(dns_server), Memo()
    sampled = _run(resolver, memo, FAILING)
    assert sampled.result is Result.FAIL and sampled.record is not None
    assert _run(resolver, memo, FAILING) is not sampled  # each failing message drawn anew
    assert _run(resolver, memo, PASSING).result is Result.PASS  # a pass is not drawn: kept
    temp = _run(resolver, memo, ((None, None), ()), domain="broken.example")
    assert temp.result is Result.TEMPERROR
    assert len(memo) == 1
    own = Memo()
    assert _run(resolver, own, PASSING, rng=random.Random(1)).result is Result.PASS
    assert len(own) == 0
