"""`quail queue list|show ID|stats|flush|delete ID...`: operate ROOT/queue/.

list, show and stats open the queue read-only, so they are safe beside a
running server: they take no lock, change no file, and skip a batch the
server is still writing.  flush and delete ask the running server (only the
process that owns a shard may change it): flush touches `queue/flush`, which
every worker's scheduler watches (as SIGALRM makes qmail-send retry);
delete leaves `SHARD/delete/ID` for the owner.  With no server running,
delete changes the shard itself.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import fcntl
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from quailmail.cli.common import CliError, add_root_option
from quailmail.cli.progress import Progress
from quailmail.core.files import write_atomic
from quailmail.queue import Outcome, Queue, QueuedMessage, QueueError, QueueSet

_HEADER_LIMIT = 256 * 1024  # show at most this much of a header block


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "queue",
        help="inspect the mail queue",
        description="Inspect the queue under ROOT/queue/ (read-only).",
    )
    add_root_option(p)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    lst = actions.add_parser("list", help="one line per queued message")
    lst.add_argument("--json", action="store_true", help="one JSON object per message")
    show = actions.add_parser("show", help="envelope and header of one message")
    show.add_argument("id", metavar="ID")
    show.add_argument("--json", action="store_true")
    stats = actions.add_parser("stats", help="counts of messages, recipients, bytes")
    stats.add_argument("--json", action="store_true")
    flush = actions.add_parser("flush", help="retry every deferred delivery now")
    flush.add_argument(
        "--wait", type=float, default=0, metavar="SECONDS",
        help="then show the queue draining, for at most SECONDS",
    )  # fmt: skip
    delete = actions.add_parser("delete", help="remove messages from the queue (no bounce)")
    delete.add_argument("ids", metavar="ID", nargs="+")
    delete.add_argument("--wait", type=float, default=30, metavar="SECONDS",
                        help="how long to wait for a running server (default 30)")  # fmt: skip
    for a in (
        lst,
        show,
        stats,
        flush,
        delete,
    ):  # --root after the action too; SUPPRESS keeps the first
        a.add_argument("--root", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.set_defaults(handler=run)


def _open(root: Path | None) -> QueueSet:
    if root is None:
        raise CliError("no root: give --root DIR or set $QUAIL_ROOT")
    if not root.is_dir():
        raise CliError(f"{root} is not a directory")
    try:
        return QueueSet(root / "queue")
    except QueueError as exc:
        raise CliError(exc.reason) from None


def _when(arrival: float) -> str:
    moment = datetime.datetime.fromtimestamp(arrival, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _as_json(m: QueuedMessage) -> dict[str, Any]:
    return {
        "id": m.id,
        "arrival": _when(m.arrival),
        "size": m.size,
        "sender": m.sender,
        "recipients": [
            {"address": r, "state": m.done[i].name.lower() if i in m.done else "pending"}
            for i, r in enumerate(m.recipients)
        ],
        "meta": m.meta,
    }


def _printable(text: str) -> str:
    """An address as it can go on one line of a terminal."""
    return (
        text.encode("utf-8", "surrogateescape")
        .decode("utf-8", "backslashreplace")
        .replace("\n", "\\n")
    )


def header_block(data: bytes) -> bytes:
    """The message's header section: up to the first empty line (RFC 5322 §2.1)."""
    head = data[:_HEADER_LIMIT]
    ends = [i for i in (head.find(b"\r\n\r\n"), head.find(b"\n\n")) if i >= 0]
    return head[: min(ends)] if ends else head


