"""qmail-spf's local policy (control/spfrules, control/spfguess) in check_mailfrom,
over the loopback DNS server."""

from __future__ import annotations

import asyncio

import pytest

from quailmail.auth.spf import LocalPolicy, SpfResult, SpfSyntaxError, SpfVerdict, check_mailfrom
from quailmail.auth.spf.evaluate import rules_position
from quailmail.auth.spf.record import parse_record
from quailmail.dns.zone import Fault
from quailmail.dns.zoneserver import ZoneServer

from dnsfixtures import resolver_for

FORWARDER = "192.0.2.99"  # a trusted forwarder, allowed by the local rules only


def check(server: ZoneServer, sender: str, local: LocalPolicy | None, ip: str = FORWARDER,
          **options: object) -> SpfVerdict:  # fmt: skip
    resolver = resolver_for(server, timeout=1.0)
    return asyncio.run(
        check_mailfrom(ip, sender, "client.example", resolver, local=local, **options)  # type: ignore[arg-type]
    )


@pytest.fixture
def zone(dns_server: ZoneServer) -> ZoneServer:
    z = dns_server.zone
    z.add_txt("forwarders.test", f"v=spf1 ip4:{FORWARDER} -all")
    z.add_txt("strict.test", "v=spf1 ip4:192.0.2.1 -all")
    z.add_txt("soft.test", "v=spf1 ip4:192.0.2.1 -exists:nowhere.test ~all")
    z.add_txt("nomail.test", "v=spf1 -all")
    z.add_txt("open.test", "v=spf1 ip4:192.0.2.1 +all")
    z.add_txt("redirected.test", "v=spf1 redirect=strict.test")
    z.add_txt("includer.test", "v=spf1 include:strict.test ?all")
    z.add_a("nospf.test", FORWARDER)
    return dns_server


def test_rules_position_follows_qmail_spf() -> None:
    def at(text: str) -> int:
        return rules_position(parse_record(text).mechanisms)

    assert at("v=spf1 mx -all") == 1
    assert at("v=spf1 mx -a:x.test -all") == 1  # before the whole run of '-'
    assert at("v=spf1 mx ~a:x.test -all") == 2
    assert at("v=spf1 -all") == -1  # "sends no mail" stays so
    assert at("v=spf1 -a:x.test -all") == -1
    assert at("v=spf1 mx +all") == -1
    assert at("v=spf1 mx") == -1


def test_rules_allow_a_forwarder_before_the_final_fail(zone: ZoneServer) -> None:
    rules = LocalPolicy.parse("include:forwarders.test")
    plain = check(zone, "a@strict.test", None)
    assert plain.result is SpfResult.FAIL
    local = check(zone, "a@strict.test", rules)
    assert local.result is SpfResult.PASS
    assert local.mechanism == "include:forwarders.test"
    assert local.reason == "matched include:forwarders.test (spfrules)"
    # the domain's own mechanisms still come first
    assert check(zone, "a@strict.test", rules, ip="192.0.2.1").mechanism == "ip4:192.0.2.1"
    # before the run of "~" too; the domain's softfail stands for others
    assert check(zone, "a@soft.test", rules).result is SpfResult.PASS
    assert check(zone, "a@soft.test", rules, ip="192.0.2.7").result is SpfResult.SOFTFAIL


def test_rules_never_enter_includes_nor_a_bare_fail_all(zone: ZoneServer) -> None:
    rules = LocalPolicy.parse("v=spf1 include:forwarders.test")
    assert check(zone, "a@nomail.test", rules).result is SpfResult.FAIL
    assert check(zone, "a@open.test", rules, ip="192.0.2.7").mechanism == "+all"
    # includer.test includes strict.test: the forwarder is not let in there,
    # and the includer ends with ?all (rules go before it, and match)
    verdict = check(zone, "a@includer.test", rules)
    assert (verdict.result, verdict.mechanism) == (SpfResult.PASS, "include:forwarders.test")
    # a redirect= target is the sender's record: the rules go in there
    assert check(zone, "a@redirected.test", rules).result is SpfResult.PASS


def test_fail_from_a_local_rule_gets_the_default_explanation(zone: ZoneServer) -> None:
    zone.zone.add_txt("explained.test", "v=spf1 ip4:192.0.2.1 exp=exp.explained.test ~all")
    zone.zone.add_txt("exp.explained.test", "the domain's own words")
    rules = LocalPolicy.parse(f"-ip4:{FORWARDER}")
    verdict = check(zone, "a@explained.test", rules, default_explanation="local policy says no")
    assert verdict.result is SpfResult.FAIL
    assert verdict.explanation == "local policy says no"


def test_guess_for_domains_without_a_record(zone: ZoneServer) -> None:
    local = LocalPolicy.parse("", "a/24 ?all")
    assert check(zone, "a@nospf.test", None).result is SpfResult.NONE
    guessed = check(zone, "a@nospf.test", local)
    assert (guessed.result, guessed.reason) == (SpfResult.PASS, "matched a/24 (spfguess)")
    assert check(zone, "a@nospf.test", local, ip="198.51.100.1").result is SpfResult.NEUTRAL
    # a domain with a record is not guessed for
    assert check(zone, "a@strict.test", local).result is SpfResult.FAIL
    # the rules follow the guess
    both = LocalPolicy.parse("ip4:198.51.100.0/24", "a")
    assert check(zone, "a@nospf.test", both, ip="198.51.100.1").reason.endswith("(spfrules)")
    # nothing matching leaves none
    assert check(zone, "a@nospf.test", both, ip="203.0.113.1").result is SpfResult.NONE


def test_dns_error_inside_the_guess_is_none(zone: ZoneServer) -> None:
    zone.zone.set_fault("broken.test", Fault.SERVFAIL, "A")
    local = LocalPolicy.parse("", "a:broken.test -all")
    verdict = check(zone, "a@nospf.test", local)
    assert verdict.result is SpfResult.NONE


def test_bad_local_text_is_refused_with_the_file_name() -> None:
    with pytest.raises(SpfSyntaxError, match="spfrules"):
        LocalPolicy.parse("include:")
    with pytest.raises(SpfSyntaxError, match="spfguess: modifiers"):
        LocalPolicy.parse("", "redirect=x.test")
    assert not LocalPolicy.parse("  ", "")
