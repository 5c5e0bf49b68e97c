"""Child of tests/test_queue_crash.py: put messages until killed.

    python tests/queue_crash_child.py QUEUE_DIR SEED

Eight coroutines put messages of random size (binary bodies, up to 300 KB,
so a SIGKILL often lands mid-write) into a queue with small segments (so it
lands mid-rotation too).  Each message carries the SHA-256 of its body in a
header.  A line `P ID` is printed, flushed, only after put() returned, and
`D ID` after mark_done() of its first recipient returned (every third
message): the parent holds the queue to exactly these promises.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import sys

from quailmail.queue import Outcome, Queue


def message(rng: random.Random) -> bytes:
    body = rng.randbytes(rng.choice((100, 4096, 20_000, 300_000)))
    return b"X-Sum: " + hashlib.sha256(body).hexdigest().encode() + b"\r\n\r\n" + body


async def main(path: str, seed: int) -> None:
    rng = random.Random(seed)
    queue = Queue.open(path, segment_size=1 << 20)

    async def worker() -> None:
        n = 0
        while True:
            n += 1
            data = message(rng)
            half = len(data) // 2
            qid = await queue.put(
                "s@example.com", ["a@example.org", "b@example.org"], [data[:half], data[half:]]
            )
            sys.stdout.write(f"P {qid}\n")
            sys.stdout.flush()
            if n % 3 == 0:
                await queue.mark_done(qid, 0, Outcome.DELIVERED)
                sys.stdout.write(f"D {qid}\n")
                sys.stdout.flush()

    await asyncio.gather(*(worker() for _ in range(8)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
