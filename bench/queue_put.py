"""Durable puts per second: quailmail's queue beside one-file-per-message.

    .venv/bin/python bench/queue_put.py [--dir DIR] [--seconds S]

For concurrency 1, 10 and 50, as many coroutines as that put 4 KiB messages
in a loop for S seconds into a fresh queue on the real disk (DIR, default a
directory under the current one, so not a tmpfs), with real fdatasync.
Beside it, in the same run, the naive writer Postfix and qmail resemble: per
message, create a file, write envelope and data, fsync it, rename it into
place and fsync the directory (run in a thread pool of the same size, so the
loop is not blocked).  Prints puts/s and syncs per put for both.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from quailmail.queue import Queue

MESSAGE = (b"Subject: bench\r\n\r\n" + b"x" * 76 + b"\r\n") * 52  # ~4 KiB
RECIPIENTS = ["rcpt@example.org"]


async def quail(directory: Path, concurrency: int, seconds: float) -> tuple[float, float]:
    syncs = 0

    def sync(fd: int) -> None:
        nonlocal syncs
        syncs += 1
        os.fdatasync(fd)

    queue = Queue.open(directory, sync=sync)
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await queue.put("sender@example.com", RECIPIENTS, MESSAGE)
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    await queue.close()
    return done / elapsed, syncs / max(done, 1)


def naive_put(directory: Path, n: int) -> None:
    tmp = directory / f"tmp.{n}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"Fsender@example.com\0Trcpt@example.org\0\0" + MESSAGE)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, directory / f"msg.{n}")
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


async def naive(directory: Path, concurrency: int, seconds: float) -> tuple[float, float]:
    directory.mkdir()
    loop = asyncio.get_running_loop()
    done = 0
    counter = 0
    deadline = time.perf_counter() + seconds
    with ThreadPoolExecutor(concurrency) as pool:

        async def worker() -> None:
            nonlocal done, counter
            while time.perf_counter() < deadline:
                counter += 1
                await loop.run_in_executor(pool, naive_put, directory, counter)
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return done / elapsed, 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path.cwd())
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="queue-bench-", dir=args.dir))
    print(f"4 KiB messages, {args.seconds:g} s per cell, in {base}")
    print(f"{'concurrency':>11}  {'quailmail/s':>11}  {'syncs/put':>9}  {'naive/s':>8}  ratio")
    try:
        for concurrency in (1, 10, 50):
            q_rate, q_syncs = asyncio.run(
                quail(base / f"q{concurrency}", concurrency, args.seconds)
            )
            n_rate, _ = asyncio.run(naive(base / f"n{concurrency}", concurrency, args.seconds))
            print(
                f"{concurrency:>11}  {q_rate:>11,.0f}  {q_syncs:>9.3f}  {n_rate:>8,.0f}"
                f"  {q_rate / n_rate:.1f}x"
            )
    finally:
        shutil.rmtree(base)


if __name__ == "__main__":
    main()
