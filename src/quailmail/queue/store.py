"""The durable queue: put() returns only when the message is fsynced.

One Queue per directory and process (an flock keeps a second writer out).
All methods are called from one event loop.  Writes go to one writer thread
in batches (group commit): while the thread writes and fsyncs a batch, new
records wait in `_pending` and go together in the next one, so concurrent
transactions share one flush instead of queueing behind each other.

The contract the SMTP receiver builds on (ARCHITECTURE.md, "250 means
durable"): a record is in the queue only if it was completely written and
fdatasynced, in a file whose directory entry is fsynced; put() returns its id
exactly then, and never before.  A put() that raises QueueError left nothing
of its message behind.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quailmail.core.clock import Clock, SystemClock
from quailmail.queue.record import (
    TAG_MASK,
    Block,
    FormatError,
    Outcome,
    encode_envelope,
    encode_state,
    make_id,
    parse_id,
)
from quailmail.queue.segment import (
    list_files,
    read_data,
    read_states,
    scan_segment,
    segment_name,
    state_name,
)
from quailmail.queue.writer import (
    MessageIn,
    Placed,
    SegmentWriter,
    StateIn,
    SyncFn,
    WriteFn,
)

DEFAULT_SEGMENT_SIZE = 64 << 20
_FULL = {errno.ENOSPC, errno.EDQUOT}


# What qmail's own queue (qmail-queue(8), /var/qmail/queue) holds: a root
# moved over from qmail may still have it where our queue would go.
_QMAIL_QUEUE = ("mess", "info", "lock", "todo")


class QueueError(Exception):
    """The queue could not take or give a message.  `temporary`: answer 4xx
    (the SMTP receiver says `451 {enhanced} {reason}`); `enhanced` is 4.3.1
    (mail system full, RFC 3463) when the disk or quota is full, else 4.3.0."""

    def __init__(self, reason: str, *, temporary: bool = True, enhanced: str = "4.3.0") -> None:
        super().__init__(reason)
        self.reason = reason
        self.temporary = temporary
        self.enhanced = enhanced

    @classmethod
    def from_os(cls, what: str, exc: OSError) -> QueueError:
        full = exc.errno in _FULL
        text = exc.strerror or str(exc)
        return cls(f"{what}: {text}", enhanced="4.3.1" if full else "4.3.0")


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    id: str
    sender: str
    recipients: tuple[str, ...]
    size: int  # bytes of message data
    arrival: float  # seconds since the epoch
    pending: tuple[int, ...]  # indexes of recipients not yet done
    done: dict[int, Outcome]
    meta: dict[str, str]


class _Entry:
    __slots__ = (
        "arrival_us",
        "left",
        "meta",
        "offset",
        "outcomes",
        "recipients",
        "sender",
        "seq",
        "size",
        "total",
    )

    def __init__(
        self,
        *,
        seq: int,
        offset: int,
        total: int,
        sender: str,
        recipients: tuple[str, ...],
        meta: dict[str, str],
        arrival_us: int,
        size: int,
    ) -> None:
        self.seq = seq
        self.offset = offset
        self.total = total
        self.sender = sender
        self.recipients = recipients
        self.meta = meta
        self.arrival_us = arrival_us
        self.size = size
        self.outcomes = bytearray(len(recipients))  # 0 pending, else Outcome
        self.left = len(recipients)

    def done(self, index: int, outcome: Outcome) -> bool:
        """Record one recipient's end; True when it was the last one pending."""
        if self.outcomes[index]:
            return False
        self.outcomes[index] = outcome
        self.left -= 1
        return self.left == 0


@dataclass(slots=True)
class _PendingMessage:
    item: MessageIn
    future: asyncio.Future[Placed]
    recipients: tuple[str, ...]
    sender: str
    meta: dict[str, str]
    size: int


@dataclass(slots=True)
class _PendingState:
    item: StateIn
    future: asyncio.Future[None]
    qid: str
    index: int
    outcome: Outcome


