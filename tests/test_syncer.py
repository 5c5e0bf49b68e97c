"""core/syncer.py: fsync off the event loop, in batches, on real files."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from quailmail.core import syncer as sy
from quailmail.core.syncer import Syncer

from serverfixtures import wait_for


def _open(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def _closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def test_writes_fsyncs_and_closes(tmp_path: Path) -> None:
    syncer = Syncer()
    fd = _open(tmp_path / "f")

    async def go() -> None:
        await syncer.write_fsync_close(fd, [b"one ", b"two\n"])

    asyncio.run(go())
    assert (tmp_path / "f").read_bytes() == b"one two\n"
    assert _closed(fd)


def test_one_loop_iteration_is_one_batch_and_a_directory_is_synced_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs: list[str] = []
    real = sy.fsync_dir

    def counted(path: str) -> None:
        syncs.append(path)
        real(path)

    monkeypatch.setattr(sy, "fsync_dir", counted)
    syncer = Syncer(threads=1)

    async def go() -> None:
        await asyncio.gather(*(syncer.fsync_dir(tmp_path) for _ in range(10)))

    asyncio.run(go())
    assert syncs == [str(tmp_path)]


def test_an_error_reaches_the_waiter_and_the_fd_is_still_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncer = Syncer()
    fd = _open(tmp_path / "f")

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(sy.os, "fsync", failing)

    async def go() -> None:
        await syncer.write_fsync_close(fd, [b"x"])

    with pytest.raises(OSError, match="Input/output"):
        asyncio.run(go())
    assert _closed(fd)


def test_a_cancelled_waiter_leaves_the_fd_to_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller gives up while the thread is still writing: the thread
    finishes with the descriptor and closes it; nobody closes it twice."""
    started = threading.Event()
    release = threading.Event()
    real = sy.os.fsync

    def slow(fd: int) -> None:
        started.set()
        release.wait(5)
        real(fd)

    monkeypatch.setattr(sy.os, "fsync", slow)
    syncer = Syncer()
    fd = _open(tmp_path / "f")

    async def go() -> None:
        task = asyncio.get_running_loop().create_task(syncer.write_fsync_close(fd, [b"data"]))
        await asyncio.to_thread(started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not _closed(fd)  # the thread still has it
        release.set()

    asyncio.run(go())
    wait_for(lambda: _closed(fd), timeout=5, what="the thread closing the fd")
    assert (tmp_path / "f").read_bytes() == b"data"


def test_one_syncer_serves_successive_event_loops(tmp_path: Path) -> None:
    syncer = Syncer()
    for i in range(3):
        fd = _open(tmp_path / f"f{i}")

        async def go(fd: int = fd, i: int = i) -> None:
            await syncer.write_fsync_close(fd, [b"%d" % i])
            await syncer.fsync_dir(tmp_path)

        asyncio.run(go())
    assert sorted(p.read_bytes() for p in tmp_path.iterdir()) == [b"0", b"1", b"2"]
