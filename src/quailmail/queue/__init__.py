"""The durable queue: append-only segment files with group commit.

`Queue.open(path)` recovers; `await queue.put(...)` returns a queue id only
once the message is fsynced (see docs/queue.md for the format and states).
Imports only `quailmail.core` and the standard library.
"""

from quailmail.queue.record import Outcome, make_id, parse_id
from quailmail.queue.shards import QueueSet, shard_path, shard_paths
from quailmail.queue.store import DEFAULT_SEGMENT_SIZE, Queue, QueuedMessage, QueueError

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "Outcome",
    "Queue",
    "QueueError",
    "QueueSet",
    "QueuedMessage",
    "make_id",
    "parse_id",
    "shard_path",
    "shard_paths",
]
