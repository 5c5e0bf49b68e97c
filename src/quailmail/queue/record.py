"""The on-disk format of the queue: message records, state records, queue ids.

Pure encoding and decoding; files are opened elsewhere (`segment.py`).  The
format is described for admins in docs/queue.md; this module is its
reference.  All integers are little-endian.

A message record is::

    header (48 bytes)
      magic     4s  b"qREC"
      version   H   1
      hdrlen    H   48 (a later version may grow the header; readers skip it)
      total     Q   length of the whole record: header + envelope + data
      crc       I   CRC-32 of the record with this field left out
                    (bytes [0, 16) then [20, total))
      stamp     Q   queue id, part 1: microseconds, strictly increasing per queue
      tag       I   queue id, part 2: the writing process's pid (15 bits)
      arrival   Q   arrival time, microseconds since the epoch
      envlen    I   length of the envelope that follows the header
      flags     I   0
    envelope (envlen bytes)
      sender, then a count and that many recipients, then a count and that
      many (key, value) meta pairs; each string is a u32 length and its bytes
      (UTF-8, with surrogateescape so any byte survives)
    data (total - hdrlen - envlen bytes): the message as received

A state record (24 bytes, in the segment's `.state` file) says that one
recipient of one message is done::

      stamp Q, tag I   the message's queue id
      index I          the recipient's position in the envelope
      outcome B        1 delivered, 2 bounced
      pad 3x
      crc I            CRC-32 of the first 20 bytes
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

MAGIC = b"qREC"
VERSION = 1
HEADER = struct.Struct("<4sHHQIQIQII")
HEADER_SIZE = HEADER.size  # 48
assert HEADER_SIZE == 48

STATE = struct.Struct("<QIIB3xI")
STATE_SIZE = STATE.size  # 24
assert STATE_SIZE == 24

_U32 = struct.Struct("<I")

# Crockford's base32, lower case: digits sort before letters in ASCII, so
# fixed-width ids sort as their numbers do; no i, l, o, u to misread.
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_VALUE = {c: i for i, c in enumerate(_ALPHABET)}
STAMP_CHARS = 11  # 55 bits of microseconds: until the year 3111
TAG_CHARS = 3  # 15 bits
ID_LENGTH = STAMP_CHARS + TAG_CHARS
TAG_MASK = (1 << (5 * TAG_CHARS)) - 1


# One piece of message data as the receiver read it.
Block = bytes | bytearray | memoryview


class Outcome(enum.IntEnum):
    """What became of one recipient; both end its delivery for good."""

    DELIVERED = 1
    BOUNCED = 2


class FormatError(ValueError):
    """Bytes that are not a valid record (torn, corrupt or foreign)."""


def _b32(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def make_id(stamp: int, tag: int) -> str:
    """Queue id: 14 characters, [0-9a-z], sortable by arrival, safe as a file name."""
    return _b32(stamp, STAMP_CHARS) + _b32(tag & TAG_MASK, TAG_CHARS)


def parse_id(qid: str) -> tuple[int, int]:
    """(stamp, tag) of a queue id; ValueError if it is not one."""
    if len(qid) != ID_LENGTH:
        raise ValueError(f"not a queue id: {qid!r}")
    value = 0
    for c in qid:
        try:
            value = value << 5 | _VALUE[c]
        except KeyError:
            raise ValueError(f"not a queue id: {qid!r}") from None
    return value >> (5 * TAG_CHARS), value & TAG_MASK


@dataclass(frozen=True, slots=True)
class Envelope:
    sender: str
    recipients: tuple[str, ...]
    meta: dict[str, str]


def _put_str(out: list[bytes], text: str) -> None:
    raw = text.encode("utf-8", "surrogateescape")
    out.append(_U32.pack(len(raw)))
    out.append(raw)


def encode_envelope(sender: str, recipients: Sequence[str], meta: dict[str, str]) -> bytes:
    out: list[bytes] = []
    _put_str(out, sender)
    out.append(_U32.pack(len(recipients)))
    for rcpt in recipients:
        _put_str(out, rcpt)
    out.append(_U32.pack(len(meta)))
    for key, value in meta.items():
        _put_str(out, key)
        _put_str(out, value)
    return b"".join(out)


def decode_envelope(raw: bytes | memoryview) -> Envelope:
    view = memoryview(raw)
    pos = 0

    def u32() -> int:
        nonlocal pos
        if pos + 4 > len(view):
            raise FormatError("envelope truncated")
        (n,) = _U32.unpack_from(view, pos)
        pos += 4
        return int(n)

    def text() -> str:
        nonlocal pos
        n = u32()
        if pos + n > len(view):
            raise FormatError("envelope truncated")
        s = bytes(view[pos : pos + n]).decode("utf-8", "surrogateescape")
        pos += n
        return s

    sender = text()
    recipients = tuple(text() for _ in range(u32()))
    meta = {}
    for _ in range(u32()):
        key = text()
        meta[key] = text()
    if pos != len(view):
        raise FormatError("envelope has trailing bytes")
    return Envelope(sender, recipients, meta)


@dataclass(frozen=True, slots=True)
class Header:
    total: int
    crc: int
    stamp: int
    tag: int
    arrival_us: int
    envlen: int
    hdrlen: int

    @property
    def qid(self) -> str:
        return make_id(self.stamp, self.tag)

    @property
    def data_size(self) -> int:
        return self.total - self.hdrlen - self.envlen


def encode_header(
    stamp: int, tag: int, arrival_us: int, envelope: bytes, blocks: Sequence[Block]
) -> bytes:
    """The header of a record whose envelope and data follow it; computes the CRC.

    zlib.crc32 releases the GIL on large buffers, so the writer thread runs
    this while the event loop goes on.
    """
    total = HEADER_SIZE + len(envelope) + sum(memoryview(b).nbytes for b in blocks)
    head = HEADER.pack(
        MAGIC, VERSION, HEADER_SIZE, total, 0, stamp, tag, arrival_us, len(envelope), 0
    )
    crc = zlib.crc32(head[:16])
    crc = zlib.crc32(head[20:], crc)
    crc = zlib.crc32(envelope, crc)
    for block in blocks:
        crc = zlib.crc32(block, crc)
    return head[:16] + _U32.pack(crc) + head[20:]


def decode_header(raw: bytes | memoryview) -> Header:
    """Parse and sanity-check a header (not the CRC: that needs the whole record)."""
    if len(raw) < HEADER_SIZE:
        raise FormatError("header truncated")
    magic, version, hdrlen, total, crc, stamp, tag, arrival, envlen, _flags = HEADER.unpack_from(
        raw, 0
    )
    if magic != MAGIC:
        raise FormatError("bad magic")
    if version != VERSION or hdrlen < HEADER_SIZE:
        raise FormatError(f"unknown record version {version}")
    if total < hdrlen + envlen:
        raise FormatError("record length smaller than its parts")
    return Header(total, crc, stamp, tag, arrival, envlen, hdrlen)


def encode_state(stamp: int, tag: int, index: int, outcome: Outcome) -> bytes:
    body = STATE.pack(stamp, tag, index, int(outcome), 0)[:20]
    return body + _U32.pack(zlib.crc32(body))


def decode_state(raw: bytes | memoryview) -> tuple[int, int, int, Outcome]:
    stamp, tag, index, outcome, crc = STATE.unpack_from(raw, 0)
    if zlib.crc32(raw[:20]) != crc:
        raise FormatError("state record checksum mismatch")
    try:
        return stamp, tag, index, Outcome(outcome)
    except ValueError:
        raise FormatError(f"unknown outcome {outcome}") from None
