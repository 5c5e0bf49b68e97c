"""Canonicalization, RFC 6376 §3.4, body as a stream.

The body canonicalizers consume CRLF-normalized chunks of any size and feed
the hash as they go; trailing empty lines are held back as a count (they are
dropped only if nothing follows, §3.4.3 and §3.4.4), so memory stays
constant whatever the message size.
"""

from __future__ import annotations

import hashlib
from typing import Protocol


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...


# --- headers -----------------------------------------------------------------


def header_simple(raw: bytes) -> bytes:
    """§3.4.1: the field exactly as it is, with its CRLF."""
    return raw + b"\r\n"


def header_relaxed(raw: bytes) -> bytes:
    """§3.4.2: lowercase name, unfold, runs of WSP to one SP, no WSP at the
    ends of the value or around the colon."""
    name, _, value = raw.partition(b":")
    value = _relax(value.replace(b"\r\n", b""))
    return name.rstrip(b" \t").lower() + b":" + value.strip(b" \t") + b"\r\n"


HEADER_CANON = {"simple": header_simple, "relaxed": header_relaxed}


def headers_simple(fields: list[bytes]) -> bytes:
    """Several fields canonicalized at once, each with its CRLF."""
    return b"\r\n".join(fields) + b"\r\n"


def headers_relaxed(fields: list[bytes]) -> bytes:
    """`header_relaxed` over several fields in one pass of bytes operations:
    unfold and squeeze whitespace over the joined block (a field's own first
    line never starts with WSP, so only folds are CRLF + WSP), then lowercase
    the names and drop the space the squeeze may leave after each colon."""
    block = b"\r\n".join(fields) + b"\r\n"
    if b"\r\n\t" in block:
        block = block.replace(b"\r\n\t", b"\t")
    if b"\r\n " in block:
        block = block.replace(b"\r\n ", b" ")
    out = []
    for line in _relax(block).split(b"\r\n")[:-1]:
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        out.append(name.rstrip(b" ").lower() + b":" + value)
    return b"\r\n".join(out) + b"\r\n"


HEADERS_CANON = {"simple": headers_simple, "relaxed": headers_relaxed}


def select_fields(names: tuple[str, ...] | list[str], index: dict[str, list[bytes]]) -> list[bytes]:
    """§5.4.2: the fields h= names, each instance taken from the bottom up; a
    name listed more often than present contributes nothing (oversigning)."""
    fields: list[bytes] = []
    used: dict[str, int] = {}
    for name in names:
        present = index.get(name)
        if not present:
            continue
        n = used.get(name, 0) + 1
        if n <= len(present):
            used[name] = n
            fields.append(present[-n])
    return fields


def header_hash(hash_name: str, canon: str, fields: list[bytes], signature_field: bytes) -> bytes:
    """§3.7: the selected fields, then the signature field (b= empty) without
    its final CRLF, canonicalized and hashed."""
    data = HEADERS_CANON[canon]([*fields, signature_field])[:-2]
    return hashlib.new(hash_name, data).digest()


# --- body --------------------------------------------------------------------


class _Limited:
    """Pass at most `limit` bytes on (the l= tag, §3.5), counting all of them."""

    __slots__ = ("count", "hasher", "limit")

    def __init__(self, hasher: Hasher, limit: int | None) -> None:
        self.hasher = hasher
        self.limit = limit
        self.count = 0

    def update(self, data: bytes) -> None:
        if self.limit is not None:
            room = self.limit - self.count
            if room <= 0:
                self.count += len(data)
                return
            if len(data) > room:
                self.hasher.update(data[:room])
                self.count += len(data)
                return
        self.count += len(data)
        self.hasher.update(data)


