"""DnsResolver against a real DNS server on loopback (quailmail.dns.zoneserver)."""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from quailmail.core.dns import DnsResult, DnsStatus, MxRecord
from quailmail.dns.resolver import (
    DnsResolver,
    DnsServer,
    make_resolver,
    parse_server,
    servers_from_control,
)
from quailmail.dns.zoneserver import Fault, Zone, ZoneServer

from dnsfixtures import FakeMonotonic, has_ipv6_loopback, resolver_for

T = TypeVar("T")

KEY = "sel._domainkey.example.com"
# A 4096-bit RSA key record is about 750 octets: more than a 512-octet UDP answer.
BIG_KEY = b"v=DKIM1; k=rsa; p=" + base64.b64encode(bytes(i % 251 for i in range(550)))


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def dead_port() -> int:
    """A loopback UDP port nobody listens on.

    The kernel answers ICMP port unreachable, but dnspython's asyncio UDP
    sockets are not connected, so the resolver only sees silence."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- answers -------------------------------------------------------------------


def test_txt_strings_are_joined_one_value_per_record(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt(KEY, [b"v=DKIM1; k=rsa; ", b"p=MIGf", b"MA0G"])
    dns_server.zone.add_txt(KEY, "second record")
    result = run(resolver_for(dns_server).txt(KEY))
    assert result.status is DnsStatus.ANSWER
    assert sorted(result.records) == [b"second record", b"v=DKIM1; k=rsa; p=MIGfMA0G"]
    assert result.ttl == 300
    assert "answer from 127.0.0.1" in result.reason


def test_a_aaaa_mx_ptr(dns_server: ZoneServer) -> None:
    zone = dns_server.zone
    zone.add_a("mail.example.com", "192.0.2.25")
    zone.add_aaaa("mail.example.com", "2001:db8::25")
    zone.add_mx("example.com", 20, "backup.example.com")
    zone.add_mx("example.com", 10, "mail.example.com")
    zone.add_mx("null.example.com", 0, "")  # RFC 7505 null MX
    zone.add_ptr("192.0.2.25", "mail.example.com")
    zone.add_ptr("2001:db8::25", "mail6.example.com")
    resolver = resolver_for(dns_server)

    async def lookups() -> list[DnsResult[Any]]:
        return [
            await resolver.a("mail.example.com"),
            await resolver.aaaa("mail.example.com"),
            await resolver.mx("example.com"),
            await resolver.mx("null.example.com"),
            await resolver.ptr("192.0.2.25"),
            await resolver.ptr("2001:db8::25"),
        ]

    a, aaaa, mx, null_mx, ptr4, ptr6 = run(lookups())
    assert a.records == ("192.0.2.25",)
    assert aaaa.records == ("2001:db8::25",)
    assert mx.records == (MxRecord(10, "mail.example.com"), MxRecord(20, "backup.example.com"))
    assert null_mx.records == (MxRecord(0, ""),)
    assert ptr4.records == ("mail.example.com",)
    assert ptr6.records == ("mail6.example.com",)


def test_cname_is_followed_and_names_are_case_insensitive(dns_server: ZoneServer) -> None:
    dns_server.zone.add_cname("alias.example.com", "real.example.net")
    dns_server.zone.add_txt("real.example.net", "target", ttl=100)
    dns_server.zone.add_cname("alias.example.com", "real.example.net", ttl=50)
    result = run(resolver_for(dns_server).txt("ALIAS.Example.COM"))
    assert result.records == (b"target",)
    assert result.ttl == 50  # RFC 1034 §3.6.2: the chain lives as long as its shortest link


# -- the states that are not an answer -------------------------------------------


def test_nxdomain_nodata_and_empty_non_terminal(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt(KEY, "v=DKIM1; p=")
    resolver = resolver_for(dns_server)

    async def lookups() -> list[DnsResult[Any]]:
        return [
            await resolver.txt("nope._domainkey.example.com"),
            await resolver.a(KEY),
            await resolver.txt("_domainkey.example.com"),  # only names below it
        ]

    nxdomain, nodata, empty_non_terminal = run(lookups())
    assert nxdomain.status is DnsStatus.NXDOMAIN
    assert nxdomain.missing and "NXDOMAIN" in nxdomain.reason
    assert nodata.status is DnsStatus.NODATA
    assert "no A records" in nodata.reason
    assert empty_non_terminal.status is DnsStatus.NODATA  # RFC 8020: not NXDOMAIN


@pytest.mark.parametrize(
    ("fault", "word"), [(Fault.SERVFAIL, "SERVFAIL"), (Fault.REFUSED, "REFUSED")]
)
def test_server_failure_is_tempfail(dns_server: ZoneServer, fault: Fault, word: str) -> None:
    dns_server.zone.set_fault(KEY, fault)
    result = run(resolver_for(dns_server).txt(KEY))
    assert result.status is DnsStatus.TEMPFAIL
    assert not result.missing
    assert word in result.reason and str(dns_server.port) in result.reason


def test_dropped_query_times_out_as_tempfail(dns_server: ZoneServer) -> None:
    dns_server.zone.set_fault(KEY, Fault.TIMEOUT)
    started = time.monotonic()
    result = run(resolver_for(dns_server, timeout=0.3).txt(KEY))
    assert time.monotonic() - started < 2.0  # generous for a loaded CI machine
    assert result.status is DnsStatus.TEMPFAIL
    assert result.reason == "timed out after 0.3 s"
    assert dns_server.count(KEY) >= 1


def test_nothing_listening_is_tempfail() -> None:
    result = run(DnsResolver([("127.0.0.1", dead_port())], timeout=0.3).a("example.com"))
    assert result.status is DnsStatus.TEMPFAIL
    assert result.reason == "timed out after 0.3 s"


# -- truncation and TCP -----------------------------------------------------------


@pytest.mark.parametrize("edns_payload", [None, 512])
def test_truncated_udp_answer_is_asked_again_over_tcp(
    dns_server: ZoneServer, edns_payload: int | None
) -> None:
    dns_server.zone.add_txt(KEY, BIG_KEY)  # cut into 255-octet strings on the wire
    result = run(resolver_for(dns_server, edns_payload=edns_payload).txt(KEY))
    assert result.records == (BIG_KEY,)
    assert [q.transport for q in dns_server.queries] == ["udp", "tcp"]


def test_edns_payload_avoids_tcp_for_a_4096_bit_key(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt(KEY, BIG_KEY)
    result = run(resolver_for(dns_server).txt(KEY))  # EDNS 1232 by default
    assert result.records == (BIG_KEY,)
    assert [q.transport for q in dns_server.queries] == ["udp"]


# -- the cache ------------------------------------------------------------------------


def test_cache_hit_sends_no_query_until_the_ttl_runs_out(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt(KEY, "v=DKIM1; p=", ttl=300)
    clock = FakeMonotonic()
    resolver = resolver_for(dns_server, clock=clock)

    async def lookups() -> None:
        first = await resolver.txt(KEY)
        assert await resolver.txt(KEY) is first
        assert await resolver.txt(KEY.upper()) is first
        assert dns_server.count(KEY) == 1
        clock.advance(299)
        assert await resolver.txt(KEY) is first
        assert dns_server.count(KEY) == 1
        clock.advance(1)
        await resolver.txt(KEY)
        assert dns_server.count(KEY) == 2

    run(lookups())
    assert (resolver.hits, resolver.misses) == (3, 2)


def test_ttl_is_clamped(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt("long.example.com", "x", ttl=7 * 86400)
    dns_server.zone.add_txt("zero.example.com", "x", ttl=0)
    clock = FakeMonotonic()
    resolver = resolver_for(dns_server, clock=clock, min_ttl=30, max_ttl=3600)

    async def lookups() -> None:
        assert (await resolver.txt("long.example.com")).ttl == 3600
        assert (await resolver.txt("zero.example.com")).ttl == 30
        clock.advance(29)
        await resolver.txt("zero.example.com")
        assert dns_server.count("zero.example.com") == 1
        clock.advance(1)
        await resolver.txt("zero.example.com")
        assert dns_server.count("zero.example.com") == 2

    run(lookups())


def test_zero_ttl_is_not_cached_by_default(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt(KEY, "x", ttl=0)
    resolver = resolver_for(dns_server, clock=FakeMonotonic())

    async def lookups() -> None:
        await resolver.txt(KEY)
        await resolver.txt(KEY)

    run(lookups())
    assert dns_server.count(KEY) == 2


@pytest.mark.parametrize(("soa_ttl", "minimum", "expected"), [(3600, 60, 60), (10, 60, 10)])
def test_negative_answers_are_cached_per_rfc_2308(
    start_dns_server: Callable[..., ZoneServer], soa_ttl: int, minimum: int, expected: int
) -> None:
    server = start_dns_server(Zone(soa_ttl=soa_ttl, soa_minimum=minimum))
    server.zone.add_txt(KEY, "v=DKIM1; p=")
    clock = FakeMonotonic()
    resolver = resolver_for(server, clock=clock)

    async def lookups() -> None:
        nx = await resolver.txt("gone.example.com")
        nodata = await resolver.a(KEY)
        assert (nx.status, nx.ttl) == (DnsStatus.NXDOMAIN, expected)
        assert (nodata.status, nodata.ttl) == (DnsStatus.NODATA, expected)
        clock.advance(expected - 1)
        assert await resolver.txt("gone.example.com") is nx
        assert await resolver.a(KEY) is nodata
        assert len(server.queries) == 2
        clock.advance(1)
        await resolver.txt("gone.example.com")
        await resolver.a(KEY)
        assert len(server.queries) == 4

    run(lookups())


def test_negative_ttl_is_capped(start_dns_server: Callable[..., ZoneServer]) -> None:
    server = start_dns_server(Zone(soa_ttl=86400, soa_minimum=86400))
    result = run(resolver_for(server, max_negative_ttl=900).txt("gone.example.com"))
    assert result.ttl == 900


def test_tempfail_is_not_cached(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt(KEY, "v=DKIM1; p=")
    dns_server.zone.set_fault(KEY, Fault.SERVFAIL)
    resolver = resolver_for(dns_server, clock=FakeMonotonic())

    async def lookups() -> list[DnsResult[bytes]]:
        first = await resolver.txt(KEY)
        dns_server.zone.set_fault(KEY, None)
        return [first, await resolver.txt(KEY)]

    failed, healed = run(lookups())
    assert failed.status is DnsStatus.TEMPFAIL
    assert healed.records == (b"v=DKIM1; p=",)


def test_concurrent_lookups_share_one_query(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt(KEY, "v=DKIM1; p=")
    resolver = resolver_for(dns_server)

    async def lookups() -> list[DnsResult[bytes]]:
        return await asyncio.gather(*(resolver.txt(KEY) for _ in range(20)))

    results = run(lookups())
    assert {r.records for r in results} == {(b"v=DKIM1; p=",)}
    assert dns_server.count(KEY) == 1


def test_cache_is_bounded_lru(dns_server: ZoneServer) -> None:
    for name in ("a", "b", "c"):
        dns_server.zone.add_txt(f"{name}.example.com", name)
    resolver = resolver_for(dns_server, cache_size=2)

    async def lookups() -> None:
        await resolver.txt("a.example.com")
        await resolver.txt("b.example.com")
        await resolver.txt("a.example.com")  # a is now the most recent
        await resolver.txt("c.example.com")  # evicts b
        await resolver.txt("a.example.com")
        await resolver.txt("b.example.com")

    run(lookups())
    assert len(resolver.cache) == 2
    assert [dns_server.count(f"{n}.example.com") for n in "abc"] == [1, 2, 1]


# -- servers ---------------------------------------------------------------------------


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6_server(start_dns_server: Callable[..., ZoneServer]) -> None:
    server = start_dns_server(bind=("::1",))
    server.zone.add_txt(KEY, "over v6")
    resolver = make_resolver([f"[::1]:{server.port}"], None, timeout=2.0)
    assert run(resolver.txt(KEY)).records == (b"over v6",)
    assert server.spec == f"[::1]:{server.port}"


def test_first_server_dead_falls_to_the_second_after_one_attempt(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt(KEY, "second")
    servers = [("127.0.0.1", dead_port()), *dns_server.addresses]
    resolver = DnsResolver(servers, timeout=2.0, attempt_timeout=0.2)
    started = time.monotonic()
    assert run(resolver.txt(KEY)).records == (b"second",)
    assert time.monotonic() - started < 2.0  # one 0.2 s attempt, not the 2 s lifetime


def test_first_server_silent_falls_to_the_second_after_one_attempt(
    start_dns_server: Callable[..., ZoneServer],
) -> None:
    silent = start_dns_server()
    silent.zone.set_fault(KEY, Fault.TIMEOUT)
    good = start_dns_server()
    good.zone.add_txt(KEY, "second")
    resolver = DnsResolver([*silent.addresses, *good.addresses], timeout=2.0, attempt_timeout=0.2)
    assert run(resolver.txt(KEY)).records == (b"second",)
    assert (silent.count(KEY), good.count(KEY)) == (1, 1)


# -- names that cannot exist ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty name"),
        ("a..example.com", "empty label"),
        (".example.com", "empty label"),
        ("x" * 64 + ".example.com", "label longer than 63 octets"),
        (".".join(["abcdefghi"] * 25) + ".example", "name longer than 253 octets"),
        ("bad\udcff.example.com", "not valid IDNA"),
    ],
)
def test_impossible_names_are_permanent_without_a_query(
    dns_server: ZoneServer, name: str, why: str
) -> None:
    resolver = resolver_for(dns_server)
    result = run(resolver.txt(name))
    assert result.status is DnsStatus.NXDOMAIN
    assert result.reason.startswith("invalid name") and why in result.reason
    assert dns_server.queries == []


def test_longest_possible_name_is_asked(dns_server: ZoneServer) -> None:
    name = ".".join(["x" * 63] * 3 + ["y" * 61])  # 253 characters, 255 octets on the wire
    assert len(name) == 253
    assert run(resolver_for(dns_server).a(name)).status is DnsStatus.NXDOMAIN
    assert dns_server.count(name) == 1


def test_unicode_name_is_asked_as_a_label_and_trailing_dot_is_accepted(
    dns_server: ZoneServer,
) -> None:
    dns_server.zone.add_txt("sel._domainkey.xn--bcher-kva.example", "idn")
    resolver = resolver_for(dns_server)
    assert run(resolver.txt("sel._domainkey.bücher.example")).records == (b"idn",)
    assert run(resolver.txt("sel._domainkey.xn--bcher-kva.example.")).records == (b"idn",)


def test_backslash_in_a_name_is_a_literal_octet(dns_server: ZoneServer) -> None:
    result = run(resolver_for(dns_server).txt(r"a\046b.example.com"))
    assert result.status is DnsStatus.NXDOMAIN
    assert dns_server.queries[0].name == r"a\\046b.example.com"  # escaped in text form


def test_ptr_of_something_not_an_address(dns_server: ZoneServer) -> None:
    result = run(resolver_for(dns_server).ptr("not-an-ip"))
    assert result.status is DnsStatus.NXDOMAIN
    assert "not an IP address" in result.reason


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "server"),
    [
        ("1.2.3.4", DnsServer("1.2.3.4", 53)),
        (" 1.2.3.4:5353 ", DnsServer("1.2.3.4", 5353)),
        ("::1", DnsServer("::1", 53)),
        ("2001:db8::53", DnsServer("2001:db8::53", 53)),
        ("[::1]:5353", DnsServer("::1", 5353)),
        ("[::1]", DnsServer("::1", 53)),
    ],
)
def test_parse_server(text: str, server: DnsServer) -> None:
    assert parse_server(text) == server


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("dns.example.com", "not an IP address"),
        ("dns.example.com:53", "not an IP address"),
        ("1.2.3.4:", "port '' is not a number"),
        ("1.2.3.4:dns", "not a number"),
        ("1.2.3.4:0", "out of range"),
        ("1.2.3.4:65536", "out of range"),
        ("[::1", "missing ']'"),
        ("[::1]5353", "expected ':PORT'"),
        ("[1.2.3.4]:53", "only for IPv6"),
        ("1.2.3.256", "not an IP address"),
    ],
)
def test_parse_server_rejects_garbage(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_server(text)


def test_server_text_round_trips() -> None:
    for text in ("1.2.3.4:53", "[::1]:5353"):
        assert str(parse_server(text)) == text


def test_servers_from_control(tmp_path: Path) -> None:
    assert servers_from_control(tmp_path) is None
    (tmp_path / "control").mkdir()
    path = tmp_path / "control" / "dnsservers"
    path.write_text("# the local unbound\n\n127.0.0.1:5353\n  [::1]  \n")
    assert servers_from_control(tmp_path) == [DnsServer("127.0.0.1", 5353), DnsServer("::1", 53)]
    path.write_text("# nothing yet\n")
    assert servers_from_control(tmp_path) == []
    path.write_text("127.0.0.1\nresolver.example\n")
    with pytest.raises(ValueError, match=r"dnsservers line 2: .*not an IP address"):
        servers_from_control(tmp_path)


def test_make_resolver_precedence(tmp_path: Path) -> None:
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / "dnsservers").write_text("192.0.2.53\n")
    given = make_resolver(["127.0.0.1:5353"], tmp_path)
    assert given.servers == [DnsServer("127.0.0.1", 5353)]
    control = make_resolver(None, tmp_path)
    assert control.servers == [DnsServer("192.0.2.53", 53)]
    (tmp_path / "control" / "dnsservers").write_text("")
    assert make_resolver(None, tmp_path).servers == DnsResolver().servers  # the system's
    assert make_resolver([], None).servers == DnsResolver().servers
    with pytest.raises(ValueError, match="not an IP address"):
        make_resolver(["localhost"], None)
