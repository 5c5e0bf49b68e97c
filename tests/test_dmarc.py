"""DMARC (RFC 7489): discovery over the loopback DNS server, policy and pct,
alignment, the From domain, Authentication-Results, and fuzzing the parser."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quailmail.auth import authres
from quailmail.auth.dkim import DkimResult, DkimSignatureResult, DkimStatus
from quailmail.auth.dmarc import (
    Alignment,
    DkimInput,
    DmarcRecordError,
    DmarcResult,
    Policy,
    RecordProblem,
    SpfInput,
    aligned,
    author_domain,
    decide,
    dkim_identifiers,
    evaluate,
    from_value_domain,
    is_dmarc_record,
    organizational_domain,
    orgdomain,
    parse_record,
)
from quailmail.auth.message import parse_message
from quailmail.auth.results import Result
from quailmail.dns.zone import Fault
from quailmail.dns.zoneserver import ZoneServer

from dnsfixtures import resolver_for

NO_DKIM: list[DkimInput] = []


class FixedRandom:
    """A Sampler that always draws the same number, and counts the draws."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.draws = 0

    def random(self) -> float:
        self.draws += 1
        return self.value


def run(
    server: ZoneServer,
    from_domain: str,
    *,
    spf: SpfInput | None = None,
    dkim: Iterable[DkimInput] = (),
    rng: FixedRandom | None = None,
    **options: float,
) -> DmarcResult:
    return asyncio.run(
        evaluate(
            from_domain,
            spf=spf,
            dkim=list(dkim),
            resolver=resolver_for(server, **options),
            rng=rng,
        )
    )


# --- discovery (§6.6.3) ------------------------------------------------------


