"""Cost of a DnsResolver cache hit (what every signature verification pays).

    .venv/bin/python bench/dns_cache.py

Starts the test DNS server on loopback, fills the cache with one TXT lookup,
then times cache hits inside one event loop, next to a bare `await` of a
coroutine that returns at once (the floor any async lookup pays).
"""

from __future__ import annotations

import asyncio
import time

from quailmail.dns.resolver import DnsResolver
from quailmail.dns.zoneserver import Zone, ZoneServer

NAME = "sel._domainkey.example.com"
ROUNDS = 200_000


async def nothing() -> None:
    return None


async def measure(resolver: DnsResolver) -> tuple[float, float]:
    await resolver.txt(NAME)  # the one miss
    start = time.perf_counter()
    for _ in range(ROUNDS):
        await resolver.txt(NAME)
    hit = (time.perf_counter() - start) / ROUNDS
    start = time.perf_counter()
    for _ in range(ROUNDS):
        await nothing()
    floor = (time.perf_counter() - start) / ROUNDS
    return hit, floor


def main() -> None:
    zone = Zone()
    zone.add_txt(NAME, "v=DKIM1; k=rsa; p=" + "A" * 392)
    with ZoneServer(zone) as server:
        resolver = DnsResolver(server.addresses)
        hit, floor = asyncio.run(measure(resolver))
        queries = len(server.queries)
    print(f"cache hit: {hit * 1e6:.2f} us  (bare await: {floor * 1e6:.2f} us)")
    print(f"queries sent: {queries}, hits: {resolver.hits}, misses: {resolver.misses}")


if __name__ == "__main__":
    main()
