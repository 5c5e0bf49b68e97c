"""The durable queue: round trips, group commit, recovery, reclaim, disk full."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from quailmail.queue import Outcome, Queue, QueueError, make_id, parse_id
from quailmail.queue.record import HEADER_SIZE, Block
from quailmail.queue.segment import scan_segment

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.seg"))


async def put_many(q: Queue, n: int, size: int = 100) -> list[str]:
    return list(
        await asyncio.gather(
            *(
                q.put(f"s{i}@example.com", [f"r{i}@example.org"], bytes([i % 256]) * size)
                for i in range(n)
            )
        )
    )


class CountingSync:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, fd: int) -> None:
        self.calls += 1
        os.fdatasync(fd)


# -- round trips ---------------------------------------------------------------


def test_round_trip_binary_utf8_many_recipients_large(tmp_path: Path) -> None:
    binary = bytes(range(256)) * 4 + b"\r\n.\r\n\0bare\rcr\nlf"
    large = os.urandom(10 * 1024 * 1024)
    rcpts = [f"user{i}@example.org" for i in range(1000)]
    utf8_sender = "jörg@bücher.example"
    odd_sender = "raw\udcffbyte@example.com"  # a non-UTF-8 byte, as surrogateescape
    meta = {"helo": "mail.example.com", "client": "192.0.2.1", "ünï": "cödé"}

    async def main() -> dict[str, tuple[str, list[str], bytes]]:
        q = Queue.open(tmp_path / "queue")
        sent = {}
        for sender, to, data in [
            (utf8_sender, ["δοκιμή@παράδειγμα.δοκιμή", "用户@例子.广告"], binary),
            ("", rcpts, b"many recipients\r\n"),
            (odd_sender, ["a@b"], large),
            ("blocks@example.com", ["a@b"], b"one block"),
        ]:
            qid = await q.put(sender, to, data, meta=meta)
            sent[qid] = (sender, to, data)
        blocks: list[Block] = [b"Subject: x\r\n", bytearray(b"\r\n"), memoryview(b"body\r\n")]
        qid = await q.put("b@example.com", ["c@d"], blocks)
        sent[qid] = ("b@example.com", ["c@d"], b"Subject: x\r\n\r\nbody\r\n")
        for qid, (sender, to, data) in sent.items():
            assert await q.read(qid) == data
            m = q.get(qid)
            assert (m.sender, list(m.recipients), m.size) == (sender, to, len(data))
        await q.close()
        return sent

    sent = run(main())
    q = Queue.open(tmp_path / "queue")  # after reopening: the same, from disk
    for qid, (sender, to, data) in sent.items():
        m = q.get(qid)
        assert (m.sender, list(m.recipients)) == (sender, to)
        assert q.read_sync(qid) == data
        assert m.pending == tuple(range(len(to)))
    assert q.get(next(iter(sent))).meta == meta
    assert q.stats()["recipients"] == 2 + 1000 + 1 + 1 + 1
    run(q.close())


def test_ids_unique_sortable_under_concurrency(tmp_path: Path) -> None:
    async def main() -> list[str]:
        q = Queue.open(tmp_path)
        ids = await put_many(q, 500, size=10)
        ids += [await q.put("a@b", ["c@d"], b"x") for _ in range(20)]
        await q.close()
        return ids

    ids = run(main())
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)  # put order is id order
    for qid in ids:
        assert len(qid) == 14 and qid.isalnum() and qid == qid.lower()
        assert make_id(*parse_id(qid)) == qid
    with pytest.raises(ValueError, match="not a queue id"):
        parse_id("../etc/passwd!")


def test_group_commit_shares_fsyncs(tmp_path: Path) -> None:
    sync = CountingSync()

    async def main() -> list[str]:
        q = Queue.open(tmp_path, sync=sync)
        ids = await put_many(q, 100)
        await q.close()
        return ids

    ids = run(main())
    assert len(set(ids)) == 100
    assert 1 <= sync.calls <= 5, sync.calls  # 100 durable puts, a handful of flushes
    assert Queue.open(tmp_path, readonly=True).stats()["messages"] == 100


def test_sequential_puts_each_sync(tmp_path: Path) -> None:
    sync = CountingSync()

    async def main() -> None:
        q = Queue.open(tmp_path, sync=sync)
        for _ in range(5):
            await q.put("a@b", ["c@d"], b"x")
        await q.close()

    run(main())
    assert sync.calls == 5  # nobody to share with: each put waits for its own flush


# -- recovery ------------------------------------------------------------------


def three_messages(path: Path) -> list[str]:
    async def main() -> list[str]:
        q = Queue.open(path)
        ids = [await q.put("a@b", ["c@d"], bytes([65 + i]) * 1000) for i in range(3)]
        await q.close()
        return ids

    return run(main())


def test_torn_tail_is_cut(tmp_path: Path) -> None:
    ids = three_messages(tmp_path)
    (seg,) = segments(tmp_path)
    size = seg.stat().st_size
    record = size // 3
    os.truncate(seg, size - record // 2)  # a crash halfway through the third record
    readonly = Queue.open(tmp_path, readonly=True)  # sees it, changes nothing
    assert [m.id for m in readonly.messages()] == ids[:2]
    assert seg.stat().st_size == size - record // 2
    q = Queue.open(tmp_path)
    assert [m.id for m in q.messages()] == ids[:2]
    assert q.torn_bytes == record - record // 2
    assert seg.stat().st_size == 2 * record  # nothing half-written left
    assert q.read_sync(ids[1]) == b"B" * 1000
    run(q.close())


def test_torn_header_and_garbage_tail(tmp_path: Path) -> None:
    ids = three_messages(tmp_path)
    (seg,) = segments(tmp_path)
    with open(seg, "ab") as f:
        f.write(b"qREC\x01\x00")  # a header cut short
    q = Queue.open(tmp_path)
    assert [m.id for m in q.messages()] == ids
    run(q.close())
    (seg,) = segments(tmp_path)
    assert scan_segment(seg, repair=False).torn == 0


def test_corrupt_crc_detected(tmp_path: Path) -> None:
    ids = three_messages(tmp_path)
    (seg,) = segments(tmp_path)
    size = seg.stat().st_size
    with open(seg, "r+b") as f:  # one bit of the second message's data rots
        f.seek(size // 3 + HEADER_SIZE + 100)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 1]))
    q = Queue.open(tmp_path)
    # Valid records after a bad one: damage, not a torn tail.  The file is kept
    # whole (never reclaimed) and every valid record is still queued.
    assert [m.id for m in q.messages()] == [ids[0], ids[2]]
    assert q.stats()["damaged_segments"] == 1
    assert seg.stat().st_size == size
    run(q.close())
    assert seg.exists()


def test_corruption_found_when_reading(tmp_path: Path) -> None:
    ids = three_messages(tmp_path)
    q = Queue.open(tmp_path)
    (seg,) = segments(tmp_path)
    with open(seg, "r+b") as f:
        f.seek(HEADER_SIZE + 50)
        f.write(b"Z")
    with pytest.raises(QueueError, match="corrupt") as info:
        q.read_sync(ids[0])
    assert not info.value.temporary
    run(q.close())


def test_state_log_survives_reopen_and_torn_state(tmp_path: Path) -> None:
    async def first() -> list[str]:
        q = Queue.open(tmp_path)
        ids = [await q.put("a@b", ["x@y", "z@w"], b"m") for _ in range(3)]
        await q.mark_done(ids[0], 0, Outcome.DELIVERED)
        await q.mark_done(ids[1], 1, Outcome.BOUNCED)
        await q.mark_done(ids[1], 0, Outcome.DELIVERED)
        await q.mark_done(ids[0], 0, Outcome.DELIVERED)  # again: nothing to do
        with pytest.raises(KeyError):
            await q.mark_done(ids[1], 0, Outcome.DELIVERED)  # gone: all done
        with pytest.raises(IndexError):
            await q.mark_done(ids[2], 2, Outcome.DELIVERED)
        await q.close()
        return ids

    ids = run(first())
    (state,) = tmp_path.glob("*.state")
    with open(state, "ab") as f:
        f.write(b"\x01\x02\x03")  # a torn state append
    q = Queue.open(tmp_path)
    assert [m.id for m in q.messages()] == [ids[0], ids[2]]
    assert q.get(ids[0]).pending == (1,)
    assert q.get(ids[0]).done == {0: Outcome.DELIVERED}
    assert q.stats() == {
        "messages": 2,
        "recipients": 3,
        "bytes": 2,
        "segments": 1,
        "damaged_segments": 0,
    }
    assert state.stat().st_size % 24 == 0
    run(q.close())


def test_rotation_and_reclaim(tmp_path: Path) -> None:
    async def main() -> None:
        q = Queue.open(tmp_path, segment_size=10_000)
        ids = [await q.put("a@b", ["c@d", "e@f"], b"x" * 4096) for _ in range(12)]
        assert len(segments(tmp_path)) >= 4
        assert q.stats()["segments"] == len(segments(tmp_path))
        for qid in ids[:6]:
            await q.mark_done(qid, 0, Outcome.DELIVERED)
            await q.mark_done(qid, 1, Outcome.BOUNCED)
        await q.drain()
        left = {m.seq for m in segments_of(q, ids[6:])}
        # Every segment holding only finished messages is gone, state file too.
        assert {int(p.stem) for p in segments(tmp_path)} == left
        assert {int(p.stem) for p in tmp_path.glob("*.state")} <= left
        for qid in ids[6:]:
            await asyncio.gather(
                q.mark_done(qid, 0, Outcome.DELIVERED), q.mark_done(qid, 1, Outcome.DELIVERED)
            )
        await q.drain()
        assert q.stats()["messages"] == 0
        assert len(segments(tmp_path)) <= 1  # the one being appended to
        await q.close()
        assert segments(tmp_path) == []  # closed: that one goes too
        assert list(tmp_path.glob("*.state")) == []

    def segments_of(q: Queue, ids: Sequence[str]) -> list[Any]:
        return [q._index[i] for i in ids]

    run(main())


def test_second_writer_is_refused(tmp_path: Path) -> None:
    q = Queue.open(tmp_path)
    with pytest.raises(QueueError, match="in use"):
        Queue.open(tmp_path)
    Queue.open(tmp_path, readonly=True)  # readers are welcome
    run(q.close())
    run(Queue.open(tmp_path).close())  # released on close


def test_unusable_path_is_temporary(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(QueueError) as info:
        Queue.open(tmp_path / "file" / "queue")
    assert info.value.temporary and info.value.enhanced == "4.3.0"
    assert "\n" not in info.value.reason


# -- disk full and I/O errors --------------------------------------------------


def failing_write(fail: Callable[[], bool], err: int) -> Callable[[int, Sequence[Any], int], int]:
    """pwritev that, while `fail()` holds, writes half of what it is given, then raises."""
    state = {"half_done": False}

    def write(fd: int, buffers: Sequence[Any], offset: int) -> int:
        if fail():
            if not state["half_done"]:
                state["half_done"] = True
                n = os.pwritev(fd, buffers[:1], offset)
                return max(1, n // 2) if n > 1 else n
            state["half_done"] = False
            raise OSError(err, os.strerror(err))
        return os.pwritev(fd, buffers, offset)

    return write


@pytest.mark.parametrize(("err", "enhanced"), [(errno.ENOSPC, "4.3.1"), (errno.EIO, "4.3.0")])
def test_write_failure_leaves_nothing_behind(tmp_path: Path, err: int, enhanced: str) -> None:
    full = False

    async def main() -> tuple[list[str], str]:
        nonlocal full
        q = Queue.open(tmp_path, write=failing_write(lambda: full, err))
        ok = await put_many(q, 5)
        (seg,) = segments(tmp_path)
        good = seg.stat().st_size
        full = True
        results = await asyncio.gather(
            *(q.put("a@b", ["c@d"], b"y" * 5000) for _ in range(10)), return_exceptions=True
        )
        for r in results:
            assert isinstance(r, QueueError)
            assert r.temporary and r.enhanced == enhanced
        assert seg.stat().st_size == good  # the batch was cut back off
        assert scan_segment(seg, repair=False).torn == 0
        assert q.stats()["messages"] == 5
        full = False  # space returns: the queue works again
        later = await q.put("a@b", ["c@d"], b"after")
        await q.close()
        return ok, later

    ok, later = run(main())
    q = Queue.open(tmp_path)
    assert [m.id for m in q.messages()] == [*ok, later]
    assert q.torn_bytes == 0
    run(q.close())


@pytest.mark.parametrize("failures", [1, 2])
def test_sync_failure_fails_the_batch(tmp_path: Path, failures: int) -> None:
    """fdatasync fails (EIO); with 2, the sync after the cut fails as well, and
    the segment is given up: later records go to a new one."""
    fail = 0

    def sync(fd: int) -> None:
        nonlocal fail
        if fail:
            fail -= 1
            raise OSError(errno.EIO, "Input/output error")
        os.fdatasync(fd)

    async def main() -> None:
        nonlocal fail
        q = Queue.open(tmp_path, sync=sync)
        await q.put("a@b", ["c@d"], b"kept")
        fail = failures
        with pytest.raises(QueueError, match="Input/output error"):
            await q.put("a@b", ["c@d"], b"lost")
        await q.put("a@b", ["c@d"], b"kept too")
        assert len(segments(tmp_path)) == failures
        await q.close()

    run(main())
    q = Queue.open(tmp_path)
    found = sorted(q.read_sync(m.id) for m in q.messages())
    # A write that got through before its sync failed may come back: a
    # duplicate after the 451, never a loss.
    assert found in ([b"kept", b"kept too"], [b"kept", b"kept too", b"lost"])
    run(q.close())


def test_real_full_tmpfs(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:

        async def main() -> None:
            q = Queue.open(mnt / "queue", segment_size=200_000)
            ids = []
            with pytest.raises(QueueError) as info:
                for _ in range(100):
                    ids.append(await q.put("a@b", ["c@d"], os.urandom(50_000)))
            assert info.value.temporary and info.value.enhanced == "4.3.1"
            assert 5 < len(ids) < 25
            for seg in segments(mnt / "queue"):
                assert scan_segment(seg, repair=False).torn == 0
            for qid in ids:  # delivery frees space
                await q.mark_done(qid, 0, Outcome.DELIVERED)
            await q.put("a@b", ["c@d"], os.urandom(50_000))
            assert q.stats()["messages"] == 1
            await q.close()

        run(main())
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_qmails_own_queue_is_named_not_opened(tmp_path: Path) -> None:
    # A root moved over from qmail may still hold qmail's queue where ours goes.
    qmail = tmp_path / "queue"
    for name in ("mess", "info", "lock", "todo", "local", "remote", "bounce", "intd", "pid"):
        (qmail / name).mkdir(parents=True)
    for readonly in (False, True):
        with pytest.raises(QueueError, match="is qmail's queue") as refused:
            Queue.open(qmail, readonly=readonly)
        assert not refused.value.temporary
    assert sorted(p.name for p in qmail.iterdir()) == sorted(
        ["mess", "info", "lock", "todo", "local", "remote", "bounce", "intd", "pid"]
    )  # nothing of ours written beside it
