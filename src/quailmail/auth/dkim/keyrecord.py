"""DKIM key records (RFC 6376 §3.6.1): v h k n p s t, and the old g=.

A record that does not parse is SELECTOR_INVALID; an empty p= is a revoked
key; a p= that is not a key is PUBLIC_KEY_INVALID; a record whose k= or h=
does not allow the signature's algorithm is ALGORITHM_MISMATCH (libdkim's
codes, letters G, I, M, Q).
"""

from __future__ import annotations

from dataclasses import dataclass

from quailmail.auth.dkim.status import DkimStatus
from quailmail.auth.keys import KeyProblem, PublicKey, parse_public_key
from quailmail.auth.tagvalue import TagValueError, parse_tag_list, strip_fws


class KeyRecordError(Exception):
    def __init__(self, status: DkimStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_type: str
    p: str
    hashes: tuple[str, ...] | None  # h=, None when absent (all allowed)
    services: tuple[str, ...]
    flags: tuple[str, ...]
    granularity: str | None  # g= of RFC 4871 (dropped by RFC 6376; libdkim checks it)
    notes: str

    @property
    def testing(self) -> bool:
        return "y" in self.flags

    @property
    def strict(self) -> bool:
        return "s" in self.flags


_cache: dict[bytes, KeyRecord | KeyRecordError] = {}
_CACHE_SIZE = 4096


def parse_key_record(data: bytes) -> KeyRecord:
    """Parse a key record; parsed once per distinct record text (cached)."""
    cached = _cache.get(data)
    if cached is None:
        try:
            cached = _parse(data)
        except KeyRecordError as exc:
            cached = exc
        if len(_cache) >= _CACHE_SIZE:
            _cache.pop(next(iter(_cache)))
        _cache[data] = cached
    if isinstance(cached, KeyRecordError):
        raise cached
    return cached


def _parse(data: bytes) -> KeyRecord:
    try:
        tags = parse_tag_list(data.decode("utf-8", "surrogateescape"))
    except TagValueError as exc:
        raise KeyRecordError(DkimStatus.SELECTOR_INVALID, f"key record: {exc}") from None
    if "v" in tags and (next(iter(tags)) != "v" or tags["v"] != "DKIM1"):  # §3.6.1 v=
        raise KeyRecordError(DkimStatus.SELECTOR_INVALID, "key record v= is not DKIM1 first")
    if "p" not in tags:
        raise KeyRecordError(DkimStatus.SELECTOR_INVALID, "key record has no p=")
    services = tuple(s.strip().lower() for s in tags.get("s", "*").split(":"))
    if "*" not in services and "email" not in services:
        raise KeyRecordError(DkimStatus.SELECTOR_INVALID, "key is not for email (s=)")
    hashes = tuple(strip_fws(h).lower() for h in tags["h"].split(":")) if "h" in tags else None
    granularity = tags.get("g")
    return KeyRecord(
        key_type=tags.get("k", "rsa").strip().lower(),
        p=strip_fws(tags["p"]),
        hashes=hashes,
        services=services,
        flags=tuple(f.strip().lower() for f in tags.get("t", "").split(":") if f.strip()),
        granularity=granularity.strip() if granularity is not None else None,
        notes=tags.get("n", ""),
    )


def check_record(
    record: KeyRecord, *, key_type: str, hash_name: str, identity: str, domain: str
) -> PublicKey:
    """The record's key, if it may verify this signature."""
    if record.key_type not in ("rsa", "ed25519"):
        raise KeyRecordError(DkimStatus.ALGORITHM_MISMATCH, f"unknown key type k={record.key_type}")
    if record.key_type != key_type:
        raise KeyRecordError(
            DkimStatus.ALGORITHM_MISMATCH,
            f"key is k={record.key_type}, signature is {key_type}",
        )
    if record.hashes is not None and hash_name not in record.hashes:
        raise KeyRecordError(DkimStatus.ALGORITHM_MISMATCH, f"key h= does not allow {hash_name}")
    local, _, idomain = identity.rpartition("@")
    if record.strict and idomain.lower() != domain:  # §3.6.1 t=s
        raise KeyRecordError(DkimStatus.SELECTOR_MISMATCH, "t=s key but i= is a subdomain of d=")
    if record.granularity and not _glob(record.granularity, local):
        raise KeyRecordError(DkimStatus.SELECTOR_MISMATCH, "key granularity g= does not match i=")
    if not record.p:
        raise KeyRecordError(DkimStatus.SELECTOR_REVOKED, "key revoked (empty p=)")
    try:
        return parse_public_key(record.key_type, record.p)
    except KeyProblem as exc:
        raise KeyRecordError(DkimStatus.PUBLIC_KEY_INVALID, str(exc)) from None


def _glob(pattern: str, local: str) -> bool:
    """RFC 4871 §3.6.1 g=: one optional "*" matching any run of characters."""
    if pattern == "*":
        return True
    head, star, tail = pattern.partition("*")
    if not star:
        return pattern == local
    return len(local) >= len(head) + len(tail) and local.startswith(head) and local.endswith(tail)
