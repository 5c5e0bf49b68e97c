"""`quail queue list|show ID|stats [--json]`: look into ROOT/queue/.

Opens the queue read-only, so it is safe beside a running server: it takes no
lock, changes no file, and skips a batch the server is still writing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

from quailmail.cli.common import CliError, add_root_option
from quailmail.queue import QueuedMessage, QueueError, QueueSet

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
    for a in (lst, show, stats):  # --root after the action too; SUPPRESS keeps the first
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
