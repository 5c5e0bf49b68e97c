"""One queue per server process: shards under one queue directory.

Several `quail serve` workers share the listening sockets (SO_REUSEPORT);
each owns a shard, because a queue has exactly one writer (its flock).
Worker 0 writes `ROOT/queue` itself, worker N `ROOT/queue/wN`, and
`quail inject` `ROOT/queue/inject` (directories the segment scan ignores).
Readers (`quail queue`, delivery later) see the union, oldest first.
A message lives in exactly one shard.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from quailmail.queue.store import Queue, QueuedMessage

INJECT = "inject"  # the shard `quail inject` writes (its processes take turns)


def shard_path(queue_dir: Path, worker: int) -> Path:
    return queue_dir if worker == 0 else queue_dir / f"w{worker}"


def shard_paths(queue_dir: Path) -> list[Path]:
    extra = []
    try:
        names = os.listdir(queue_dir)
    except FileNotFoundError:
        return [queue_dir]
    for name in names:
        if name[:1] == "w" and name[1:].isdigit() and (queue_dir / name).is_dir():
            extra.append((int(name[1:]), queue_dir / name))
    tail = [queue_dir / INJECT] if (queue_dir / INJECT).is_dir() else []
    return [queue_dir] + [path for _, path in sorted(extra)] + tail


class QueueSet:
    """A read-only view of every shard (what `quail queue` shows)."""

    def __init__(self, queue_dir: Path) -> None:
        self.queues = [Queue.open(path, readonly=True) for path in shard_paths(queue_dir)]

    def messages(self) -> Iterator[QueuedMessage]:
        every = [m for queue in self.queues for m in queue.messages()]
        every.sort(key=lambda m: (m.arrival, m.id))
        yield from every

    def owner(self, qid: str) -> Queue:
        """The shard that holds `qid` (KeyError if none does)."""
        for queue in self.queues:
            try:
                queue.get(qid)
            except KeyError:
                continue
            return queue
        raise KeyError(qid)

    def get(self, qid: str) -> QueuedMessage:
        return self.owner(qid).get(qid)

    def read_sync(self, qid: str) -> bytes:
        return self.owner(qid).read_sync(qid)

    def stats(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for queue in self.queues:
            for key, value in queue.stats().items():
                total[key] = total.get(key, 0) + value
        total["shards"] = len(self.queues)
        return total
