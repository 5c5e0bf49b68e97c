"""Client addresses as tcpserver and the seeds' IPv6 patches show them.

An IPv4 client reaching an IPv6 socket appears as `::ffff:a.b.c.d`; it is
shown, logged and matched as plain IPv4 everywhere (never the mapped form).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=4096)
def plain(address: str) -> str:
    """`::ffff:192.0.2.1` → `192.0.2.1`; IPv6 compressed; zone ids dropped."""
    text = address.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def parse_networks(lines: Iterable[str]) -> list[Network]:
    """Addresses or CIDR blocks, one a line (`#` comments), bad lines skipped
    by the caller's choice: raise ValueError naming the first bad one."""
    networks: list[Network] = []
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if line:
            networks.append(ipaddress.ip_network(line, strict=False))
    return networks


def in_networks(address: str, networks: Iterable[Network]) -> bool:
    ip = ipaddress.ip_address(plain(address))
    return any(ip.version == n.version and ip in n for n in networks)
