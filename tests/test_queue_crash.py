"""Crash test: SIGKILL a process that is putting messages, at random moments.

Every id the child printed (printed only after put() returned, as the SMTP
receiver replies 250 only then) must be in the queue after reopening, and
every message in the queue must be intact (its body matches the SHA-256 in
its header).  Messages the child marked done stay marked.  Seeded and
bounded: 5 rounds, each killed at most 0.5 s after its first durable put.

A SIGKILL does not tear a write on Linux (the kernel finishes the pwritev
into the page cache), so after each kill the test also tears the newest
segment as a power loss could: it cuts into the first record after the last
acknowledged one, or, if there is none, appends half a record.  Recovery
must cut that tail and lose nothing acknowledged.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

from quailmail.queue import Queue
from quailmail.queue.segment import scan_segment

CHILD = Path(__file__).with_name("queue_crash_child.py")
ROUNDS = 5


def run_and_kill(path: Path, seed: int, delay: float) -> list[str]:
    """Start the child, SIGKILL it `delay` s after its first line; its lines."""
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(path), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None
    out = b""
    sel = selectors.DefaultSelector()
    sel.register(child.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 20  # bound for the child's start
    first = False
    try:
        while time.monotonic() < deadline:
            if not sel.select(deadline - time.monotonic()):
                break
            chunk = os.read(child.stdout.fileno(), 65536)
            if not chunk:
                break
            out += chunk
            if not first and b"\n" in out:
                first = True
                deadline = time.monotonic() + delay
        child.send_signal(signal.SIGKILL)
        rest, err = child.communicate(timeout=20)
    finally:
        sel.close()
        if child.poll() is None:
            child.kill()
            child.wait()
    assert first, f"child never put a message: {err.decode(errors='replace')[-2000:]}"
    assert child.returncode == -signal.SIGKILL, err.decode(errors="replace")[-2000:]
    # A last line cut short was a promise not yet made: only whole lines count.
    return (out + rest).decode().split("\n")[:-1]


def tear(path: Path, put: set[str], rng: random.Random) -> None:
    """Tear the newest segment past its last acknowledged record."""
    for newest in sorted(path.glob("*.seg"), reverse=True):  # the newest with records
        records = scan_segment(newest, repair=False).records
        if records:
            break
    acked = [i for i, r in enumerate(records) if r.header.qid in put]
    after = records[acked[-1] + 1 :] if acked else records
    if after:  # a complete record nobody was told about: cut into it
        victim = after[0]
        os.truncate(newest, victim.offset + rng.randrange(1, victim.header.total))
    else:  # append the first part of a record, as a torn write leaves it
        last = records[-1]
        with open(newest, "r+b") as f:
            f.seek(last.offset)
            part = f.read(rng.randrange(1, last.header.total))
            f.seek(0, os.SEEK_END)
            f.write(part)


def check(path: Path, put: set[str], done: set[str]) -> tuple[int, int]:
    async def main() -> tuple[int, int]:
        queue = Queue.open(path)
        present = {m.id: m for m in queue.messages()}
        missing = put - present.keys()
        assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {min(missing)}"
        for qid, m in present.items():
            data = await queue.read(qid)
            head, _, body = data.partition(b"\r\n\r\n")
            assert head == b"X-Sum: " + hashlib.sha256(body).hexdigest().encode(), qid
            assert m.recipients == ("a@example.org", "b@example.org")
            if qid in done:
                assert m.pending == (1,), qid
        await queue.close()
        return len(present), queue.torn_bytes

    return asyncio.run(main())


def test_sigkill_loses_no_acknowledged_message(tmp_path: Path) -> None:
    rng = random.Random(20240521)
    path = tmp_path / "queue"
    put: set[str] = set()
    done: set[str] = set()
    for round_ in range(ROUNDS):
        lines = run_and_kill(path, seed=round_, delay=rng.uniform(0.05, 0.5))
        for line in lines:
            kind, qid = line.split()
            (put if kind == "P" else done).add(qid)
        tear(path, put, rng)
        queued, cut = check(path, put, done)
        assert queued >= len(put)
        assert cut > 0  # the torn tail was found and cut
    assert len(put) > 50  # the test did test something
