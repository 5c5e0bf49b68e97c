"""What a greylist store keeps, and the key of a client.

A store keeps, per key, when the key was first seen and when last: jgreylist
keeps them as an empty file's mtime (first) and atime (last).  The key is
the client's network as jgreylist names it with the seeds' IPv6 patch
(seed 000: "All IPv4 addresses are stored inside an `ip4` directory"), one
path component a level:

- IPv4, per /24: `ip4/127/000/000`; per address (`JGREYLIST_BY_IP`):
  `ip4/127/000/000/001` (decimal, three digits);
- IPv6, per /64: `ip6/20/01/04/70/1f/0f/03/50`; per address: all 16 bytes
  (hex, two digits).

The original jgreylist, without the patch, keeps IPv4 entries at the top
(`127/000/000`); the file store reads such an entry when its `ip4/` twin is
missing (files.py).

IPv4-mapped IPv6 addresses are IPv4 clients.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from typing import Protocol

Key = tuple[str, ...]

EXPIRE_DAYS = 30  # entries not seen for this long are forgotten (jms1: "30 days or more")


class StoreError(Exception):
    """The store cannot answer now (a missing directory, Redis down)."""


@dataclass(frozen=True, slots=True)
class Visit:
    """One connection recorded: the key's first sighting before this one
    (None: never seen, recorded now) and the store's clock now."""

    first_seen: float | None
    now: float


class Store(Protocol):
    async def visit(self, key: Key) -> Visit:
        """Record a sighting of `key` now (first seen stays; last seen is
        now) and say what was known before."""
        ...


@functools.lru_cache(maxsize=4096)  # a busy client comes back: no parse each time
def client_key(ip: str, *, by_ip: bool) -> Key:
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        octets = tuple(f"{byte:03d}" for byte in address.packed)
        return ("ip4", *(octets if by_ip else octets[:3]))
    hexes = tuple(f"{byte:02x}" for byte in address.packed)
    return ("ip6", *(hexes if by_ip else hexes[:8]))
