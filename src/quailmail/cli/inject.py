"""`quail inject`: local programs submit mail as they do to qmail-inject or
sendmail (`/usr/sbin/sendmail -t -i` from web applications).

The message is read from standard input, completed with the header fields
qmail-inject adds when they are missing (From, Date, Message-ID), and
queued through the same durable path as SMTP mail: exit 0 means the message
is fsynced in the queue.  Exit codes are qmail-inject's: 100 for a message
that can never go (no recipient, bad address), 111 for a temporary failure.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
import uuid
from datetime import UTC, datetime
from email.utils import format_datetime, getaddresses
from typing import Any

from quailmail.auth.message import parse_message, to_crlf
from quailmail.cli.common import CliError, add_root_option, control_value
from quailmail.queue import Queue, QueueError
from quailmail.queue.shards import INJECT

PERMANENT, TEMPORARY = 100, 111


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "inject",
        help="queue a message from standard input (sendmail / qmail-inject)",
        description="Queue the message on standard input for RCPT... (or, with -t, for "
        "the To:, Cc: and Bcc: addresses).",
    )
    p.add_argument("recipients", metavar="RCPT", nargs="*")
    p.add_argument("-t", dest="from_headers", action="store_true",
                   help="take recipients from To:, Cc:, Bcc: (Bcc: is removed)")  # fmt: skip
    p.add_argument("-f", dest="sender", metavar="SENDER", help="envelope sender")
    p.add_argument("-i", "-oi", dest="ignore_dots", action="store_true",
                   help="a line with a single dot does not end the message")  # fmt: skip
    p.add_argument("-F", dest="fullname", metavar="NAME", help="full name for a made-up From:")
    add_root_option(p)
    p.set_defaults(handler=run)


def _cut_at_dot(data: bytes) -> bytes:
    """sendmail without -i: a line holding only "." ends the message."""
    for marker in (b"\r\n.\r\n", b"\n.\n", b"\n.\r\n"):
        index = data.find(marker)
        if index >= 0:
            return data[: index + 2 if marker[:2] == b"\r\n" else index + 1]
    if data.startswith((b".\n", b".\r\n")):
        return b""
    return data


def _addresses(values: list[str]) -> list[str]:
    return [address for _, address in getaddresses(values) if address]


def compose(data: bytes, *, me: str, sender: str, fullname: str | None, from_headers: bool,
            recipients: list[str]) -> tuple[bytes, list[str]]:  # fmt: skip
    """The message as queued (CRLF, with From/Date/Message-ID) and its recipients."""
    data = to_crlf(data)
    message = parse_message(data)
    names = {h.lname for h in message.headers}
    found = list(recipients)
    kept = []
    for header in message.headers:
        if from_headers and header.lname in ("to", "cc", "bcc"):
            found.extend(_addresses([header.text()]))
        if header.lname == "bcc":
            continue  # never shown to the recipients
        kept.append(header.raw + b"\r\n")
    added = []
    if "from" not in names:
        shown = f'"{fullname}" <{sender}>' if fullname else sender
        added.append(f"From: {shown}\r\n".encode())
    if "date" not in names:
        added.append(f"Date: {format_datetime(datetime.now(UTC))}\r\n".encode())
    if "message-id" not in names:
        added.append(f"Message-ID: <{uuid.uuid4().hex}@{me}>\r\n".encode())
    body = data[message.body_offset :]
    return b"".join(added + kept) + b"\r\n" + body, found


def run(args: argparse.Namespace) -> int:
    root = args.root
    if root is None:
        raise CliError("give --root DIR (or set $QUAIL_ROOT)", code=TEMPORARY)
    me = control_value(root, "me") or "localhost"
    user = os.environ.get("USER") or getpass.getuser()
    sender = args.sender if args.sender is not None else f"{user}@{me}"
    data = sys.stdin.buffer.read()
    if not args.ignore_dots:
        data = _cut_at_dot(data)
    message, recipients = compose(
        data, me=me, sender=sender, fullname=args.fullname, from_headers=args.from_headers,
        recipients=list(args.recipients),
    )  # fmt: skip
    recipients = [r.strip() for r in recipients if r.strip()]
    if not recipients:
        raise CliError("no recipients", code=PERMANENT)
    for recipient in recipients:
        if any(c in recipient for c in "\r\n\0<>") or recipient.count("@") > 1:
            raise CliError(f"bad recipient {recipient!r}", code=PERMANENT)
    return asyncio.run(_queue(root / "queue" / INJECT, sender, recipients, message))


async def _queue(path: os.PathLike[str], sender: str, recipients: list[str], data: bytes) -> int:
    try:
        queue = Queue.open(path, wait=True)
    except QueueError as exc:
        raise CliError(f"cannot open the queue: {exc}", code=TEMPORARY) from None
    try:
        await queue.put(sender, recipients, data, meta={"client": "inject"})
    except QueueError as exc:
        raise CliError(f"message not queued: {exc}", code=TEMPORARY) from None
    finally:
        await queue.close()
    return 0
