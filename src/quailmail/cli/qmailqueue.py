"""`quail qmail-queue` (also `quail-qmail-queue`): qmail-queue's interface in
front of quailmail's queue, the end of a `QMAILQUEUE` chain.

It reads the message on descriptor 0 and the envelope on descriptor 1
(`F sender \\0 T rcpt \\0 ... \\0`, qmail-queue(8)) and puts the message into
`ROOT/queue/inject`, the shard `quail inject` writes and worker 0's
scheduler empties.  It exits 0 only once the message is fsynced there, so a
filter chain that ends here keeps "250 means durable".  Like qmail-queue it
prints nothing when all is well; its exit codes are qmail-queue's (11
address too long, 54 cannot read the message or envelope, 61 no root, 62
no queue, 53 the queue refused the write, 91 bad envelope, 52 still
running after a day).  Lines may end in LF (as qmail-smtpd hands them on)
or CRLF; the queue keeps CRLF.

The root is `--root`, else `$QUAIL_ROOT`, which `quail serve` sets for its
`QMAILQUEUE` programs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from quailmail.auth.message import to_crlf
from quailmail.cli.common import CliError, add_root_option, standalone
from quailmail.queue import Queue, QueueError
from quailmail.queue.qmailqueue import (
    EXIT_HOME,
    EXIT_QUEUE,
    EXIT_READ,
    EXIT_REFUSED,
    EXIT_TIMEOUT,
    EXIT_WRITE,
    EnvelopeError,
    parse_envelope,
)
from quailmail.queue.shards import INJECT

DEATH = 86400  # qmail-queue.c: a day at most, "must be below qmail-send's OSSIFIED"


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "qmail-queue",
        help="queue a message given as qmail-queue takes it (fd 0 message, fd 1 envelope)",
        description="qmail-queue(8) in front of quailmail's queue: the message on "
        "descriptor 0, the envelope (F sender NUL, T recipient NUL ..., NUL) on "
        "descriptor 1.  Exit 0 once the message is fsynced; qmail-queue's exit codes "
        "otherwise.",
    )
    add_root_option(p)
    p.set_defaults(handler=run)


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def read_envelope(fd: int) -> tuple[str, list[str]]:
    """Read descriptor `fd` up to the envelope's final NUL (not to its end,
    as qmail-queue: the writer may hold it open).  Raises EnvelopeError."""
    data = b""
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            raise EnvelopeError("envelope cut short", EXIT_READ)
        data += chunk
        parsed = parse_envelope(data)
        if parsed is not None:
            return parsed


def read_input() -> tuple[bytes, str, list[str]]:
    """The qmail-queue protocol's input: the message on fd 0, the envelope
    on fd 1; a CliError with qmail-queue's exit code when they cannot be read."""
    try:
        data = read_all(0)
        sender, recipients = read_envelope(1)
    except EnvelopeError as exc:
        raise CliError(str(exc), code=exc.code) from None
    except OSError as exc:
        raise CliError(f"cannot read: {exc.strerror or exc}", code=EXIT_READ) from None
    return data, sender, recipients


def _die_late(signum: int, frame: object) -> None:
    os._exit(EXIT_TIMEOUT)


def run(args: argparse.Namespace) -> int:
    root: Path | None = args.root
    if root is None:
        raise CliError("no root: give --root DIR or set $QUAIL_ROOT", code=EXIT_HOME)
    if not (root / "queue").is_dir():
        raise CliError(f"no queue at {root / 'queue'}", code=EXIT_QUEUE)
    signal.signal(signal.SIGALRM, _die_late)
    signal.alarm(DEATH)
    data, sender, recipients = read_input()
    if not recipients:
        # qmail-queue queues such a message and qmail-send has nobody to
        # deliver it to: nothing to keep.
        print("quail qmail-queue: no recipients; nothing queued", file=sys.stderr)
        return 0
    meta = {"client": os.environ.get("TCPREMOTEIP") or "qmail-queue"}
    if os.environ.get("PROTO"):
        meta["proto"] = os.environ["PROTO"]
    return asyncio.run(_put(root / "queue" / INJECT, sender, recipients, to_crlf(data), meta))


async def _put(path: Path, sender: str, recipients: list[str], data: bytes,
               meta: dict[str, str]) -> int:  # fmt: skip
    try:
        queue = Queue.open(path, wait=True)
    except QueueError as exc:
        raise CliError(f"cannot open the queue: {exc}", code=EXIT_QUEUE) from None
    try:
        await queue.put(sender, recipients, data, meta=meta)
    except QueueError as exc:
        raise CliError(f"message not queued: {exc}", code=EXIT_WRITE) from None
    except ValueError as exc:  # an address our queue cannot keep (not UTF-8): never will
        raise CliError(f"message not queued: {exc}", code=EXIT_REFUSED) from None
    finally:
        await queue.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The `quail-qmail-queue` command: what QMAILQUEUE chains exec by path.
    Only this module is loaded, not the whole of `quail`."""
    return standalone("quail-qmail-queue", "qmail-queue", register, argv)
