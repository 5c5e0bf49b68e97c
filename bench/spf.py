"""SPF evaluations per second, quailmail beside pyspf, in one run.

    .venv/bin/python bench/spf.py [--seconds 1.0]

The policy is a realistic one: the sender's record lists its own ip4/ip6
networks and three includes (a mail provider, a newsletter service, a
ticketing system), each a list of ip4/ip6 networks, as large senders
publish them.  Three clients: one that passes in the first list, one in
the third include (the deepest path), one that matches nothing (~all).

Both run in process against the same loopback DNS server
(quailmail.dns.zoneserver) with a warm cache, so DNS is not measured:

- quailmail: check_mailfrom() awaited in one event loop, with the real
  DnsResolver, whose cache the warm-up fills;
- pyspf 2.0.14: spf.check2(), its lookups going through dnspython's
  default resolver, given a dnspython Cache that the warm-up fills (pyspf's
  own cache lives for one query only).

Goal (issue 3): at least 5x pyspf.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
import warnings
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from types import ModuleType

import dns.resolver

from quailmail.auth.spf import SpfResult, check_mailfrom
from quailmail.dns.resolver import DnsResolver
from quailmail.dns.zoneserver import Zone, ZoneServer


def import_pyspf() -> ModuleType:
    """pyspf's module is called `spf`, like this file: import it with this
    file's directory (sys.path[0] when run as a script) out of the path."""
    here = Path(__file__).resolve().parent
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    try:
        return importlib.import_module("spf")
    finally:
        sys.path[:] = saved


spf = import_pyspf()

SENDER = "billing@example.com"
HELO = "mail.example.com"
CLIENTS = {
    "pass, own ip4": ("192.0.2.17", SpfResult.PASS),
    "pass, 3rd include": ("2001:db8:30:3::25", SpfResult.PASS),
    "softfail, no match": ("203.0.113.200", SpfResult.SOFTFAIL),
}


def networks(prefix4: str, prefix6: str, count: int) -> list[str]:
    terms = [f"ip4:{prefix4}.{16 * i}/28" for i in range(count)]
    terms += [f"ip6:{prefix6}:{i:x}::/64" for i in range(count // 2)]
    return terms


def zone() -> Zone:
    z = Zone()
    z.add_txt(
        "example.com",
        "v=spf1 ip4:192.0.2.0/27 ip4:198.51.100.64/26 ip6:2001:db8:1::/48 "
        "include:_spf.mailhost.example include:spf.newsletters.example "
        "include:_spf.tickets.example ~all",
    )
    z.add_txt("example.com", "google-site-verification=0123456789abcdef")
    for name, prefix4, prefix6, count, final in [
        ("_spf.mailhost.example", "198.18.0", "2001:db8:10", 12, "~all"),
        ("spf.newsletters.example", "198.18.1", "2001:db8:20", 10, "-all"),
        ("_spf.tickets.example", "198.18.2", "2001:db8:30", 8, "?all"),
    ]:
        z.add_txt(name, " ".join(["v=spf1", *networks(prefix4, prefix6, count), final]))
    return z


def rate(run: Callable[[], None], seconds: float) -> float:
    run()
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            run()
        count += 50
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def quail_runner(resolver: DnsResolver, ip: str, expected: SpfResult, seconds: float) -> float:
    async def measure() -> float:
        verdict = await check_mailfrom(ip, SENDER, HELO, resolver)  # warm-up
        assert verdict.result is expected, verdict
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            for _ in range(50):
                await check_mailfrom(ip, SENDER, HELO, resolver)
            count += 50
            now = time.perf_counter()
            if now >= deadline:
                return count / (now - start)

    return asyncio.run(measure())


def pyspf_runner(ip: str, expected: SpfResult, seconds: float) -> float:
    def run() -> None:
        result, _ = spf.check2(i=ip, s=SENDER, h=HELO)
        assert result == expected.value, result

    return rate(run, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per cell (default 1)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)  # pyspf calls dnspython's query()
    with ZoneServer(zone()) as server:
        ours = DnsResolver(server.addresses)
        theirs = dns.resolver.Resolver(configure=False)
        theirs.nameservers = [server.address]
        theirs.port = server.port
        theirs.cache = dns.resolver.Cache()
        dns.resolver.default_resolver = theirs
        print(f"pyspf {version('pyspf')}, dnspython {version('dnspython')}; evaluations/s")
        print(f"{'client':<22} {'quailmail':>10} {'pyspf':>9} {'ratio':>7}")
        ratios = []
        for label, (ip, expected) in CLIENTS.items():
            quail = quail_runner(ours, ip, expected, args.seconds)
            peer = pyspf_runner(ip, expected, args.seconds)
            ratios.append(quail / peer)
            print(f"{label:<22} {quail:>10.0f} {peer:>9.0f} {quail / peer:>6.1f}x")
        queries = len(server.queries)
    print(f"DNS queries sent in all (cache misses): {queries}")
    print(f"lowest ratio {min(ratios):.1f}x (goal: 5x)")


if __name__ == "__main__":
    main()
