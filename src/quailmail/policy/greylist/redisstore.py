"""The Redis store: jgreylist's semantics, shared by several nodes.

One hash per key, `greylist:ip4/127/000/000` (the file store's path), with
`first` and `last` (seconds since the epoch, microseconds after the point).
A sighting is one Lua script, atomic on the server: it reads `first`, sets
it if it was missing, sets `last` and the key's expiry, all by the Redis
server's clock (`TIME`), so nodes whose clocks disagree still agree on the
hold time.  A key not seen for `EXPIRE_DAYS` expires by itself: what `quail
greylist clean` does for the file store, Redis does here.

Needs the `redis` package (redis-py, `pip install quailmail[redis]`); it
is imported only when a Redis store is configured.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from quailmail.policy.greylist.store import EXPIRE_DAYS, Key, StoreError, Visit

PREFIX = "greylist:"
TIMEOUT = 2.0  # seconds to connect, and for one answer

_VISIT = """
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
local first = redis.call('HGET', KEYS[1], 'first')
if not first then
  redis.call('HSET', KEYS[1], 'first', now)
end
redis.call('HSET', KEYS[1], 'last', now)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return {first or '', now}
"""


class RedisStore:
    def __init__(self, url: str, *, expire_seconds: int = EXPIRE_DAYS * 86400) -> None:
        try:
            import redis.asyncio  # noqa: PLC0415 - an optional dependency
        except ImportError:
            raise StoreError("a Redis greylist store needs the redis package") from None
        self.url = url
        self.expire_seconds = expire_seconds
        try:
            self.client: Any = redis.asyncio.Redis.from_url(
                url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
            )
        except ValueError as exc:
            raise StoreError(f"bad Redis URL {url!r}: {exc}") from None
        self.script: Any = self.client.register_script(_VISIT)

    async def visit(self, key: Key) -> Visit:
        import redis.exceptions  # noqa: PLC0415 - present: __init__ imported it

        name = PREFIX + "/".join(key)
        try:
            first, now = await self.script(keys=[name], args=[self.expire_seconds])
        except (TimeoutError, redis.exceptions.RedisError, OSError) as exc:
            raise StoreError(f"Redis {self._where()}: {exc}") from None
        except (TypeError, ValueError) as exc:  # an answer of another shape
            raise StoreError(f"Redis {self._where()}: unexpected answer: {exc}") from None
        return Visit(float(first) if first else None, float(now))

    def _where(self) -> str:
        """Host and port (or socket path): never the password of the URL."""
        parts = urlsplit(self.url)
        if parts.hostname is None:
            return parts.path
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return f"{host}:{parts.port or 6379}"

    async def close(self) -> None:
        await self.client.aclose()


_STORES: dict[str, RedisStore] = {}


def store_for(url: str) -> RedisStore:
    """One client (one connection pool) per URL per process."""
    store = _STORES.get(url)
    if store is None:
        store = _STORES[url] = RedisStore(url)
    return store
