"""Where mail for a domain goes: `control/smtproutes`, then MX (RFC 5321 §5.1).

`smtproutes` is qmail-remote(8)'s: `domain:relay` or `domain:relay:port`, one
a line.  The domain is looked up exactly, then by its `.suffix` keys from the
longest, then the empty key (the default route), as qmail-remote does.  An
empty relay means "use MX for this domain" (an exception to a default route).
IPv6 relays are written in brackets, `[2001:db8::1]:2525`, so the colons of
the address are not read as separators (the IPv6 patches' format).

The destinations of a domain are its MX hosts by preference (random among
equal preferences, §5.1), each host's AAAA addresses before its A addresses
(the seeds' IPv6 patch: "prefer AAAA records, fall back to A").
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Mapping
from dataclasses import dataclass

from quailmail.config.control import domain_suffixes, parse_lines
from quailmail.core.dns import DnsResult, DnsStatus, Resolver
from quailmail.deliver.remote.outcome import DeliveryError

SMTP_PORT = 25


@dataclass(frozen=True, slots=True)
class Route:
    relay: str  # a host name or an address (no brackets); "" = use MX
    port: int | None = None  # None: the default port


@dataclass(frozen=True, slots=True)
class Destination:
    host: str  # the MX (or relay) name, or the address itself for a literal
    address: str
    port: int


class Routes:
    """The parsed `smtproutes`: lookup as qmail-remote does."""

    def __init__(self, entries: Mapping[str, Route] | None = None) -> None:
        self.entries: dict[str, Route] = dict(entries or {})

    def lookup(self, domain: str) -> Route | None:
        domain = domain.lower().rstrip(".")
        for key in (domain, *domain_suffixes(domain), ""):
            route = self.entries.get(key)
            if route is not None:
                return route
        return None

    def __len__(self) -> int:
        return len(self.entries)


def parse_route(value: str) -> Route:
    """`relay`, `relay:port`, `[v6]`, `[v6]:port` or empty.  ValueError if malformed."""
    value = value.strip()
    if not value:
        return Route("")
    port_text = ""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError(f"unclosed bracket in relay {value!r}")
        relay, rest = value[1:end], value[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"junk after relay {value!r}")
            port_text = rest[1:]
        relay = relay.removeprefix("IPv6:").removeprefix("ipv6:")
        ipaddress.ip_address(relay)  # raises ValueError
    else:
        relay, _, port_text = value.partition(":")
        if not relay:
            raise ValueError(f"no relay in {value!r}")
    port: int | None = None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"bad port in {value!r}")
        port = int(port_text)
    return Route(relay.lower(), port)


def parse_smtproutes(data: bytes) -> Routes:
    """The file's bytes to `Routes`.  A line that does not parse is skipped
    (qmail-remote would send to it as written and fail every time); a later
    line for the same domain wins, as qmail's constmap does."""
    entries: dict[str, Route] = {}
    for line in parse_lines(data):
        domain, colon, rest = line.partition(":")
        if not colon:
            continue
        try:
            entries[domain.strip().lower()] = parse_route(rest)
        except ValueError:
            continue
    return Routes(entries)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def order_mx(records: list[tuple[int, str]], rng: random.Random) -> list[str]:
    """RFC 5321 §5.1: lowest preference first, random among equals."""
    shuffled = list(records)
    rng.shuffle(shuffled)
    shuffled.sort(key=lambda r: r[0])  # stable: equal preferences stay shuffled
    hosts: list[str] = []
    for _, host in shuffled:
        if host.lower() not in hosts:
            hosts.append(host.lower())
    return hosts


async def host_addresses(host: str, resolver: Resolver) -> tuple[list[str], bool]:
    """A host's AAAA addresses, then its A addresses; and whether a lookup
    failed temporarily (so "no address" may not be final)."""
    if _is_address(host):
        return [host], False
    aaaa, a = await asyncio.gather(resolver.aaaa(host), resolver.a(host))
    addresses: list[str] = []
    tempfail = False
    result: DnsResult[str]
    for result in (aaaa, a):
        if result.status is DnsStatus.TEMPFAIL:
            tempfail = True
        for address in result.records:
            if address not in addresses:
                addresses.append(address)
    return addresses, tempfail


async def destinations(
    domain: str,
    resolver: Resolver,
    routes: Routes | None = None,
    rng: random.Random | None = None,
    *,
    port: int = SMTP_PORT,
) -> list[Destination]:
    """The addresses to try for `domain`, in order.  Raises `DeliveryError`
    (permanent or temporary) when there is nowhere to send."""
    rng = rng or random.Random()  # noqa: S311 - load spreading, not security
    domain = domain.lower().rstrip(".")
    route = routes.lookup(domain) if routes is not None else None
    if route is not None and route.relay:
        hosts = [route.relay]
        port = route.port or port
        implicit = True  # a relay's own addresses, never its MX
    else:
        if route is not None and route.port:
            port = route.port
        mx = await resolver.mx(domain)
        if mx.status is DnsStatus.TEMPFAIL:
            raise DeliveryError(f"temporary DNS failure looking up MX for {domain}: {mx.reason}")
        if mx.status is DnsStatus.NXDOMAIN:
            raise DeliveryError(f"domain {domain} does not exist", permanent=True)
        if mx.ok and any(r.exchange in ("", ".") for r in mx.records):
            # RFC 7505 §3: a null MX (preference 0, exchange ".") says the
            # domain accepts no mail; senders must not fall back to A/AAAA.
            raise DeliveryError(f"domain {domain} accepts no mail (RFC 7505)", permanent=True)
        if mx.ok and mx.records:
            hosts = order_mx([(r.preference, r.exchange) for r in mx.records], rng)
            implicit = False
        else:
            hosts = [domain]  # RFC 5321 §5.1: the implicit MX
            implicit = True
    looked_up = await asyncio.gather(*(host_addresses(h, resolver) for h in hosts))
    out: list[Destination] = []
    tempfail = False
    for host, (addresses, failed) in zip(hosts, looked_up, strict=True):
        tempfail = tempfail or failed
        out.extend(Destination(host, address, port) for address in addresses)
    if not out:
        if tempfail:
            raise DeliveryError(f"temporary DNS failure looking up addresses for {domain}")
        what = "host" if implicit else "mail exchanger"
        raise DeliveryError(f"no address for {what} {', '.join(hosts)} of {domain}", permanent=True)
    return out