def test_record_at_the_author_domain(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt("_dmarc.example.com", "v=DMARC1; p=reject; rua=mailto:d@example.com")
    result = run(dns_server, "Example.COM.", spf=("fail", "example.com"))
    assert result.result is Result.FAIL
    assert (result.from_domain, result.record_domain) == ("example.com", "example.com")
    assert (result.policy, result.disposition) == (Policy.REJECT, Policy.REJECT)
    assert result.record is not None and result.record.rua[0].mailbox == "d@example.com"
    assert result.reason == "SPF fail; no DKIM signature"
    assert dns_server.count("_dmarc.example.com") == 1


def test_org_domain_fallback_applies_sp(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt("_dmarc.example.com", "v=DMARC1; p=reject; sp=quarantine")
    result = run(dns_server, "mail.example.com", dkim=[("other.example", True)])
    assert result.result is Result.FAIL
    assert result.record_domain == "example.com"
    assert (result.policy, result.disposition) == (Policy.QUARANTINE, Policy.QUARANTINE)
    assert result.reason == "no SPF result; DKIM d=other.example not aligned (adkim=r)"
    assert dns_server.count("_dmarc.mail.example.com") == 1
    assert dns_server.count("_dmarc.example.com") == 1


def test_org_domain_fallback_without_sp_applies_p(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt("_dmarc.example.co.uk", "v=DMARC1; p=reject")
    result = run(dns_server, "a.b.example.co.uk")
    assert result.record_domain == "example.co.uk"
    assert (result.policy, result.disposition) == (Policy.REJECT, Policy.REJECT)


def test_the_subdomains_own_record_wins_and_its_p_applies(dns_server: ZoneServer) -> None:
    # sp= applies to subdomains of the domain queried, not to the domain itself.
    dns_server.zone.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    dns_server.zone.add_txt("_dmarc.news.example.com", "v=DMARC1; p=none; sp=reject")
    result = run(dns_server, "news.example.com")
    assert result.record_domain == "news.example.com"
    assert (result.policy, result.disposition) == (Policy.NONE, Policy.NONE)
    assert dns_server.count("_dmarc.example.com") == 0


def test_no_record_is_none(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt("example.com", "v=spf1 -all")
    result = run(dns_server, "mail.example.com", spf=("fail", "mail.example.com"))
    assert result.result is Result.NONE
    assert result.reason == "no DMARC record at _dmarc.mail.example.com or _dmarc.example.com"
    assert (result.record, result.policy, result.disposition) == (None, None, Policy.NONE)


def test_other_txt_records_at_dmarc_are_discarded(dns_server: ZoneServer) -> None:
    # §6.6.3 step 4: not v=DMARC1 -> not counted, so the org domain is asked.
    dns_server.zone.add_txt("_dmarc.mail.example.com", "v=spf1 -all")
    dns_server.zone.add_txt("_dmarc.mail.example.com", "V=DMARC1; p=reject")  # v is case-free
    dns_server.zone.add_txt("_dmarc.mail.example.com", "v=dmarc1; p=reject")  # DMARC1 is not
    dns_server.zone.add_txt("_dmarc.example.com", "v=DMARC1; p=quarantine")
    result = run(dns_server, "mail.example.com")
    assert result.record_domain == "mail.example.com"
    assert result.policy is Policy.REJECT


def test_servfail_is_temperror(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    dns_server.zone.set_fault("_dmarc.example.com", Fault.SERVFAIL)
    result = run(dns_server, "example.com")
    assert result.result is Result.TEMPERROR
    assert result.record_domain == "example.com"
    assert result.reason.startswith("_dmarc.example.com: ")
    assert result.disposition is Policy.NONE


def test_servfail_at_the_org_domain_is_temperror(dns_server: ZoneServer) -> None:
    dns_server.zone.set_fault("_dmarc.example.com", Fault.SERVFAIL)
    result = run(dns_server, "mail.example.com")
    assert (result.result, result.record_domain) == (Result.TEMPERROR, "example.com")


def test_silence_is_temperror(dns_server: ZoneServer) -> None:
    dns_server.zone.set_fault("_dmarc.example.com", Fault.TIMEOUT)
    result = run(dns_server, "example.com", timeout=0.3)
    assert result.result is Result.TEMPERROR


def test_two_records_mean_no_policy_and_no_fallback(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt("_dmarc.mail.example.com", "v=DMARC1; p=reject")
    dns_server.zone.add_txt("_dmarc.mail.example.com", "v=DMARC1; p=none")
    dns_server.zone.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    result = run(dns_server, "mail.example.com")
    assert result.result is Result.NONE
    assert result.reason == "2 DMARC records at _dmarc.mail.example.com, none applies"
    assert dns_server.count("_dmarc.example.com") == 0


def test_unusable_record_is_permerror(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt("_dmarc.example.com", "v=DMARC1; p=bogus")
    result = run(dns_server, "example.com")
    assert result.result is Result.PERMERROR
    assert "p='bogus'" in result.reason
    assert result.disposition is Policy.NONE


def test_invalid_p_with_valid_rua_reads_as_none(dns_server: ZoneServer) -> None:
    # §6.6.3 step 6: act as if p=none, and keep the reporting address.
    dns_server.zone.add_txt("_dmarc.example.com", "v=DMARC1; p=bogus; rua=mailto:d@example.com")
    result = run(dns_server, "example.com")
    assert (result.result, result.policy, result.disposition) == (
        Result.FAIL,
        Policy.NONE,
        Policy.NONE,
    )
    assert result.record is not None and "read as p=none" in result.record.warnings[0]


def test_from_domain_that_is_no_domain_is_permerror(dns_server: ZoneServer) -> None:
    result = run(dns_server, "exa mple.com")
    assert result.result is Result.PERMERROR
    assert dns_server.count() == 0


def test_a_public_suffix_from_domain_is_asked_once(dns_server: ZoneServer) -> None:
    result = run(dns_server, "co.uk")
    assert result.reason == "no DMARC record at _dmarc.co.uk"
    assert dns_server.count() == 1


# --- alignment and the verdict (§3.1, §6.6.2) -------------------------------


def test_spf_relaxed_alignment_passes(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    result = run(dns_server, "example.com", spf=("pass", "bounces.example.com"))
    assert (result.result, result.spf_aligned, result.dkim_aligned) == (Result.PASS, True, False)
    assert result.reason == "SPF bounces.example.com aligned"
    assert result.disposition is Policy.NONE


def test_spf_strict_alignment_needs_the_same_domain(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt("_dmarc.example.com", "v=DMARC1; p=quarantine; aspf=s")
    result = run(dns_server, "example.com", spf=("PASS", "bounces.example.com"))
    assert (result.result, result.disposition) == (Result.FAIL, Policy.QUARANTINE)
    assert result.reason == ("SPF bounces.example.com not aligned (aspf=s); no DKIM signature")


def test_dkim_alignment_takes_any_passing_aligned_signature(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt("_dmarc.example.com", "v=DMARC1; p=reject; adkim=s")
    dkim = [("esp.example.net", True), ("mail.example.com", True), ("example.com", True)]
    result = run(dns_server, "example.com", spf=("softfail", "example.com"), dkim=dkim)
    assert (result.result, result.dkim_domain) == (Result.PASS, "example.com")
    assert result.reason == "DKIM d=example.com aligned"


def test_a_failed_aligned_signature_does_not_count(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    result = run(dns_server, "example.com", dkim=[("example.com", False)])
    assert result.result is Result.FAIL
    assert result.reason == "no SPF result; no DKIM signature passed"


def test_decide_is_pure() -> None:
    record = parse_record("v=DMARC1; p=reject; sp=none")
    sub = decide("a.example.com", record, "example.com", spf=None, dkim=NO_DKIM)
    top = decide("example.com", record, "example.com", spf=None, dkim=NO_DKIM)
    assert (sub.policy, top.policy) == (Policy.NONE, Policy.REJECT)
    passed = decide("example.com", record, "example.com", spf=("pass", None), dkim=NO_DKIM)
    assert passed.result is Result.FAIL  # an SPF pass without a domain aligns with nothing
    assert passed.reason.startswith("SPF pass without a domain")


def test_dkim_identifiers_from_a_verification() -> None:
    result = DkimResult(
        DkimStatus.OK,
        Result.PASS,
        "ok",
        (
            DkimSignatureResult(DkimStatus.OK, Result.PASS, "ok", domain="example.com"),
            DkimSignatureResult(DkimStatus.SIG_BAD, Result.FAIL, "bad", domain="example.net"),
            DkimSignatureResult(DkimStatus.SIG_BAD, Result.PERMERROR, "no d="),
        ),
    )
    assert dkim_identifiers(result) == [("example.com", True), ("example.net", False)]


@pytest.mark.parametrize(
    ("a", "b", "mode", "expected"),
    [
        ("mail.example.com", "example.com", "r", True),
        ("mail.example.com", "example.com", Alignment.STRICT, False),
        ("EXAMPLE.com.", "example.COM", "s", True),
        ("a.github.io", "b.github.io", "r", False),  # PSL private section
        ("example.co.uk", "other.co.uk", "r", False),
        ("co.uk", "example.co.uk", "r", False),
        ("", "example.com", "r", False),
    ],
)
def test_aligned(a: str, b: str, mode: str, expected: bool) -> None:
    assert aligned(a, b, mode) is expected


@pytest.mark.parametrize(
    ("domain", "org"),
    [
        ("mail.example.co.uk", "example.co.uk"),
        ("a.b.c.bcx.com", "bcx.com"),
        ("Example.COM.", "example.com"),
        ("co.uk", "co.uk"),
        ("com", "com"),
        ("x.y.github.io", "y.github.io"),
        ("a.b.unknown-tld", "b.unknown-tld"),
        ("mac...com", "mac...com"),
    ],
)
def test_organizational_domain(domain: str, org: str) -> None:
    assert organizational_domain(domain) == org


def test_the_public_suffix_list_is_built_once() -> None:
    assert orgdomain._psl() is orgdomain._psl()


# --- pct (§6.6.4) -----------------------------------------------------------

HALF = parse_record("v=DMARC1; p=reject; pct=50")


def test_pct_in_the_sample_applies_the_policy() -> None:
    rng = FixedRandom(0.49)
    result = decide("example.com", HALF, "example.com", spf=None, dkim=NO_DKIM, rng=rng)
    assert (result.disposition, result.sampled_out, rng.draws) == (Policy.REJECT, False, 1)


def test_pct_out_of_the_sample_steps_down_one() -> None:
    out = decide("example.com", HALF, "example.com", spf=None, dkim=NO_DKIM, rng=FixedRandom(0.5))
    assert (out.result, out.policy, out.disposition, out.sampled_out) == (
        Result.FAIL,
        Policy.REJECT,
        Policy.QUARANTINE,
        True,
    )
    assert out.reason.endswith("; not in the pct=50 sample")
    quarantine = parse_record("v=DMARC1; p=quarantine; pct=10")
    out = decide(
        "example.com", quarantine, "example.com", spf=None, dkim=NO_DKIM, rng=FixedRandom(0.2)
    )
    assert (out.disposition, out.sampled_out) == (Policy.NONE, True)


def test_pct_0_and_100_draw_nothing() -> None:
    rng = FixedRandom(0.0)
    never = parse_record("v=DMARC1; p=reject; pct=0")
    always = parse_record("v=DMARC1; p=reject")
    assert decide("e.com", never, "e.com", spf=None, dkim=NO_DKIM, rng=rng).disposition is (
        Policy.QUARANTINE
    )
    assert decide("e.com", always, "e.com", spf=None, dkim=NO_DKIM, rng=rng).disposition is (
        Policy.REJECT
    )
    passed = decide("e.com", HALF, "e.com", spf=("pass", "e.com"), dkim=NO_DKIM, rng=rng)
    assert passed.disposition is Policy.NONE
    assert rng.draws == 0


def test_pct_samples_about_that_share_with_a_seeded_rng() -> None:
    rng = random.Random(7489)
    record = parse_record("v=DMARC1; p=quarantine; pct=20")
    applied = sum(
        decide("e.com", record, "e.com", spf=None, dkim=NO_DKIM, rng=rng).disposition
        is Policy.QUARANTINE
        for _ in range(2000)
    )
    assert 340 < applied < 460


def test_pct_over_dns_with_an_injected_rng(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt("_dmarc.example.com", "v=DMARC1; p=reject; pct=25")
    kept = run(dns_server, "example.com", rng=FixedRandom(0.1))
    left = run(dns_server, "example.com", rng=FixedRandom(0.9))
    assert (kept.disposition, left.disposition) == (Policy.REJECT, Policy.QUARANTINE)


# --- record details ---------------------------------------------------------


def test_every_tag() -> None:
    record = parse_record(
        "v=DMARC1;p=Quarantine ; sp=REJECT; pct=30; adkim=S; aspf=s;"
        " rua=mailto:a@example.com!10m , mailto:b@example.net!512;"
        " ruf=mailto:f@example.com!1K; fo=1:D:s; rf=afrf; ri=3600;"
    )
    assert (record.p, record.sp, record.subdomain_policy) == (
        Policy.QUARANTINE,
        Policy.REJECT,
        Policy.REJECT,
    )
    assert (record.pct, record.adkim, record.aspf) == (30, Alignment.STRICT, Alignment.STRICT)
    assert [(u.mailbox, u.max_size) for u in record.rua] == [
        ("a@example.com", 10 * 2**20),
        ("b@example.net", 512),
    ]
    assert [(u.mailbox, u.max_size) for u in record.ruf] == [("f@example.com", 1024)]
    assert (record.fo, record.rf, record.ri) == (("1", "d", "s"), ("afrf",), 3600)
    assert record.warnings == ()


def test_defaults() -> None:
    record = parse_record("v=DMARC1; p=none")
    assert (record.sp, record.subdomain_policy, record.pct) == (None, Policy.NONE, 100)
    assert (record.adkim, record.aspf, record.fo, record.rf, record.ri) == (
        Alignment.RELAXED,
        Alignment.RELAXED,
        ("0",),
        ("afrf",),
        86400,
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", RecordProblem.EMPTY),
        (" \t", RecordProblem.EMPTY),
        ("p=reject; v=DMARC1", RecordProblem.BAD_VERSION),  # v= must come first
        (" v=DMARC1; p=reject", RecordProblem.BAD_VERSION),
        ("v=DMARC1p=reject", RecordProblem.BAD_VERSION),
        ("v=DMARC2; p=reject", RecordProblem.BAD_VERSION),
        ("v=DMARC1; p=reject; P=none", RecordProblem.SYNTAX),
        ("v=DMARC1; p=reject; v=DMARC1", RecordProblem.SYNTAX),
        ("v=DMARC1; p=reject; x=1; x=2", RecordProblem.SYNTAX),
        ("v=DMARC1; rua=nota uri", RecordProblem.NO_POLICY),
        ("v=DMARC1; p=reject; sp=maybe", RecordProblem.BAD_VALUE),
    ],
)
def test_unusable_records(text: str, problem: RecordProblem) -> None:
    with pytest.raises(DmarcRecordError) as caught:
        parse_record(text)
    assert caught.value.problem is problem
    assert str(caught.value)


def test_bad_optional_values_fall_back_to_defaults_with_a_warning() -> None:
    record = parse_record(
        "v=DMARC1; p=reject; fo=2; rf=afrf:iodef; ri=99999999999; rua=mailto:a@b.example, x y;"
        " junk; 9tag=1"
    )
    assert record.p is Policy.REJECT
    assert (record.fo, record.rf, record.ri) == (("0",), ("afrf",), 86400)
    assert [u.uri for u in record.rua] == ["mailto:a@b.example"]
    assert len(record.warnings) == 6, record.warnings


def test_sp_invalid_with_rua_reads_as_p_none() -> None:
    record = parse_record("v=DMARC1; p=reject; sp=bad; rua=mailto:d@example.com")
    assert (record.p, record.sp) == (Policy.NONE, None)


# --- the RFC5322.From domain (§6.6.1) ---------------------------------------


def message(*fields: str) -> bytes:
    return ("\r\n".join([*fields, "Subject: hi"]) + "\r\n\r\nbody\r\n").encode()


@pytest.mark.parametrize(
    ("fields", "domain", "reason"),
    [
        (["From: a@Example.COM"], "example.com", ""),
        (['From: "Doe, John" <john@example.com>'], "example.com", ""),
        (["From: john@example.com (John, at work@elsewhere.example)"], "example.com", ""),
        (["From: John\r\n <john@example.com.>"], "example.com", ""),
        (["From: a@example.com, b@example.com"], "example.com", ""),
        (["To: x@example.net"], None, "no From header field"),
        (["From: a@example.com", "From: b@example.com"], None, "2 From header fields"),
        (["From: a@example.com, b@example.net"], None, "From names 2 domains"),
        (["From:"], None, "From has no address"),
        (["From: Undisclosed <>"], None, "From address without a domain"),
        (["From: john"], None, "From address without a domain"),
        (["From: a@[192.0.2.1]"], None, "From domain is an address literal"),
        (["From: a@exa_mple..com"], None, "From domain is not a domain name"),
    ],
)
def test_author_domain(fields: list[str], domain: str | None, reason: str) -> None:
    got = author_domain(parse_message(message(*fields)))
    assert got.domain == domain
    assert got.reason.startswith(reason)
    assert bool(got.reason) is (domain is None)


def test_from_value_domain_keeps_utf8_labels() -> None:
    assert from_value_domain("Ü <u@bücher.example>").domain == "bücher.example"


# --- Authentication-Results -------------------------------------------------


def test_authres_fail_shows_policy_and_disposition(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    result = run(dns_server, "example.com")
    assert authres.dmarc(result) == "dmarc=fail (p=reject dis=reject) header.from=example.com"


def test_authres_forms() -> None:
    record = parse_record("v=DMARC1; p=reject; sp=quarantine; pct=50")
    sub = decide(
        "a.example.com", record, "example.com", spf=None, dkim=NO_DKIM, rng=FixedRandom(0.9)
    )
    assert authres.dmarc(sub) == (
        "dmarc=fail (p=reject sp=quarantine dis=none) header.from=a.example.com"
    )
    passed = decide("example.com", record, "example.com", spf=None, dkim=[("example.com", True)])
    assert authres.dmarc(passed) == (
        "dmarc=pass (p=reject sp=quarantine dis=none) header.from=example.com"
    )
    none = DmarcResult(Result.NONE, "example.com", "no DMARC record at _dmarc.example.com")
    assert authres.dmarc(none) == (
        "dmarc=none (no DMARC record at _dmarc.example.com) header.from=example.com"
    )
    temp = DmarcResult(Result.TEMPERROR, "example.com", "_dmarc.example.com: SERVFAIL (x)")
    assert authres.dmarc(temp) == (
        "dmarc=temperror (_dmarc.example.com: SERVFAIL  x) header.from=example.com"
    )


def test_authres_reads_back_in_the_authres_package() -> None:
    import authres as peer  # type: ignore[import-untyped]

    record = parse_record("v=DMARC1; p=quarantine")
    result = decide("example.com", record, "example.com", spf=("fail", "x.example"), dkim=NO_DKIM)
    line = authres.authentication_results("mx.example.org", [authres.dmarc(result)])
    parsed = peer.AuthenticationResultsHeader.parse(line)
    (got,) = parsed.results
    assert (got.method, got.result) == ("dmarc", "fail")
    assert [(p.type, p.name, p.value) for p in got.properties] == [
        ("header", "from", "example.com")
    ]


# --- fuzzing ----------------------------------------------------------------

_fragments = st.sampled_from(
    [
        "v=DMARC1",
        "p=reject",
        "p=none",
        "sp=quarantine",
        "pct=",
        "pct=101",
        "adkim=s",
        "aspf=x",
        "rua=mailto:a@b",
        "ruf=mailto:%zz@b!99999999999999999999999999g",
        "fo=1:d",
        "rf=afrf",
        "ri=4294967296",
        "=",
        ";",
        " ",
        "\t",
        "!",
        ",",
        "\x00",
        "é",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=200), st.lists(_fragments, max_size=20).map("; ".join)))
def test_parse_record_returns_or_raises_its_own_error(text: str) -> None:
    try:
        record = parse_record(text)
    except DmarcRecordError as error:
        assert isinstance(error.problem, RecordProblem)
        return
    assert is_dmarc_record(text)
    assert 0 <= record.pct <= 100
    assert 0 <= record.ri < 2**32
    assert record.fo and record.rf