class Queue:
    def __init__(self, path: Path, readonly: bool, clock: Clock) -> None:
        self.path = path
        self.readonly = readonly
        self._clock = clock
        self._index: dict[str, _Entry] = {}
        self._live: dict[int, int] = {}  # segment -> messages with a recipient pending
        self._damaged: set[int] = set()
        self._last_stamp = 0
        self._tag = os.getpid() & TAG_MASK
        self._lock_fd: int | None = None
        self._wait = False
        self._writer: SegmentWriter | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._messages: list[_PendingMessage] = []
        self._states: list[_PendingState] = []
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False
        # Called with the id of every message put() made durable (the
        # scheduler's doorbell), from the event loop.
        self.on_put: Callable[[str], None] | None = None
        self.torn_bytes = 0  # cut off by recovery (or seen, when read-only)

    # -- opening and recovery -----------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        write: WriteFn | None = None,
        sync: SyncFn | None = None,
        clock: Clock | None = None,
        wait: bool = False,
    ) -> Queue:
        """Open (creating it unless `readonly`) and recover the queue at `path`.

        Read-only opens take no lock and change nothing: `quail queue` uses
        them beside a running server, whose unfinished tail they skip.
        `wait`: block until another writer lets go of the queue instead of
        failing (`quail inject` processes take turns on their shard)."""
        queue = cls(Path(path), readonly, clock or SystemClock())
        queue._wait = wait
        try:
            queue._recover(segment_size, write, sync)
        except OSError as exc:
            queue._release()
            raise QueueError.from_os(f"cannot open queue {path}", exc) from None
        except QueueError:
            queue._release()
            raise
        return queue

    def _recover(self, segment_size: int, write: WriteFn | None, sync: SyncFn | None) -> None:
        repair = not self.readonly
        if all((self.path / name).is_dir() for name in _QMAIL_QUEUE):
            raise QueueError(
                f"{self.path} is qmail's queue (mess/, info/, lock/ ...), not quailmail's: "
                "let qmail-send deliver what it holds, then move it aside",
                temporary=False,
            )
        if self.readonly:
            if not self.path.is_dir():
                raise QueueError(f"no queue at {self.path}", temporary=False)
        else:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._lock_fd = os.open(
                self.path / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            try:
                flags = fcntl.LOCK_EX if self._wait else fcntl.LOCK_EX | fcntl.LOCK_NB
                fcntl.flock(self._lock_fd, flags)
            except BlockingIOError:
                raise QueueError(f"queue {self.path} is in use by another process") from None
        segs, states = list_files(self.path)
        for seq in segs:
            try:
                scan = scan_segment(self.path / segment_name(seq), repair=repair)
            except FileNotFoundError:  # deleted by the running server meanwhile
                continue
            self.torn_bytes += scan.torn
            if scan.damaged:
                self._damaged.add(seq)
            self._live[seq] = 0
            for found in scan.records:
                h, env = found.header, found.envelope
                self._index[h.qid] = _Entry(
                    seq=seq,
                    offset=found.offset,
                    total=h.total,
                    sender=env.sender,
                    recipients=env.recipients,
                    meta=env.meta,
                    arrival_us=h.arrival_us,
                    size=h.data_size,
                )
                self._live[seq] += 1
                self._last_stamp = max(self._last_stamp, h.stamp)
        for seq in states:
            if seq not in self._live:
                if repair:  # orphan: its segment was deleted, a crash kept this
                    (self.path / state_name(seq)).unlink(missing_ok=True)
                continue
            try:
                records = read_states(self.path / state_name(seq), repair=repair)
            except FileNotFoundError:
                continue
            for stamp, tag, index, outcome in records:
                qid = make_id(stamp, tag)
                entry = self._index.get(qid)
                if (
                    entry is not None
                    and index < len(entry.recipients)
                    and entry.done(index, outcome)
                ):
                    del self._index[qid]
                    self._live[entry.seq] -= 1
        if self.readonly:
            return
        self._writer = SegmentWriter(self.path, max(segs, default=0) + 1, segment_size, write, sync)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="quail-queue")
        self._forget(self._writer.delete(self._reclaimable()))

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # -- group commit ---------------------------------------------------------

    def _kick(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._writer is not None and self._executor is not None
        try:
            while self._messages or self._states:
                messages, self._messages = self._messages, []
                states, self._states = self._states, []
                try:
                    result = await loop.run_in_executor(
                        self._executor,
                        self._writer.write_batch,
                        [m.item for m in messages],
                        [s.item for s in states],
                    )
                except Exception as exc:  # a bug, not the disk: still 451, never 250
                    error = QueueError(f"queue write failed: {exc!r}")
                    waiting: list[asyncio.Future[Any]] = [m.future for m in messages]
                    waiting += [s.future for s in states]
                    for f in waiting:
                        if not f.done():
                            f.set_exception(error)
                    continue
                for m, placed in zip(messages, result.messages, strict=True):
                    self._placed(m, placed)
                for s, err in zip(states, result.states, strict=True):
                    self._state_written(s, err)
                reclaim = self._reclaimable()
                if reclaim:
                    self._forget(
                        await loop.run_in_executor(self._executor, self._writer.delete, reclaim)
                    )
        finally:
            self._flusher = None

    def _placed(self, m: _PendingMessage, placed: Placed | OSError) -> None:
        if isinstance(placed, OSError):
            if not m.future.done():
                m.future.set_exception(QueueError.from_os("queue write failed", placed))
            return
        # Durable from here on, even if the waiter was cancelled: it is queued.
        qid = make_id(m.item.stamp, m.item.tag)
        self._index[qid] = _Entry(
            seq=placed.seq,
            offset=placed.offset,
            total=placed.total,
            sender=m.sender,
            recipients=m.recipients,
            meta=m.meta,
            arrival_us=m.item.arrival_us,
            size=m.size,
        )
        self._live[placed.seq] = self._live.get(placed.seq, 0) + 1
        if not m.future.done():
            m.future.set_result(placed)
        if self.on_put is not None:
            self.on_put(qid)

    def _state_written(self, s: _PendingState, err: OSError | None) -> None:
        if err is not None:
            if not s.future.done():
                s.future.set_exception(QueueError.from_os("queue state write failed", err))
            return
        entry = self._index.get(s.qid)
        if entry is not None and entry.done(s.index, s.outcome):
            del self._index[s.qid]
            self._live[entry.seq] -= 1
        if not s.future.done():
            s.future.set_result(None)

    def _reclaimable(self) -> list[int]:
        """Segments with nothing pending that are not being appended to."""
        active = self._writer.active if self._writer is not None else None
        return [
            seq
            for seq, live in self._live.items()
            if live == 0 and seq not in self._damaged and (active is None or active.seq != seq)
        ]

    def _forget(self, deleted: Sequence[int]) -> None:
        for seq in deleted:
            self._live.pop(seq, None)

    def _check_writable(self) -> None:
        if self.readonly:
            raise QueueError("queue opened read-only", temporary=False)
        if self._closed:
            raise QueueError("queue is closed")

    # -- the API --------------------------------------------------------------

    async def put(
        self,
        sender: str,
        recipients: Sequence[str],
        data: Block | Sequence[Block],
        *,
        meta: dict[str, str] | None = None,
    ) -> str:
        """Queue one message; return its id once it is durable.

        `data` may be the blocks the receiver read, in order: they are written
        as they are (writev), not joined, and must not change until put()
        returns.  Raises QueueError (temporary) when the disk refuses."""
        self._check_writable()
        if not recipients:
            raise ValueError("a message needs at least one recipient")
        blocks = [data] if isinstance(data, (bytes, bytearray, memoryview)) else list(data)
        arrival_us = int(self._clock.now() * 1_000_000)
        # Ids are strictly increasing per queue; recovery starts past the last.
        stamp = self._last_stamp = max(arrival_us, self._last_stamp + 1)
        rcpts = tuple(recipients)
        env_meta = dict(meta or {})
        try:
            envelope = encode_envelope(sender, rcpts, env_meta)
        except UnicodeEncodeError as exc:
            raise ValueError(f"envelope is not encodable: {exc.reason}") from None
        item = MessageIn(stamp, self._tag, arrival_us, envelope, blocks)
        future: asyncio.Future[Placed] = asyncio.get_running_loop().create_future()
        size = sum(memoryview(b).nbytes for b in blocks)
        self._messages.append(_PendingMessage(item, future, rcpts, sender, env_meta, size))
        self._kick()
        await future
        return make_id(stamp, self._tag)

    async def mark_done(self, qid: str, index: int, outcome: Outcome) -> None:
        """Record, durably, that recipient `index` of message `qid` is done.
        When none of a message's recipients is pending it leaves the queue;
        when no message of a segment is, the segment file is deleted."""
        self._check_writable()
        entry = self._index.get(qid)
        if entry is None:
            raise KeyError(qid)
        if not 0 <= index < len(entry.recipients):
            raise IndexError(f"message {qid} has no recipient {index}")
        if entry.outcomes[index]:
            return
        stamp, tag = parse_id(qid)
        item = StateIn(entry.seq, encode_state(stamp, tag, index, outcome))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._states.append(_PendingState(item, future, qid, index, Outcome(outcome)))
        self._kick()
        await future

    def _message(self, qid: str, entry: _Entry) -> QueuedMessage:
        return QueuedMessage(
            id=qid,
            sender=entry.sender,
            recipients=entry.recipients,
            size=entry.size,
            arrival=entry.arrival_us / 1_000_000,
            pending=tuple(i for i, o in enumerate(entry.outcomes) if not o),
            done={i: Outcome(o) for i, o in enumerate(entry.outcomes) if o},
            meta=dict(entry.meta),
        )

    def messages(self) -> Iterator[QueuedMessage]:
        """Messages with a recipient pending, oldest first."""
        for qid, entry in list(self._index.items()):
            yield self._message(qid, entry)

    def get(self, qid: str) -> QueuedMessage:
        """The queued message `qid`; KeyError if it is not (or no longer) queued."""
        return self._message(qid, self._index[qid])

    def get_size(self, qid: str) -> int:
        """The data size of `qid` in bytes (KeyError if not queued)."""
        return self._index[qid].size

    def read_sync(self, qid: str) -> bytes:
        """The message data of `qid`, checked against its CRC (blocking)."""
        entry = self._index[qid]
        try:
            return read_data(self.path / segment_name(entry.seq), entry.offset, entry.total)
        except FileNotFoundError:
            raise KeyError(qid) from None
        except FormatError as exc:
            raise QueueError(f"message {qid} is corrupt: {exc}", temporary=False) from None
        except OSError as exc:
            raise QueueError.from_os(f"cannot read message {qid}", exc) from None

    async def read(self, qid: str) -> bytes:
        return await asyncio.to_thread(self.read_sync, qid)

    def stats(self) -> dict[str, int]:
        return {
            "messages": len(self._index),
            "recipients": sum(e.left for e in self._index.values()),
            "bytes": sum(e.size for e in self._index.values()),
            "segments": len(self._live),
            "damaged_segments": len(self._damaged),
        }

    async def drain(self) -> None:
        """Wait until every write asked for so far, and the reclaim it allows, is done."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)

    async def close(self) -> None:
        """Finish every pending write, delete finished segments, release the queue."""
        if self._closed:
            return
        self._closed = True
        await self.drain()
        if self._writer is not None and self._executor is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self._writer.close)
            self._forget(
                await loop.run_in_executor(self._executor, self._writer.delete, self._reclaimable())
            )
            self._executor.shutdown(wait=True)
        self._release()
