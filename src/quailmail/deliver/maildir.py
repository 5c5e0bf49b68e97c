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

import errno
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from quailmail.core.files import fsync_dir
from quailmail.core.outcome import Outcome

_counter = itertools.count(1)


class _GroupSync:
    """fsync of one directory shared by the deliveries waiting for it.

    Deliveries run in threads; each needs `new/` synced after its link.
    One thread syncs at a time; whoever arrives meanwhile waits for the
    next sync, which covers every link made before it started.  So N
    concurrent deliveries into one Maildir cost about two fsyncs, not N,
    and none returns before a sync that began after its link."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.asked = 0  # tickets handed out
        self.synced = 0  # every ticket up to this one is durable
        self.running = False

    def sync(self, path: Path) -> None:
        with self.cond:
            self.asked += 1
            ticket = self.asked
            while self.synced < ticket:
                if self.running:
                    self.cond.wait()
                    continue
                self.running = True
                covered = self.asked  # links made before this sync starts
                self.cond.release()
                try:
                    fsync_dir(path)
                finally:
                    self.cond.acquire()
                    self.running = False
                    self.cond.notify_all()
                self.synced = max(self.synced, covered)
            # a failed sync raised above; the waiters then try their own


_syncers: dict[Path, _GroupSync] = {}
_syncers_lock = threading.Lock()


def sync_new(new: Path) -> None:
    """fsync `new/`, shared with concurrent deliveries into the same Maildir."""
    with _syncers_lock:
        syncer = _syncers.get(new)
        if syncer is None:
            if len(_syncers) > 4096:  # many mailboxes: keep the map bounded
                _syncers.clear()
            syncer = _syncers[new] = _GroupSync()
    syncer.sync(new)


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


def deliver_maildir(
    maildir: Path,
    data_chunks: Iterable[bytes],
    *,
    delivered_to: str | None,
    return_path: str | None,
) -> Outcome:
    """Deliver one message into MAILDIR (``tmp/`` -> fsync -> ``new/``).

    ``return_path`` (the envelope sender, "" for a bounce) and
    ``delivered_to`` (``local@domain``), when given, are prepended as
    qmail-local does.  Blocking: an async caller runs it in a thread.
    Returns ok with the file's path as the reason, or temporary.
    """
    # No stat of tmp/, new/ and cur/ first: the open and the link fail with
    # ENOENT when they are missing, which _reason reports as #4.2.1.
    name = unique_name()
    tmp = maildir / "tmp" / name
    new = maildir / "new" / name
    try:
        # O_EXCL: maildir(5) says a tmp/ name that exists means "try again".
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return Outcome.temporary(f"unique name {name} already in tmp/ of {maildir} (#4.3.0)")
    except OSError as err:
        return Outcome.temporary(_reason(err, maildir))
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                if return_path is not None:
                    f.write(rpline(return_path))
                if delivered_to is not None:
                    f.write(dtline(delivered_to))
                for chunk in data_chunks:
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, new)
        finally:
            tmp.unlink(missing_ok=True)
        sync_new(maildir / "new")
    except OSError as err:
        return Outcome.temporary(_reason(err, maildir))
    return Outcome.ok(str(new))