def run(args: argparse.Namespace) -> int:
    if args.action == "flush":
        return _flush(args.root, args.wait)
    if args.action == "delete":
        return _delete(args.root, args.ids, args.wait)
    queue = _open(args.root)
    if args.action == "stats":
        stats = queue.stats()
        if args.json:
            print(json.dumps(stats))
        else:
            for key, value in stats.items():
                print(f"{key}: {value}")
        return 0
    if args.action == "list":
        for m in queue.messages():
            if args.json:
                print(json.dumps(_as_json(m)))
            else:
                print(
                    f"{m.id}  {_when(m.arrival)}  {m.size:>9}  <{_printable(m.sender)}>  "
                    f"{len(m.pending)}/{len(m.recipients)}"
                )
        return 0
    try:
        m = queue.get(args.id)
        data = queue.read_sync(args.id)
    except KeyError:
        raise CliError(f"no message {args.id} in the queue", code=1) from None
    except QueueError as exc:
        raise CliError(exc.reason, code=1) from None
    headers = header_block(data)
    if args.json:
        out = _as_json(m)
        out["headers"] = headers.decode("utf-8", "replace")
        print(json.dumps(out))
        return 0
    lines = [
        f"id: {m.id}",
        f"arrival: {_when(m.arrival)}",
        f"size: {m.size}",
        f"sender: <{_printable(m.sender)}>",
    ]
    for i, r in enumerate(m.recipients):
        state = m.done[i].name.lower() if i in m.done else "pending"
        lines.append(f"recipient: <{_printable(r)}> {state}")
    lines.extend(f"meta: {k}={_printable(v)}" for k, v in m.meta.items())
    sys.stdout.write("\n".join(lines) + "\n\n")
    sys.stdout.flush()
    sys.stdout.buffer.write(headers.rstrip(b"\r\n") + b"\n")
    return 0


# -- flush and delete --------------------------------------------------------


def _server_running(queue_dir: Path) -> bool:
    """Whether a process holds the main shard's lock (a `quail serve`)."""
    try:
        fd = os.open(queue_dir / "lock", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the lock if we took it
    return False


def _flush(root: Path | None, wait: float) -> int:
    queue = _open(root)
    assert root is not None
    queue_dir = root / "queue"
    try:
        write_atomic(queue_dir / "flush", f"{time.time()}\n".encode())
    except OSError as exc:
        raise CliError(f"cannot write {queue_dir / 'flush'}: {exc.strerror or exc}") from None
    if not _server_running(queue_dir):
        print("flush requested; no server is running: it applies when one starts", file=sys.stderr)
        return 0
    total = queue.stats()["recipients"]
    if wait <= 0 or total == 0:
        return 0
    bar = Progress("recipients delivered", total)
    deadline = time.monotonic() + wait
    left = total
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            left = QueueSet(queue_dir).stats()["recipients"]
        except QueueError:
            continue
        bar.update(total - left)
        if left == 0:
            break
    bar.done()
    return 0 if left == 0 else 1


def _delete(root: Path | None, ids: list[str], wait: float) -> int:
    queue = _open(root)
    assert root is not None
    owners: dict[str, Path] = {}
    for qid in ids:
        try:
            owners[qid] = queue.owner(qid).path
        except KeyError:
            raise CliError(f"no message {qid} in the queue", code=1) from None
    bar = Progress("messages deleted", len(ids))
    asked: list[str] = []
    for qid, shard in owners.items():
        try:
            own = Queue.open(shard)
        except QueueError:  # a server owns the shard: ask it
            requests = shard / "delete"
            requests.mkdir(exist_ok=True, mode=0o700)
            write_atomic(requests / qid, b"")
            asked.append(qid)
            continue
        try:
            asyncio.run(_mark_deleted(own, qid))
        finally:
            asyncio.run(own.close())
        bar.update(bar.count + 1)
    deadline = time.monotonic() + wait
    while asked and time.monotonic() < deadline:
        time.sleep(0.1)
        still = QueueSet(root / "queue")
        left = []
        for qid in asked:
            try:
                still.get(qid)
            except KeyError:
                bar.update(bar.count + 1)
                continue
            left.append(qid)
        asked = left
    bar.done()
    if asked:
        raise CliError(f"the server did not delete {' '.join(asked)} in {wait:g} s", code=1)
    return 0


async def _mark_deleted(queue: Queue, qid: str) -> None:
    m = queue.get(qid)
    # Marked as bounced without a bounce: deleted (postsuper -d does the same).
    await asyncio.gather(*(queue.mark_done(qid, i, Outcome.BOUNCED) for i in m.pending))
