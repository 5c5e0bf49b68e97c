"""The client's verified reverse name (tcpserver's TCPREMOTEHOST).

A PTR name counts only if it resolves back to the client's address
(forward-confirmed reverse DNS), else anyone controlling their reverse zone
could claim any name and match `=host` rules.
"""

from __future__ import annotations

import ipaddress

from quailmail.core.dns import Resolver

MAX_NAMES = 5  # PTR answers tried, as a bound on lookups per connection


async def verified_name(resolver: Resolver, ip: str) -> str | None:
    answer = await resolver.ptr(ip)
    if not answer.ok:
        return None
    six = ":" in ip
    for name in answer.records[:MAX_NAMES]:
        forward = await (resolver.aaaa(name) if six else resolver.a(name))
        if forward.ok and any(_same(ip, address) for address in forward.records):
            return name.lower().rstrip(".")
    return None


def _same(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False
