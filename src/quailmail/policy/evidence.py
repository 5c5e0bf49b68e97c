"""Evidence one check leaves for the next, or computes when none did.

The SPF check (MAIL) leaves `client.evidence["spf"]`, the DKIM verifier
(DATA) `message.evidence["dkim"]`; a later check that needs them (DMARC)
takes them from there and, when the earlier check is off or not in the
pipeline, computes them itself and leaves them for whoever comes next.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TypeVar

T = TypeVar("T")


async def evidence_or_compute(
    evidence: MutableMapping[str, object],
    key: str,
    kind: type[T],
    compute: Callable[[], Awaitable[T]],
) -> T:
    """`evidence[key]` if an earlier check put a `kind` there; else what
    `compute()` gives, stored under `key` for later checks."""
    found = evidence.get(key)
    if isinstance(found, kind):
        return found
    value = await compute()
    evidence[key] = value
    return value
