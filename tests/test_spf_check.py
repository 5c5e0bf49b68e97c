"""check_host() over the wire: the loopback DNS server, a real DnsResolver."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from quailmail.auth import authres
from quailmail.auth.spf import (
    HELO,
    MAILFROM,
    SpfResult,
    SpfVerdict,
    check_helo,
    check_host,
    check_mailfrom,
)
from quailmail.core.clock import FixedClock
from quailmail.dns.zone import Fault
from quailmail.dns.zoneserver import ZoneServer

from dnsfixtures import resolver_for

Check = Callable[..., SpfVerdict]


@pytest.fixture
def spf(dns_server: ZoneServer) -> Check:
    """check_mailfrom(ip, sender, helo) against the test server."""

    def run(ip: str, sender: str, helo: str = "mx.example.org", **options: Any) -> SpfVerdict:
        resolver = resolver_for(dns_server, timeout=options.pop("dns_timeout", 2.0))
        return asyncio.run(check_mailfrom(ip, sender, helo, resolver, **options))

    return run


def test_pass_reports_mechanism_counters_and_headers(dns_server: ZoneServer, spf: Check) -> None:
    zone = dns_server.zone
    zone.add_txt("example.com", "v=spf1 a:mail.example.com include:_spf.example.net -all")
    zone.add_a("mail.example.com", "192.0.2.1")
    zone.add_txt("_spf.example.net", "v=spf1 ip4:198.51.100.0/24 ip6:2001:db8::/32 ~all")
    verdict = spf("198.51.100.7", "joe@example.com", receiver="mx.example.org")
    assert verdict.result is SpfResult.PASS
    assert verdict.mechanism == "include:_spf.example.net"
    assert (verdict.lookups, verdict.void_lookups) == (2, 0)
    assert verdict.explanation == ""
    assert authres.received_spf(verdict) == (
        "Received-SPF: pass (mx.example.org: domain of joe@example.com designates "
        "198.51.100.7 as permitted sender) receiver=mx.example.org; client-ip=198.51.100.7; "
        'envelope-from="joe@example.com"; helo=mx.example.org; identity=mailfrom; '
        'mechanism="include:_spf.example.net";'
    )
    assert authres.spf_method(verdict) == (
        "spf=pass (domain of joe@example.com designates 198.51.100.7 as permitted sender) "
        "smtp.mailfrom=joe@example.com"
    )


def test_fail_explanation_default_and_exp(dns_server: ZoneServer, spf: Check) -> None:
    zone = dns_server.zone
    zone.add_txt("plain.example.com", "v=spf1 -all")
    zone.add_txt("exp.example.com", "v=spf1 -all exp=why.%{d}")
    zone.add_txt("why.exp.example.com", "%{i} may not send for %{d} (%{l}), ask %{r} at %{t}")
    plain = spf("192.0.2.9", "a@plain.example.com")
    assert (plain.result, plain.mechanism) == (SpfResult.FAIL, "-all")
    assert plain.explanation == "SPF fail - not authorized"
    custom = spf("192.0.2.9", "a@plain.example.com", default_explanation="See %{d} for %{c}")
    assert custom.explanation == "See plain.example.com for 192.0.2.9"
    told = spf("192.0.2.9", "a@exp.example.com", receiver="mx.test", clock=FixedClock(1e9))
    assert (
        told.explanation
        == "192.0.2.9 may not send for exp.example.com (a), ask mx.test at 1000000000"
    )


def test_ipv4_mapped_client_is_treated_as_ipv4(dns_server: ZoneServer, spf: Check) -> None:
    zone = dns_server.zone
    zone.add_txt("example.com", "v=spf1 ip6:::ffff:192.0.2.0/120 ip4:192.0.2.0/24 -all")
    verdict = spf("::ffff:192.0.2.5", "a@example.com")
    assert (verdict.result, verdict.mechanism) == (SpfResult.PASS, "ip4:192.0.2.0/24")
    assert verdict.client_ip == "192.0.2.5"


def test_ipv6_client_a_and_mx_with_cidr(dns_server: ZoneServer, spf: Check) -> None:
    zone = dns_server.zone
    zone.add_txt("example.com", "v=spf1 a//64 mx/24//48 -all")
    zone.add_aaaa("example.com", "2001:db8:1:2::1")
    zone.add_mx("example.com", 10, "mx1.example.com")
    zone.add_mx("example.com", 0, "")  # a null MX among them: skipped
    zone.add_a("mx1.example.com", "192.0.2.1")
    zone.add_aaaa("mx1.example.com", "2001:db8:9::1")
    assert spf("2001:db8:1:2:ffff::5", "a@example.com").mechanism == "a//64"
    assert spf("2001:db8:9:ff::5", "a@example.com").mechanism == "mx/24//48"
    assert spf("192.0.2.200", "a@example.com").mechanism == "mx/24//48"
    assert spf("2001:db8:8::1", "a@example.com").result is SpfResult.FAIL


def test_null_sender_and_helo_identity(dns_server: ZoneServer, spf: Check) -> None:
    dns_server.zone.add_txt("mx.example.org", "v=spf1 a -all")
    dns_server.zone.add_a("mx.example.org", "192.0.2.25")
    null = spf("192.0.2.25", "", "mx.example.org")
    assert (null.result, null.sender, null.identity) == (
        SpfResult.PASS,
        "postmaster@mx.example.org",
        MAILFROM,
    )
    resolver = resolver_for(dns_server)
    helo = asyncio.run(check_helo("192.0.2.26", "mx.example.org", resolver))
    assert (helo.result, helo.identity, helo.domain) == (SpfResult.FAIL, HELO, "mx.example.org")
    assert authres.spf_method(helo).endswith(" smtp.helo=mx.example.org")
    assert "identity=helo;" in authres.received_spf(helo)
    # §4.3: no multi-label name to ask about: none, and no query sent
    before = len(dns_server.queries)
    for name in ("OEMCOMPUTER", "[192.0.2.25]", "192.0.2.25", "a..example.org"):
        assert asyncio.run(check_helo("192.0.2.25", name, resolver)).result is SpfResult.NONE
    assert len(dns_server.queries) == before


def test_lookup_limit_is_counted_across_includes(dns_server: ZoneServer, spf: Check) -> None:
    zone = dns_server.zone
    zone.add_txt("example.com", "v=spf1 include:a.example.com include:b.example.com -all")
    zone.add_txt("a.example.com", "v=spf1 " + " ".join(["a"] * 4) + " ?all")
    zone.add_txt("b.example.com", "v=spf1 " + " ".join(["a"] * 4) + " ip4:192.0.2.1 ?all")
    zone.add_a("a.example.com", "198.51.100.1")
    zone.add_a("b.example.com", "198.51.100.2")
    verdict = spf("192.0.2.1", "x@example.com")  # the ip4 is reached after 10 DNS terms
    assert (verdict.result, verdict.lookups) == (SpfResult.PASS, 10)
    zone.remove("b.example.com", "TXT")
    zone.add_txt("b.example.com", "v=spf1 " + " ".join(["a"] * 5) + " ip4:192.0.2.1 ?all")
    over = spf("192.0.2.1", "x@example.com")
    assert over.result is SpfResult.PERMERROR
    assert over.reason == "more than 10 DNS lookups (at a)"
    assert "problem=" in authres.received_spf(over)
    # A record checker may lift the limit to say how far past 10 it goes.
    resolver = resolver_for(dns_server)
    counted = asyncio.run(
        check_host("192.0.2.1", "example.com", "x@example.com", resolver, max_dns_terms=100)
    )
    assert (counted.result, counted.lookups) == (SpfResult.PASS, 11)


def test_void_lookups(dns_server: ZoneServer, spf: Check) -> None:
    zone = dns_server.zone
    zone.add_txt("two.example.com", "v=spf1 a:nx1.example.com mx:nx2.example.com ?all")
    zone.add_txt("three.example.com", "v=spf1 a:nx1.example.com exists:nx2.example.com ptr ?all")
    two = spf("192.0.2.1", "x@two.example.com")
    assert (two.result, two.void_lookups) == (SpfResult.NEUTRAL, 2)
    three = spf("192.0.2.1", "x@three.example.com")
    assert three.result is SpfResult.PERMERROR
    assert three.void_lookups == 3


def test_ptr_and_p_macro(dns_server: ZoneServer, spf: Check) -> None:
    zone = dns_server.zone
    zone.add_txt("example.com", "v=spf1 ptr -all exp=msg.example.com")
    zone.add_txt("msg.example.com", "connect from %{p}")
    zone.add_ptr("192.0.2.3", "mx.example.com")
    zone.add_ptr("192.0.2.4", "forged.example.com")  # does not resolve back
    zone.add_a("mx.example.com", "192.0.2.3")
    zone.add_a("forged.example.com", "203.0.113.1")
    assert spf("192.0.2.3", "a@example.com").mechanism == "ptr"
    forged = spf("192.0.2.4", "a@example.com")
    assert (forged.result, forged.explanation) == (SpfResult.FAIL, "connect from unknown")
    zone.add_ptr("192.0.2.4", "mx.example.com")
    zone.add_a("mx.example.com", "192.0.2.4")
    assert spf("192.0.2.4", "a@example.com").result is SpfResult.PASS


def test_dns_errors(dns_server: ZoneServer, spf: Check) -> None:
    zone = dns_server.zone
    zone.add_txt("example.com", "v=spf1 ptr a:broken.example.com -all")
    zone.set_fault("3.2.0.192.in-addr.arpa", Fault.SERVFAIL)
    zone.set_fault("broken.example.com", Fault.SERVFAIL, "A")
    verdict = spf("192.0.2.3", "a@example.com")
    # §5.5: an error on the PTR lookup is a no-match; §5: one on A is temperror
    assert verdict.result is SpfResult.TEMPERROR
    assert verdict.reason.startswith("A lookup of broken.example.com (a:broken.example.com)")
    # §4.6.4's time limit is looked at before each DNS term: none left here.
    late = spf("192.0.2.3", "a@example.com", time_limit=0.0)
    assert (late.result, late.reason) == (SpfResult.TEMPERROR, "no result within 0 s")
    assert late.lookups == 0


def test_check_host_takes_the_domain_apart_from_the_sender(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt("example.net", "v=spf1 -ip4:192.0.2.1 +all")
    resolver = resolver_for(dns_server)
    verdict = asyncio.run(check_host("192.0.2.1", "example.net", "a@example.com", resolver))
    assert (verdict.result, verdict.domain, verdict.sender) == (
        SpfResult.FAIL,
        "example.net",
        "a@example.com",
    )


def test_rendered_spf_parses_in_the_authres_package(dns_server: ZoneServer, spf: Check) -> None:
    """An independent RFC 8601 parser (PyPI authres) reads back what we render."""
    import authres as peer  # type: ignore[import-untyped]

    dns_server.zone.add_txt("example.com", "v=spf1 ~all")
    verdict = spf("192.0.2.1", "joe@example.com")
    line = authres.authentication_results("mx.example.org", [authres.spf_method(verdict)])
    parsed = peer.AuthenticationResultsHeader.parse(line)
    (spf_result,) = parsed.results
    assert (spf_result.method, spf_result.result) == ("spf", "softfail")
    assert spf_result.smtp_mailfrom == "joe@example.com"
