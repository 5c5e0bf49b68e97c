"""The writer thread's side of group commit: append a batch, fsync once.

Everything here runs on the queue's one writer thread (never on the event
loop), one batch at a time, so the files need no locks.

Invariants kept here (recovery, segment.py, relies on them):

- A segment's bytes below `active.size` are complete records, fdatasynced.
  `active.size` moves forward only after the fdatasync of the batch returned.
- A failed write or sync cuts the file back to `active.size` before the batch
  is failed, so nothing half-written stays behind; if even the cut fails, the
  segment is retired (no more appends) and recovery cuts the tail later.
- A new segment or state file is used only after its directory entry is
  fsynced: a record fsynced into a file whose name is not durable is not
  durable either.
- A segment is deleted only by `delete`, which the store calls when no
  recipient of it is pending; the segment being appended to is never deleted.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from quailmail.core.files import fsync_dir
from quailmail.queue.record import STATE_SIZE, Block, encode_header
from quailmail.queue.segment import segment_name, state_name

# (fd, buffers, offset) -> bytes written; os.pwritev, or a fault injector.
WriteFn = Callable[[int, Sequence[memoryview], int], int]
SyncFn = Callable[[int], None]

try:
    _IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024)
except (ValueError, OSError):  # pragma: no cover - every Linux has it
    _IOV_MAX = 16
if _IOV_MAX <= 0:  # pragma: no cover
    _IOV_MAX = 16


def default_sync() -> SyncFn:
    # fdatasync is enough: it flushes the data and the file size, which is all
    # an append changes; mtime is not worth a second journal write.
    return getattr(os, "fdatasync", os.fsync)


@dataclass(slots=True)
class MessageIn:
    """A record to append, built on the loop; its header is made on the thread."""

    stamp: int
    tag: int
    arrival_us: int
    envelope: bytes
    blocks: Sequence[Block]


@dataclass(slots=True)
class Placed:
    seq: int
    offset: int
    total: int


@dataclass(slots=True)
class StateIn:
    seq: int
    record: bytes


@dataclass(slots=True)
class BatchResult:
    messages: list[Placed | OSError]
    states: list[OSError | None]
    retired: list[int]  # segments no longer appended to (candidates for deletion)


@dataclass(slots=True)
class _File:
    seq: int
    fd: int
    size: int


class SegmentWriter:
    def __init__(
        self,
        directory: Path,
        next_seq: int,
        segment_size: int,
        write: WriteFn | None = None,
        sync: SyncFn | None = None,
    ) -> None:
        self.directory = directory
        self.next_seq = next_seq
        self.segment_size = segment_size
        self._write = write or os.pwritev
        self._sync = sync or default_sync()
        self.active: _File | None = None
        self._states: dict[int, _File] = {}

    # -- files ---------------------------------------------------------------

    def _sync_dir(self) -> None:
        fsync_dir(self.directory)  # directories: fsync, never the injected data sync

    def _create(self, name: str) -> int:
        path = self.directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            self._sync_dir()
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        return fd

    def _segment(self, retired: list[int]) -> _File:
        """The segment to append to, starting a new one when the current is full."""
        if self.active is not None and self.active.size < self.segment_size:
            return self.active
        while True:
            seq = self.next_seq
            try:
                fd = self._create(segment_name(seq))
            except FileExistsError:  # a leftover we did not list: never write into it
                self.next_seq += 1
                continue
            break
        self.next_seq = seq + 1
        if self.active is not None:
            os.close(self.active.fd)
            retired.append(self.active.seq)
        self.active = _File(seq, fd, 0)
        return self.active

    def _write_all(self, fd: int, buffers: list[memoryview], offset: int) -> None:
        i = 0
        while i < len(buffers):
            n = self._write(fd, buffers[i : i + _IOV_MAX], offset)
            if n <= 0:
                raise OSError(errno.EIO, "write returned no progress")
            offset += n
            while n:
                if n >= len(buffers[i]):
                    n -= len(buffers[i])
                    i += 1
                else:
                    buffers[i] = buffers[i][n:]
                    n = 0

    def _append(self, file: _File, buffers: list[memoryview], end: int) -> None:
        """Write and sync, then move `file.size` to `end`.  On failure cut the
        file back to `file.size` and re-raise; if the cut fails too, mark the
        file broken (size -1): the caller stops appending to it."""
        try:
            self._write_all(file.fd, buffers, file.size)
            self._sync(file.fd)
        except OSError:
            try:
                os.ftruncate(file.fd, file.size)
                self._sync(file.fd)
            except OSError:
                file.size = -1
            raise
        file.size = end

    # -- the batch -----------------------------------------------------------

    def write_batch(self, messages: list[MessageIn], states: list[StateIn]) -> BatchResult:
        result = BatchResult([], [None] * len(states), [])
        if messages:
            result.messages = self._write_messages(messages, result.retired)
        if states:
            self._write_states(states, result.states)
        return result

    def _write_messages(
        self, messages: list[MessageIn], retired: list[int]
    ) -> list[Placed | OSError]:
        try:
            seg = self._segment(retired)
        except OSError as exc:
            return [exc] * len(messages)
        buffers: list[memoryview] = []
        placed: list[Placed | OSError] = []
        offset = seg.size
        for m in messages:
            head = encode_header(m.stamp, m.tag, m.arrival_us, m.envelope, m.blocks)
            buffers.append(memoryview(head))
            buffers.append(memoryview(m.envelope))
            total = len(head) + len(m.envelope)
            for block in m.blocks:
                view = memoryview(block).cast("B")
                if view.nbytes:
                    buffers.append(view)
                    total += view.nbytes
            placed.append(Placed(seg.seq, offset, total))
            offset += total
        try:
            self._append(seg, buffers, offset)
        except OSError as exc:
            if seg.size < 0:
                # The cut failed too: append no more here; recovery cuts the tail.
                # (If the write itself got through, the batch may come back as
                # complete records: a duplicate after a 451, never a loss.)
                os.close(seg.fd)
                self.active = None
                retired.append(seg.seq)
            return [exc] * len(messages)
        return placed

    def _write_states(self, states: list[StateIn], out: list[OSError | None]) -> None:
        by_seq: dict[int, list[int]] = {}
        for i, s in enumerate(states):
            by_seq.setdefault(s.seq, []).append(i)
        for seq, idxs in by_seq.items():
            try:
                file = self._states.get(seq)
                if file is None:
                    fd = os.open(
                        self.directory / state_name(seq),
                        os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC,
                        0o600,
                    )
                    self._states[seq] = file = _File(seq, fd, 0)
                    self._sync_dir()
                    # Whole records only: a tail left by a failed cut is dropped.
                    size = os.fstat(fd).st_size
                    file.size = size - size % STATE_SIZE
                    if file.size != size:
                        os.ftruncate(fd, file.size)
                raw = b"".join(states[i].record for i in idxs)
                try:
                    self._append(file, [memoryview(raw)], file.size + len(raw))
                except OSError:
                    if file.size < 0:  # reopened, and its tail trimmed, next time
                        os.close(file.fd)
                        del self._states[seq]
                    raise
            except OSError as exc:
                for i in idxs:
                    out[i] = exc

    # -- reclaim and shutdown ------------------------------------------------

    def delete(self, seqs: Sequence[int]) -> list[int]:
        """Delete finished segments (segment first, then its state file: a state
        file alone is an orphan recovery removes; a segment alone would be
        delivered again, a duplicate but no loss)."""
        deleted = []
        for seq in seqs:
            if self.active is not None and self.active.seq == seq:
                continue
            file = self._states.pop(seq, None)
            if file is not None:
                os.close(file.fd)
            try:
                (self.directory / segment_name(seq)).unlink(missing_ok=True)
                (self.directory / state_name(seq)).unlink(missing_ok=True)
            except OSError:
                continue
            deleted.append(seq)
        if deleted:
            # A deletion undone by a crash is a duplicate delivery, not a loss.
            with contextlib.suppress(OSError):
                self._sync_dir()
        return deleted

    def close(self) -> None:
        if self.active is not None:
            os.close(self.active.fd)
            self.active = None
        for file in self._states.values():
            os.close(file.fd)
        self._states.clear()
