"""Maildir delivery, as qmail-local(8) and maildir(5) describe it.

maildir(5): "a message is delivered in four steps": create a unique file in
``tmp/``, write the message and fsync it, link it into ``new/`` under the same
name, remove the ``tmp/`` name.  A crash leaves at worst a stale ``tmp/`` file
(readers ignore ``tmp/``), never a half-written message in ``new/``.  We also
fsync ``new/`` after the link, so "delivered" survives a power loss.

qmail-local(8) prepends two lines to a Maildir delivery: ``Return-Path:
<sender>`` (RPLINE) and ``Delivered-To: local@domain`` (DTLINE), in that order.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path

from quailmail.core.outcome import Outcome
from quailmail.core.syncer import SYNCER, Syncer

_counter = itertools.count(1)


_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


def _hostname() -> str:
    # maildir(5): "/" in the host name is written \057 and ":" \072, so a name
    # never contains the directory separator or the info separator.
    return socket.gethostname().replace("/", r"\057").replace(":", r"\072")


def unique_name(now: float | None = None) -> str:
    """``time.M<usec>P<pid>Q<counter>.<host>``: seconds, microseconds, process
    id and a per-process delivery counter (maildir(5), Courier's form), so two
    deliveries by one process in one microsecond still differ."""
    t = time.time() if now is None else now
    sec = int(t)
    usec = int((t - sec) * 1_000_000)
    return f"{sec}.M{usec}P{os.getpid()}Q{next(_counter)}.{_hostname()}"


def rpline(sender: str) -> bytes:
    """qmail-command(8) RPLINE: ``Return-Path: <SENDER>`` and a newline."""
    return f"Return-Path: <{sender}>\n".encode()


def dtline(recipient: str) -> bytes:
    """qmail-command(8) DTLINE: ``Delivered-To: RECIPIENT`` and a newline."""
    return f"Delivered-To: {recipient}\n".encode()


def _reason(err: OSError, maildir: Path) -> str:
    if err.errno in _NO_SPACE:
        return f"disk full or over quota writing to {maildir} (#4.3.1)"
    if err.errno == errno.ENOENT:
        # qmail-local: "Unable to chdir to maildir. (#4.2.1)" -- temporary, so
        # a mailbox created a little later still gets the message.
        return f"maildir {maildir} does not exist (#4.2.1)"
    return f"unable to write to maildir {maildir}: {err.strerror} (#4.3.0)"


async def deliver_maildir(
    maildir: Path,
    data_chunks: Sequence[bytes],
    *,
    delivered_to: str | None,
    return_path: str | None,
    syncer: Syncer = SYNCER,
) -> Outcome:
    """Deliver one message into MAILDIR (``tmp/`` -> fsync -> ``new/``).

    ``return_path`` (the envelope sender, "" for a bounce) and
    ``delivered_to`` (``local@domain``), when given, are prepended as
    qmail-local does.  Returns ok with the file's path as the reason, or
    temporary.

    The event loop creates the file and links it; the syncer's threads
    write it, fsync it and fsync ``new/``, that sync shared with the other
    deliveries into the same Maildir that are waiting for one.
    """
    # No stat of tmp/, new/ and cur/ first: the open and the link fail with
    # ENOENT when they are missing, which _reason reports as #4.2.1.
    name = unique_name()
    base = os.fspath(maildir)
    tmp = os.path.join(base, "tmp", name)
    new = os.path.join(base, "new", name)
    try:
        # O_EXCL: maildir(5) says a tmp/ name that exists means "try again".
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return Outcome.temporary(f"unique name {name} already in tmp/ of {maildir} (#4.3.0)")
    except OSError as err:
        return Outcome.temporary(_reason(err, maildir))
    head = b""
    if return_path is not None:
        head += rpline(return_path)
    if delivered_to is not None:
        head += dtline(delivered_to)
    try:
        try:
            await syncer.write_fsync_close(fd, [head, *data_chunks] if head else data_chunks)
            os.link(tmp, new)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        await syncer.fsync_dir(os.path.join(base, "new"))
    except OSError as err:
        return Outcome.temporary(_reason(err, maildir))
    return Outcome.ok(new)
