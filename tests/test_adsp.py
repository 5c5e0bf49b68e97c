"""ADSP (RFC 5617): every §5.4 result, over the loopback DNS server serving
the seeds' own records, the record parser, and the dkim-adsp= resinfo."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quailmail.auth import authres
from quailmail.auth.adsp import (
    AdspPractice,
    AdspRecordError,
    AdspResult,
    AdspStatus,
    check_adsp,
    parse_adsp,
)
from quailmail.dns.zone import Fault, Zone
from quailmail.dns.zoneserver import ZoneServer

from dnsfixtures import resolver_for

# The seeds' tinydns data (../shared/seeds/003_*, "DNS TXT Records"), as published.
SEED_TINYDNS = "\n".join(
    [
        r"'sample.com:v=spf1 ip4\07269.36.226.12 include\072emailcenterpro.com ~all:3600",
        r"'_domainkey.sample.com.:o=-;:3600",
        r"'default._domainkey.sample.com.:k=rsa; p=MHwwDQYJKoZIhvcNAQEBBQADawAwaAJhAPBdKl9"
        r"mx3KIjLwGfq83LNzUN4aDWc4t3PVTnc0d+duI9HVD+UG+i1suifV6obDzo4ugHji6EH+zei39Cch9vTX"
        r"cpVWkaFCEmVu0AXjY/98WIjYb5Hh5+SYQFyQkz0Mq0wIDAQAB;:3600",
        r"'dkim1._domainkey.mail.sample.com.:v=DKIM1; k=rsa; p=MEwwDQYJKoZIhvcNAQEBBQADOwA"
        r"wOAIxAK+vhWHoPv+3DhM1u3MaHk7AayBa+CdNnjPHhg3/3Nv7hEIYUbOfKSUqNxDtjJkgcQIDAQAB;"
        r":3600",
        r"'_adsp._domainkey.mail.sample.com:dkim=all:3600",
        r"'_adsp._domainkey.sample.com:dkim=all:3600",
    ]
)

# The same style for the practices the seeds do not publish.
MORE_TINYDNS = r"""
'unknown.example:v=spf1 -all:3600
'_adsp._domainkey.unknown.example:dkim=unknown:3600
+discard.example:192.0.2.25:3600
'_adsp._domainkey.discard.example:dkim=discardable:3600
@nopolicy.example::mx.nopolicy.example:10:3600
'_adsp._domainkey.twice.example:dkim=all:3600
'_adsp._domainkey.twice.example:dkim=discardable:3600
'_adsp._domainkey.junk.example:v=spf1 -all:3600
'_adsp._domainkey.future.example:dkim=sometimes; x=y:3600
"""


@pytest.fixture
def seeds_dns(start_dns_server: Callable[..., ZoneServer]) -> ZoneServer:
    return start_dns_server(Zone.from_tinydns(SEED_TINYDNS + "\n" + MORE_TINYDNS))


def check(server: ZoneServer, domain: str, *dkim: tuple[str, bool]) -> AdspResult:
    return asyncio.run(check_adsp(domain, list(dkim), resolver_for(server)))


def test_none_without_a_record(seeds_dns: ZoneServer) -> None:
    result = check(seeds_dns, "nopolicy.example")
    assert (result.result, result.record) == (AdspStatus.NONE, None)
    assert result.reason == "no ADSP record at _adsp._domainkey.nopolicy.example"


def test_pass_with_an_author_domain_signature(seeds_dns: ZoneServer) -> None:
    result = check(seeds_dns, "Sample.COM", ("emailcenterpro.com", True), ("sample.com.", True))
    assert result.result is AdspStatus.PASS
    assert seeds_dns.count() == 0  # a valid author signature satisfies every practice


def test_unknown(seeds_dns: ZoneServer) -> None:
    result = check(seeds_dns, "unknown.example")
    assert result.result is AdspStatus.UNKNOWN
    assert result.record is not None and result.record.practice is AdspPractice.UNKNOWN


def test_fail_for_the_seeds_dkim_all(seeds_dns: ZoneServer) -> None:
    # A third party's valid signature is not an author domain signature,
    # nor is a failed one by the author domain, nor one by a parent domain.
    result = check(seeds_dns, "sample.com", ("emailcenterpro.com", True), ("sample.com", False))
    assert result.result is AdspStatus.FAIL
    assert result.reason == "no valid author domain signature; dkim=all"
    sub = check(seeds_dns, "mail.sample.com", ("sample.com", True))
    assert sub.result is AdspStatus.FAIL  # the seeds publish one for mail.sample.com too


def test_discard(seeds_dns: ZoneServer) -> None:
    result = check(seeds_dns, "discard.example", ("discard.example", False))
    assert result.result is AdspStatus.DISCARD
    assert result.record is not None and result.record.practice is AdspPractice.DISCARDABLE


def test_nxdomain_when_the_author_domain_does_not_exist(seeds_dns: ZoneServer) -> None:
    result = check(seeds_dns, "nonexistent.sample.com")
    assert result.result is AdspStatus.NXDOMAIN
    assert result.reason == "nonexistent.sample.com does not exist"
    # §4.3: a name that exists only because names below it do is NODATA,
    # not NXDOMAIN; mail.sample.com has no record of its own.
    assert check(seeds_dns, "mail.sample.com").result is AdspStatus.FAIL


def test_temperror_when_the_record_lookup_fails(seeds_dns: ZoneServer) -> None:
    seeds_dns.zone.set_fault("_adsp._domainkey.sample.com", Fault.SERVFAIL)
    result = check(seeds_dns, "sample.com")
    assert result.result is AdspStatus.TEMPERROR
    assert result.reason.startswith("_adsp._domainkey.sample.com: ")


def test_temperror_when_the_domain_check_fails(seeds_dns: ZoneServer) -> None:
    seeds_dns.zone.set_fault("sample.com", Fault.SERVFAIL)
    assert check(seeds_dns, "sample.com").result is AdspStatus.TEMPERROR


def test_permerror_for_several_records(seeds_dns: ZoneServer) -> None:
    # §4.3: "more than one record ... the ADSP result is undefined".
    result = check(seeds_dns, "twice.example")
    assert result.result is AdspStatus.PERMERROR
    assert result.reason == "2 TXT records at _adsp._domainkey.twice.example"


def test_an_invalid_record_is_ignored(seeds_dns: ZoneServer) -> None:
    # §4.1: records not in ADSP syntax "MUST be ignored (considered
    # equivalent to a NODATA result)".
    result = check(seeds_dns, "junk.example")
    assert result.result is AdspStatus.NONE
    assert result.reason.startswith("_adsp._domainkey.junk.example ignored: ")


def test_a_future_practice_reads_as_unknown(seeds_dns: ZoneServer) -> None:
    result = check(seeds_dns, "future.example")
    assert result.result is AdspStatus.UNKNOWN
    assert result.record is not None and result.record.value == "sometimes"


def test_no_author_domain(seeds_dns: ZoneServer) -> None:
    assert check(seeds_dns, "").result is AdspStatus.PERMERROR
    assert seeds_dns.count() == 0


# --- the record ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "practice", "value"),
    [
        ("dkim=all", AdspPractice.ALL, "all"),
        ("dkim = discardable ;", AdspPractice.DISCARDABLE, "discardable"),
        ("dkim=Unknown; t=s", AdspPractice.UNKNOWN, "unknown"),
        ("dkim=x-strict", AdspPractice.UNKNOWN, "x-strict"),
    ],
)
def test_parse_adsp(text: str, practice: AdspPractice, value: str) -> None:
    record = parse_adsp(text)
    assert (record.practice, record.value) == (practice, value)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " dkim=all",  # §4.2.1: the record starts with "dkim"
        "DKIM=all",
        "t=y; dkim=all",
        "dkimx=all",
        "dkim",
        "dkim=",
        "dkim=all; dkim=unknown",
        "dkim=all-",
        "dkim=a b",
    ],
)
def test_parse_adsp_refuses(text: str) -> None:
    with pytest.raises(AdspRecordError):
        parse_adsp(text)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(max_size=100),
        st.lists(
            st.sampled_from(["dkim", "=", "all", ";", " ", "x", "-", "\t", "é", "\x00", "dkim="]),
            max_size=12,
        ).map("".join),
    )
)
def test_parse_adsp_returns_or_raises_its_own_error(text: str) -> None:
    try:
        record = parse_adsp(text)
    except AdspRecordError:
        return
    assert text.startswith("dkim")
    assert isinstance(record.practice, AdspPractice)


# --- Authentication-Results ---------------------------------------------------


def test_authres(seeds_dns: ZoneServer) -> None:
    result = check(seeds_dns, "sample.com")
    assert authres.adsp(result) == (
        "dkim-adsp=fail (no valid author domain signature; dkim=all) header.from=sample.com"
    )
    assert authres.adsp(result, "joe@sample.com").endswith(" header.from=joe@sample.com")
    assert authres.adsp(AdspResult(AdspStatus.PASS, "sample.com")) == (
        "dkim-adsp=pass header.from=sample.com"
    )


def test_authres_reads_back_in_the_authres_package(seeds_dns: ZoneServer) -> None:
    import authres as peer  # type: ignore[import-untyped]

    line = authres.authentication_results(
        "mx.example.org", [authres.adsp(check(seeds_dns, "discard.example"), "a@discard.example")]
    )
    (got,) = peer.AuthenticationResultsHeader.parse(line).results
    assert (got.method, got.result) == ("dkim-adsp", "discard")
    assert [(p.type, p.name, p.value) for p in got.properties] == [
        ("header", "from", "a@discard.example")
    ]
