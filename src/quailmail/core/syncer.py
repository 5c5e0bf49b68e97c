"""fsync off the event loop, without the thread pool's cost per call.

`asyncio.to_thread` per delivery was measured to cost about 0.6 ms of CPU a
message in local delivery (about a third of it): each call is a
`concurrent.futures.Future` with its own Condition, a wake-up of an idle
worker, and Python code in the worker contending with the event loop for
the GIL at every system call.  Here the event loop collects the requests
of one loop iteration into a batch; a few daemon threads take whole
batches from a `queue.SimpleQueue` (written in C) and do little but the
system calls, and answer a batch with one `call_soon_threadsafe`.

Two requests:

- `write_fsync_close(fd, chunks)`: write the chunks, fsync, close.  The fd
  is the syncer's from then on, closed whatever happens, so a cancelled
  caller never closes a descriptor a thread is still using.
- `fsync_dir(path)`: make a directory's entries durable.  Requests for one
  directory in one batch share one fsync: each was asked after its own
  change (a link into `new/`), so a sync begun after the batch was handed
  over covers them all (group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from quailmail.core.files import fsync_dir, write_all

THREADS = 2  # batches in parallel: a disk takes more than one flush at a time

_FILE = 0
_DIR = 1

# (kind, target, chunks, future)
_Item = tuple[int, Any, Sequence[bytes], "asyncio.Future[None]"]


class Syncer:
    def __init__(self, threads: int = THREADS) -> None:
        self._threads = threads
        self._started = 0
        self._lock = threading.Lock()
        self._requests: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, list[_Item]]] = (
            queue.SimpleQueue()
        )
        self._pending: dict[asyncio.AbstractEventLoop, list[_Item]] = {}

    async def write_fsync_close(self, fd: int, chunks: Sequence[bytes]) -> None:
        """Write `chunks` to `fd`, fsync it and close it (the fd is ours now)."""
        try:
            future = self._ask(_FILE, fd, chunks)
        except BaseException:
            os.close(fd)
            raise
        await future

    async def fsync_dir(self, path: str | os.PathLike[str]) -> None:
        await self._ask(_DIR, os.fspath(path), ())

    def _ask(self, kind: int, target: Any, chunks: Sequence[bytes]) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        if self._started < self._threads:
            self._start()
        future: asyncio.Future[None] = loop.create_future()
        batch = self._pending.get(loop)
        if batch is None:
            batch = self._pending[loop] = []
            loop.call_soon(self._send, loop)
        batch.append((kind, target, chunks, future))
        return future

    def _start(self) -> None:
        with self._lock:
            while self._started < self._threads:
                self._started += 1
                threading.Thread(target=self._work, name="quail-syncer", daemon=True).start()

    def _send(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._pending.pop(loop, None)
        if batch:
            self._requests.put((loop, batch))

    def _work(self) -> None:
        while True:
            loop, batch = self._requests.get()
            results: list[BaseException | None] = []
            dirs: dict[str, BaseException | None] = {}
            for kind, target, chunks, _ in batch:
                if kind == _DIR:
                    if target not in dirs:
                        dirs[target] = _run(fsync_dir, target)
                    results.append(dirs[target])
                else:
                    results.append(_run(_write_file, target, chunks))
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits
                loop.call_soon_threadsafe(_answer, batch, results)


def _run(job: Callable[..., None], *args: Any) -> BaseException | None:
    try:
        job(*args)
    except BaseException as exc:  # handed to the waiting coroutine
        return exc
    return None


def _write_file(fd: int, chunks: Sequence[bytes]) -> None:
    try:
        for chunk in chunks:
            write_all(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)


def _answer(batch: list[_Item], results: list[BaseException | None]) -> None:
    for (_, _, _, future), error in zip(batch, results, strict=True):
        if future.done():  # the waiter was cancelled
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


SYNCER = Syncer()