def _trailing_crlfs(block: bytes) -> int:
    """How many CRLF pairs end `block`."""
    stripped = block.rstrip(b"\r\n")
    tail = len(block) - len(stripped)
    if tail == 0:
        return 0
    if block[len(stripped) :] == b"\r\n" * (tail // 2):
        return tail // 2
    # A bare CR in the tail ("x\r\r\n"): count pairs from the end by hand.
    pairs = 0
    end = len(block)
    while end >= 2 and block[end - 2 : end] == b"\r\n":
        pairs += 1
        end -= 2
    return pairs


class BodyCanonicalizer:
    """Base: withholds trailing CRLFs; subclasses transform complete lines."""

    __slots__ = ("_carry", "_emit", "_emitted", "_out", "_pending")

    def __init__(self, hasher: Hasher, limit: int | None = None) -> None:
        self._out = _Limited(hasher, limit) if limit is not None else None
        self._emit = self._out.update if self._out is not None else hasher.update
        self._pending = 0  # CRLFs held back: they may be trailing empty lines
        self._emitted = False
        self._carry = bytearray()

    @property
    def length(self) -> int | None:
        """Canonical body bytes seen so far (only tracked under a limit)."""
        return self._out.count if self._out is not None else None

    def _lines(self, block: bytes) -> None:
        """Emit a block of complete lines (it ends with CRLF).  Each content
        line goes out with its CRLF; empty lines are only counted, and go out
        when content follows them."""
        if not block.endswith(b"\r\n\r\n") and block != b"\r\n":
            # The common case: the block ends with a line that has content.
            if self._pending:
                self._emit(b"\r\n" * self._pending)
                self._pending = 0
            self._emit(block)
            self._emitted = True
            return
        n = _trailing_crlfs(block)
        cut = len(block) - 2 * n
        if cut == 0:
            self._pending += n
            return
        if self._pending:
            self._emit(b"\r\n" * self._pending)
        self._emit(block[: cut + 2])
        self._emitted = True
        self._pending = n - 1

    @staticmethod
    def _transform(block: bytes) -> bytes:
        """What the canonicalization does to complete lines (none: simple)."""
        return block

    def update(self, chunk: bytes) -> None:
        if self._carry:
            chunk = bytes(self._carry) + chunk
            self._carry.clear()
        if not chunk.endswith(b"\r\n"):
            cut = _line_cut(chunk)
            self._carry += chunk[cut:]
            chunk = chunk[:cut]
        if chunk:
            self._lines(self._transform(chunk))

    def finish(self) -> None:
        if self._carry:
            self._lines(self._transform(bytes(self._carry) + b"\r\n"))
            self._carry.clear()


class SimpleBody(BodyCanonicalizer):
    """§3.4.3: the body as it is, but trailing empty lines removed and a
    final CRLF ensured; an empty body is one CRLF."""

    __slots__ = ()

    def finish(self) -> None:
        super().finish()
        if not self._emitted:
            self._emit(b"\r\n")


class RelaxedBody(BodyCanonicalizer):
    """§3.4.4: WSP at line ends removed, WSP runs to one SP, trailing empty
    lines removed; an empty body stays empty (errata 1384)."""

    __slots__ = ()

    @staticmethod
    def _transform(block: bytes) -> bytes:
        return _relax(block)


def _line_cut(chunk: bytes) -> int:
    """Where the last complete line of `chunk` ends (0: none is complete)."""
    index = chunk.rfind(b"\r\n")
    return index + 2 if index >= 0 else 0


def _relax(block: bytes) -> bytes:
    """Runs of WSP to one SP and none before CRLF, with bytes.replace only:
    a regex substitution over a 1 MiB chunk of short runs allocates ~40 times
    the chunk in match pieces; halving the runs in passes allocates one copy
    per pass (log2 of the longest run; one or two for real mail)."""
    if b"\t" in block:
        block = block.replace(b"\t", b" ")
    while b"  " in block:
        block = block.replace(b"  ", b" ")
    if b" \r\n" in block:
        # split + join: one search; bytes.replace counts first, then copies.
        block = b"\r\n".join(block.split(b" \r\n"))
    return block


BODY_CANON: dict[str, type[BodyCanonicalizer]] = {"simple": SimpleBody, "relaxed": RelaxedBody}


def strip_b_value(raw: bytes) -> bytes:
    """The signature field with the b= value emptied (§3.5 b=, §3.7): every
    byte between "b=" and the next ";" (or the end) is removed, FWS included."""
    name, colon, value = raw.partition(b":")
    parts = value.split(b";")
    for i, part in enumerate(parts):
        tag, eq, _ = part.partition(b"=")
        if eq and tag.strip(b" \t\r\n") == b"b":
            parts[i] = tag + b"="
            return name + colon + b";".join(parts)
    return raw
