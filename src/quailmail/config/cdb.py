"""D. J. Bernstein's constant database (cdb), read and written in pure Python.

The format (https://cr.yp.to/cdb/cdb.txt), all numbers 32-bit little-endian:

- 2048 bytes of header: 256 (position, slot count) pairs, one per hash table;
- the records, in the order they were added: key length, data length, key, data;
- the 256 hash tables, each `slots` pairs of (hash, record position), a zero
  position marking an empty slot.

A key's hash `h` picks table `h & 255` and its first slot `(h >> 8) % slots`;
lookups probe forward from there, wrapping, until an empty slot.  `make_cdb`
builds the tables exactly as djb's `cdb_make` does (records of a table placed
in the order they were added, linear probing, the table of an empty bucket
given the current position), so for the same records in the same order its
output is byte for byte what `tcprules` writes.  Duplicate keys are kept;
`Cdb.get` returns the first added, as `cdb_find` does.

`write_atomic` is tcprules' contract: write the temporary file, fsync it, rename
it over the target, so a reader sees the old file or the new one, never half.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

from quailmail.core import files

_HEADER = 2048
_LIMIT = 0xFFFFFFFF  # every position is a 32-bit number: a cdb holds at most 4 GiB
_PAIR = struct.Struct("<II")


class CdbError(ValueError):
    """A cdb that cannot be made (too big) or read (truncated, inconsistent)."""


def cdb_hash(key: bytes) -> int:
    """h = 5381; h = (h * 33) ^ byte, modulo 2**32."""
    h = 5381
    for byte in key:
        h = (((h << 5) + h) & _LIMIT) ^ byte
    return h


def make_cdb(records: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The cdb holding `records` (key, data), in this order, duplicates kept."""
    body = bytearray()
    buckets: list[list[tuple[int, int]]] = [[] for _ in range(256)]
    pos = _HEADER
    for key, data in records:
        h = cdb_hash(key)
        buckets[h & 255].append((h, pos))
        body += _PAIR.pack(len(key), len(data))
        body += key
        body += data
        pos += 8 + len(key) + len(data)
        if pos > _LIMIT:
            raise CdbError("cdb would exceed 4 GiB")
    header = bytearray()
    tables = bytearray()
    for bucket in buckets:
        slots = 2 * len(bucket)
        header += _PAIR.pack(pos, slots)
        table = [(0, 0)] * slots
        for h, rec in bucket:
            where = (h >> 8) % slots
            while table[where][1]:
                where = (where + 1) % slots
            table[where] = (h, rec)
        for h, rec in table:
            tables += _PAIR.pack(h, rec)
        pos += 8 * slots
        if pos > _LIMIT:
            raise CdbError("cdb would exceed 4 GiB")
    return bytes(header + body + tables)


class Cdb:
    """A cdb held in memory (rules files are small: a few KiB to a few MiB)."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        if len(data) < _HEADER:
            raise CdbError(f"not a cdb: {len(data)} bytes, the header alone is {_HEADER}")
        self._data = data

    def _pair(self, pos: int) -> tuple[int, int]:
        if pos < 0 or pos + 8 > len(self._data):
            raise CdbError(f"truncated cdb: position {pos} is past its end")
        a, b = _PAIR.unpack_from(self._data, pos)
        return a, b

    def get_all(self, key: bytes) -> Iterator[bytes]:
        """Every record of `key`, in the order they were added (cdb_findnext)."""
        h = cdb_hash(key)
        table, slots = self._pair(8 * (h & 255))
        if not slots:
            return
        if table + 8 * slots > len(self._data):
            raise CdbError(f"truncated cdb: hash table at {table} runs past its end")
        start = (h >> 8) % slots
        for i in range(slots):
            slot_hash, rec = self._pair(table + 8 * ((start + i) % slots))
            if not rec:
                return
            if slot_hash != h:
                continue
            klen, dlen = self._pair(rec)
            end = rec + 8 + klen + dlen
            if end > len(self._data):
                raise CdbError(f"truncated cdb: record at {rec} runs past its end")
            if self._data[rec + 8 : rec + 8 + klen] == key:
                yield self._data[rec + 8 + klen : end]

    def get(self, key: bytes) -> bytes | None:
        """The first record of `key` (what cdb_find returns), None without one."""
        return next(self.get_all(key), None)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every record in file order (what `cdbdump` prints)."""
        end = min(self._pair(8 * i)[0] for i in range(256))
        pos = _HEADER
        while pos < end:
            klen, dlen = self._pair(pos)
            nxt = pos + 8 + klen + dlen
            if nxt > end:
                raise CdbError(f"truncated cdb: record at {pos} runs into the hash tables")
            yield self._data[pos + 8 : pos + 8 + klen], self._data[pos + 8 + klen : nxt]
            pos = nxt


def write_atomic(path: Path, tmp: Path, data: bytes) -> None:
    """Write `tmp`, fsync it, rename it over `path` (tcprules' contract).

    `tmp` must be on the same file system as `path`; an existing `tmp` is
    overwritten.  On any error `path` is left as it was.
    """
    files.write_atomic(path, data, tmp=tmp)
