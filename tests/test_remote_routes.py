"""smtproutes parsing and MX ordering (RFC 5321 §5.1, RFC 7505), on a real
DNS server on loopback."""

from __future__ import annotations

import asyncio
import random

import pytest

from quailmail.deliver.remote import DeliveryError, Destination, Route, destinations
from quailmail.deliver.remote.routes import order_mx, parse_route, parse_smtproutes
from quailmail.dns.zoneserver import Fault, ZoneServer

from dnsfixtures import resolver_for

SMTPROUTES = b"""# comment
example.com:relay.example.net
.sub.example.com:relay2.example.net:2525
v6.test:[2001:db8::1]:587
v6bare.test:[2001:db8::2]
mx.example.com:
bad.test:[2001:db8::1
badport.test:relay:99999
:smarthost.example.org:26
"""


def test_parse_routes_and_lookup_order() -> None:
    routes = parse_smtproutes(SMTPROUTES)
    assert routes.lookup("EXAMPLE.com") == Route("relay.example.net")
    assert routes.lookup("a.sub.example.com") == Route("relay2.example.net", 2525)
    # `.sub.example.com` matches subdomains only; the default route catches the rest.
    assert routes.lookup("sub.example.com") == Route("smarthost.example.org", 26)
    assert routes.lookup("v6.test") == Route("2001:db8::1", 587)
    assert routes.lookup("v6bare.test") == Route("2001:db8::2", None)
    assert routes.lookup("mx.example.com") == Route("")  # empty relay: use MX
    # Malformed lines are skipped; their domains fall to the default.
    assert routes.lookup("bad.test") == Route("smarthost.example.org", 26)
    assert routes.lookup("badport.test") == Route("smarthost.example.org", 26)
    assert parse_smtproutes(b"a.test:r\n").lookup("other.test") is None


@pytest.mark.parametrize(
    ("text", "route"),
    [
        ("relay", Route("relay")),
        ("Relay:25", Route("relay", 25)),
        ("[::1]:2525", Route("::1", 2525)),
        ("[IPv6:::1]", Route("::1")),
        ("", Route("")),
    ],
)
def test_parse_route(text: str, route: Route) -> None:
    assert parse_route(text) == route


@pytest.mark.parametrize("text", ["[::1", "[::1]x", "[nothost]", "relay:0", "relay:abc", ":25"])
def test_parse_route_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_route(text)


def test_order_mx_random_among_equal_preferences() -> None:
    records = [(20, "c"), (10, "a"), (10, "b"), (30, "d"), (10, "A")]
    seen = set()
    for seed in range(40):
        hosts = order_mx(records, random.Random(seed))
        assert hosts[2:] == ["c", "d"]
        assert set(hosts[:2]) == {"a", "b"}
        seen.add(tuple(hosts[:2]))
    assert seen == {("a", "b"), ("b", "a")}


def run(coro: object) -> list[Destination]:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_mx_preference_then_aaaa_before_a(dns_server: ZoneServer) -> None:
    zone = dns_server.zone
    zone.add_mx("dest.test", 20, "mx2.dest.test")
    zone.add_mx("dest.test", 10, "mx1.dest.test")
    zone.add_a("mx1.dest.test", "192.0.2.1")
    zone.add_aaaa("mx1.dest.test", "2001:db8::1")
    zone.add_aaaa("mx1.dest.test", "2001:db8::2")
    zone.add_a("mx2.dest.test", "192.0.2.2")
    got = run(destinations("dest.test", resolver_for(dns_server), None, random.Random(1)))
    assert [(d.host, d.port) for d in got] == [("mx1.dest.test", 25)] * 3 + [("mx2.dest.test", 25)]
    assert sorted(d.address for d in got[:2]) == ["2001:db8::1", "2001:db8::2"]
    assert [d.address for d in got[2:]] == ["192.0.2.1", "192.0.2.2"]


def test_implicit_mx(dns_server: ZoneServer) -> None:
    dns_server.zone.add_a("plain.test", "192.0.2.9")
    dns_server.zone.add_aaaa("plain.test", "2001:db8::9")
    got = run(destinations("plain.test", resolver_for(dns_server)))
    assert got == [
        Destination("plain.test", "2001:db8::9", 25),
        Destination("plain.test", "192.0.2.9", 25),
    ]


def test_null_mx_is_permanent(dns_server: ZoneServer) -> None:
    dns_server.zone.add_mx("nomail.test", 0, "")
    dns_server.zone.add_a("nomail.test", "192.0.2.9")  # never a fallback
    with pytest.raises(DeliveryError) as info:
        run(destinations("nomail.test", resolver_for(dns_server)))
    assert info.value.permanent
    assert "accepts no mail (RFC 7505)" in info.value.reason


def test_nxdomain_permanent_tempfail_temporary(dns_server: ZoneServer) -> None:
    zone = dns_server.zone
    zone.add_a("other.test", "192.0.2.1")  # so the zone exists
    resolver = resolver_for(dns_server)
    with pytest.raises(DeliveryError) as info:
        run(destinations("missing.test", resolver))
    assert info.value.permanent
    zone.set_fault("broken.test", Fault.SERVFAIL)
    with pytest.raises(DeliveryError) as info:
        run(destinations("broken.test", resolver))
    assert not info.value.permanent
    # An MX host whose addresses fail temporarily: temporary, not a bounce.
    zone.add_mx("flaky.test", 10, "mx.flaky.test")
    zone.set_fault("mx.flaky.test", Fault.SERVFAIL)
    with pytest.raises(DeliveryError) as info:
        run(destinations("flaky.test", resolver))
    assert not info.value.permanent
    # An MX host with no address at all: permanent.
    zone.add_mx("dangling.test", 10, "nowhere.dangling.test")
    zone.add_txt("dangling.test", "x")
    with pytest.raises(DeliveryError) as info:
        run(destinations("dangling.test", resolver))
    assert info.value.permanent


def test_routes_override_mx(dns_server: ZoneServer) -> None:
    zone = dns_server.zone
    zone.add_mx("dest.test", 10, "mx.dest.test")
    zone.add_a("mx.dest.test", "192.0.2.1")
    zone.add_mx("relay.test", 10, "mx.relay.test")  # a relay's MX is never used
    zone.add_a("relay.test", "192.0.2.7")
    routes = parse_smtproutes(
        b"dest.test:relay.test:2525\nlit.test:[::1]:26\nmx.test:\n:[192.0.2.99]"
    )
    resolver = resolver_for(dns_server)
    assert run(destinations("dest.test", resolver, routes)) == [
        Destination("relay.test", "192.0.2.7", 2525)
    ]
    assert run(destinations("lit.test", resolver, routes)) == [Destination("::1", "::1", 26)]
    assert run(destinations("elsewhere.test", resolver, routes)) == [
        Destination("192.0.2.99", "192.0.2.99", 25)
    ]
    zone.add_mx("mx.test", 5, "mx.dest.test")
    assert run(destinations("mx.test", resolver, routes)) == [
        Destination("mx.dest.test", "192.0.2.1", 25)
    ]
