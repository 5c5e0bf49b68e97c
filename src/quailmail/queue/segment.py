"""Reading segment and state files: recovery scans and single-record reads.

Invariant (shared with writer.py): every byte of a segment below the offset
the writer last fsynced is a sequence of complete, valid records.  Bytes past
it are a write that did not finish (crash, disk full) and were never
acknowledged.  So recovery keeps every record whose length and CRC check out
and cuts a torn tail off; a bad record *followed by* valid ones is not a torn
tail but damage (a disk that lied), and then nothing is cut: the segment is
kept whole, marked damaged, and every valid record in it is still delivered.
"""

from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from quailmail.queue.record import (
    HEADER_SIZE,
    MAGIC,
    STATE_SIZE,
    Envelope,
    FormatError,
    Header,
    Outcome,
    decode_envelope,
    decode_header,
    decode_state,
)

SEGMENT_SUFFIX = ".seg"
STATE_SUFFIX = ".state"
_NAME = re.compile(r"([0-9]{10})\.(seg|state)\Z")
_CHUNK = 1 << 20


def segment_name(seq: int) -> str:
    return f"{seq:010d}{SEGMENT_SUFFIX}"


def state_name(seq: int) -> str:
    return f"{seq:010d}{STATE_SUFFIX}"


def list_files(directory: Path) -> tuple[list[int], list[int]]:
    """Sequence numbers of the segment files and of the state files, sorted."""
    segs: list[int] = []
    states: list[int] = []
    for name in os.listdir(directory):
        m = _NAME.match(name)
        if m:
            (segs if m.group(2) == "seg" else states).append(int(m.group(1)))
    return sorted(segs), sorted(states)


@dataclass(slots=True)
class Found:
    """One valid record found by a scan."""

    offset: int
    header: Header
    envelope: Envelope


@dataclass(slots=True)
class Scan:
    records: list[Found] = field(default_factory=list)
    size: int = 0  # file size as found
    good_end: int = 0  # end of the last valid record
    damaged: bool = False  # invalid bytes with valid records after them
    torn: int = 0  # bytes past good_end that are not records (a torn tail)


def _read_record(f: BinaryIO, offset: int, size: int) -> Found:
    """The valid record at `offset`, or FormatError."""
    f.seek(offset)
    head = f.read(HEADER_SIZE)
    header = decode_header(head)
    if offset + header.total > size:
        raise FormatError("record runs past the end of the file")
    if header.hdrlen > HEADER_SIZE:
        head += f.read(header.hdrlen - HEADER_SIZE)
    envraw = f.read(header.envlen)
    crc = zlib.crc32(head[:16])
    crc = zlib.crc32(head[20:], crc)
    crc = zlib.crc32(envraw, crc)
    left = header.data_size
    while left:
        block = f.read(min(left, _CHUNK))
        if not block:
            raise FormatError("record truncated")
        crc = zlib.crc32(block, crc)
        left -= len(block)
    if crc != header.crc:
        raise FormatError("record checksum mismatch")
    return Found(offset, header, decode_envelope(envraw))


def _next_valid(f: BinaryIO, start: int, size: int) -> Found | None:
    """The first valid record at or after `start`, searching for the magic."""
    pos = start
    while pos < size:
        f.seek(pos)
        window = f.read(_CHUNK + len(MAGIC) - 1)
        at = window.find(MAGIC)
        while at >= 0:
            try:
                return _read_record(f, pos + at, size)
            except FormatError:
                at = window.find(MAGIC, at + 1)
        pos += _CHUNK
    return None


def scan_segment(path: Path, *, repair: bool, sync: bool = True) -> Scan:
    """Every valid record of a segment.  With `repair`, a torn tail is cut off
    (and the cut fsynced), so nothing half-written stays in the queue."""
    scan = Scan()
    with open(path, "r+b" if repair else "rb") as f:
        size = os.fstat(f.fileno()).st_size
        scan.size = size
        offset = 0
        while offset < size:
            try:
                found = _read_record(f, offset, size)
            except FormatError:
                later = _next_valid(f, offset + 1, size)
                if later is None:
                    break
                scan.damaged = True
                found = later
            scan.records.append(found)
            offset = found.offset + found.header.total
            scan.good_end = offset
        scan.torn = size - scan.good_end
        if repair and scan.torn and not scan.damaged:
            f.truncate(scan.good_end)
            f.flush()
            if sync:
                os.fsync(f.fileno())
    return scan


def read_states(
    path: Path, *, repair: bool, sync: bool = True
) -> list[tuple[int, int, int, Outcome]]:
    """The state records of a state file.  A partial last record (a torn
    append) is ignored, and cut off with `repair`.  A record whose CRC fails
    is skipped: forgetting that a recipient is done costs a duplicate
    delivery, never a loss."""
    out = []
    with open(path, "r+b" if repair else "rb") as f:
        raw = f.read()
        whole = len(raw) - len(raw) % STATE_SIZE
        for pos in range(0, whole, STATE_SIZE):
            try:
                out.append(decode_state(raw[pos : pos + STATE_SIZE]))
            except FormatError:
                continue
        if repair and whole != len(raw):
            f.truncate(whole)
            f.flush()
            if sync:
                os.fsync(f.fileno())
    return out


def read_data(path: Path, offset: int, total: int) -> bytes:
    """The message bytes of the record at `offset`, after checking its CRC."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        raw = os.pread(fd, total, offset)
    finally:
        os.close(fd)
    view = memoryview(raw)
    try:
        header = decode_header(view)
        if len(raw) != total or header.total != total:
            raise FormatError("record truncated")
        if zlib.crc32(view[20:], zlib.crc32(view[:16])) != header.crc:
            raise FormatError("record checksum mismatch")
        return raw[header.hdrlen + header.envlen :]
    finally:
        view.release()
