"""A bounded TTL cache for DNS results.

Entries expire by their (clamped) TTL and the least recently used entry is
evicted once the cache holds `max_entries`, so memory stays bounded however
many distinct names the mail stream makes us look up.

The hit path is what signature verification pays for every message: one dict
lookup, one comparison with the clock and an O(1) move to the LRU end.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from quailmail.core.dns import DnsResult

DEFAULT_MAX_ENTRIES = 10_000


class TtlCache:
    """Maps a key to a DnsResult until a monotonic deadline.

    Time is passed in by the caller (its injectable clock), so this class never
    reads a clock itself and tests move time without sleeping.
    """

    __slots__ = ("_entries", "max_entries")

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("cache needs room for at least one entry")
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[float, DnsResult[Any]]] = OrderedDict()

    def get(self, key: Hashable, now: float) -> DnsResult[Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            # Expired: drop it now rather than in a sweep, the LRU bound
            # takes care of expired entries nobody asks for again.
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: Hashable, result: DnsResult[Any], ttl: float, now: float) -> None:
        if ttl <= 0:
            # RFC 1035 §3.2.1: a zero TTL means "use for this transaction only".
            self._entries.pop(key, None)
            return
        self._entries[key] = (now + ttl, result)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries
