"""mbox delivery for ``.qmail`` lines naming a file (dot-qmail(5)).

qmail-local(8) appends ``From SENDER DATE`` (UFLINE), ``Return-Path:``,
``Delivered-To:``, then the message with ``>From `` quoting, then a blank
line, under an exclusive lock (flock), and fsyncs.  On failure it truncates
the file back to its old length so no partial message remains.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import time
from pathlib import Path

from quailmail.core.files import write_all
from quailmail.core.outcome import Outcome

from .maildir import dtline, rpline

_FROM = re.compile(rb"^(>*From )", re.MULTILINE)


def ufline(sender: str, now: float | None = None) -> bytes:
    """qmail-command(8) UFLINE: ``From SENDER DATE`` (``MAILER-DAEMON`` for
    the null sender), as the UUCP From_ line of an mbox."""
    date = time.asctime(time.gmtime(time.time() if now is None else now))
    return f"From {sender or 'MAILER-DAEMON'} {date}\n".encode()


def deliver_mbox(path: Path, message: bytes, *, delivered_to: str, return_path: str) -> Outcome:
    """Append MESSAGE to the mbox file PATH (created if missing, 0600)."""
    body = _FROM.sub(rb">\1", message)
    if not body.endswith(b"\n"):
        body += b"\n"
    data = ufline(return_path) + rpline(return_path) + dtline(delivered_to) + body + b"\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as err:
        return Outcome.temporary(f"unable to open mbox {path}: {err.strerror} (#4.2.1)")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            write_all(fd, data)
            os.fsync(fd)
        except OSError as err:
            os.ftruncate(fd, start)
            full = err.errno in {errno.ENOSPC, errno.EDQUOT}
            what = "disk full" if full else err.strerror
            return Outcome.temporary(f"unable to write mbox {path}: {what} (#4.3.0)")
    except OSError as err:
        return Outcome.temporary(f"unable to lock mbox {path}: {err.strerror} (#4.2.1)")
    finally:
        os.close(fd)
    return Outcome.ok(str(path))
