"""The Junk folder, built in: the seeds' maildrop ``mailfilter-to-spam``
without maildrop (seed 003).

That filter does::

    if ( /^X-Spam-Status: Yes/ )      # maildrop patterns ignore case
        test -d $USERHOME/Maildir/.Junk || {
            maildirmake -f Junk $USERHOME/Maildir
            echo INBOX.Junk >> $USERHOME/Maildir/courierimapsubscribed }
        to "$USERHOME/Maildir/.Junk"
    else
        to "$USERHOME/Maildir/"

We do the same, and also subscribe the folder for Dovecot (``subscriptions``
in the Maildir), so both IMAP servers show it.  Whether it is on is decided
by `junk_enabled` (docs/control.md: ``junkfolder``).
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

log = logging.getLogger("quailmail.deliver")

FOLDER = "Junk"
COURIER_FILE = "courierimapsubscribed"
COURIER_NAME = "INBOX.Junk"
DOVECOT_FILE = "subscriptions"
# Dovecot >= 2.2.? writes its subscriptions file as a version line "V\t2",
# an empty line, then one name a line (subscription-file.c); older files
# without the header (version 1: names only) are read the same way.
DOVECOT_HEADER = "V\t2\n\n"
# Dovecot changes `subscriptions` under a dotlock, `subscriptions.lock`:
# made with O_EXCL, filled with the new contents, renamed over the file
# (subscription-file.c, file_dotlock_replace).  A lock unchanged for 30 s
# is stale (its SUBSCRIPTION_FILE_CHANGE_TIMEOUT); Dovecot itself waits up
# to 120 s, a delivery only LOCK_WAIT: an unsubscribed Junk is retried at
# the next spam delivery, while the delivery slot is better given back.
LOCK_STALE = 30.0
LOCK_WAIT = 10.0

# The field name is case-insensitive (RFC 5322 §1.2.2); maildrop patterns
# are too, unless the D flag is given, and the seeds' pattern has none.
# `X-Quail-Quarantine:` is what the receiver adds to a message whose
# author's DMARC policy is quarantine (policy/dmarc.py, dmarcbehavior 1).
_SPAM = re.compile(rb"^(?:x-spam-status:[ \t]*yes|x-quail-quarantine:)", re.IGNORECASE)


def header_of(message: bytes) -> bytes:
    """The header block: up to the first empty line (LF or CRLF)."""
    m = re.search(rb"\r?\n\r?\n", message)
    return message if m is None else message[: m.start() + 1]


def is_spam(message: bytes) -> bool:
    """True when the header has ``X-Spam-Status: Yes`` (SpamAssassin's tag)
    or ``X-Quail-Quarantine:`` (a DMARC quarantine)."""
    return any(_SPAM.match(line) for line in header_of(message).splitlines())


def switched_on(text: str) -> bool:
    """A `junkfolder` file's value: on unless `0`, `no` or `off`."""
    return text.strip() not in {"0", "no", "off"}


def _flag(path: Path) -> bool | None:
    try:
        text = path.read_text(errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return None
    return switched_on(text)


def junk_enabled(
    *,
    control_dir: Path | None,
    domain_dir: Path | None,
    home: Path | None,
    default: bool = True,
) -> bool:
    """``HOME/.junkfolder`` (one user), else ``domains/D/.junkfolder`` (one
    domain), else ``control/junkfolder``, else DEFAULT (on); each holds ``1``
    or ``0``; the nearest file present decides."""
    for base, name in ((home, ".junkfolder"), (domain_dir, ".junkfolder")):
        if base is not None and (flag := _flag(base / name)) is not None:
            return flag
    if control_dir is not None and (flag := _flag(control_dir / "junkfolder")) is not None:
        return flag
    return default


def _maildirmake_folder(folder: Path) -> None:
    """As ``maildirmake -f Junk MAILDIR``: ``.Junk/{tmp,new,cur}`` (0700) and
    an empty ``maildirfolder`` file (Maildir++: "this is a folder")."""
    folder.mkdir(mode=0o700, exist_ok=True)
    for sub in ("tmp", "new", "cur"):
        (folder / sub).mkdir(mode=0o700, exist_ok=True)
    marker = folder / "maildirfolder"
    if not marker.exists():
        marker.touch(mode=0o600)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _subscribe(path: Path, name: str) -> None:
    """Append NAME to Courier's subscription file PATH unless already listed
    (what the seeds' mailfilter does with ``echo … >>``)."""
    text = _read(path)
    if name in text.splitlines():
        return
    sep = "\n" if text and not text.endswith("\n") else ""
    with path.open("a") as f:
        f.write(sep + name + "\n")
    os.chmod(path, 0o600)


def _dotlock(lock: Path, wait: float) -> int | None:
    """Dovecot's dotlock on LOCK: the open fd, or None after WAIT seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            pass
        try:
            if time.time() - os.stat(lock).st_mtime > LOCK_STALE:
                os.unlink(lock)  # its holder died; Dovecot overrides it too
                continue
        except FileNotFoundError:
            continue  # released meanwhile
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def _subscribe_dovecot(path: Path, name: str) -> None:
    """Add NAME to Dovecot's subscription file PATH as Dovecot does: under
    its dotlock, the whole new file written to the lock and renamed over."""
    if name in _read(path).splitlines():
        return  # read without the lock: Dovecot replaces the file by rename
    lock = path.with_name(path.name + ".lock")
    wait = LOCK_WAIT
    fd = _dotlock(lock, wait)
    if fd is None:
        log.warning("%s: locked for over %.0f s; Junk not subscribed this time", lock, wait)
        return
    with os.fdopen(fd, "w") as f:
        try:
            text = _read(path)  # as the last holder left it
            if name not in text.splitlines():
                sep = "\n" if text and not text.endswith("\n") else ""
                f.write((text + sep if text else DOVECOT_HEADER) + name + "\n")
                f.flush()
                os.fsync(f.fileno())
                os.rename(lock, path)
                return
        except BaseException:
            lock.unlink(missing_ok=True)
            raise
    lock.unlink()  # already listed: nothing to replace


def ensure_junk_folder(maildir: Path) -> Path:
    """Create MAILDIR/.Junk as maildirmake does if it is missing and subscribe
    it for Courier and Dovecot; returns the folder's path.  Blocking (it may
    wait for Dovecot's lock): an async caller runs it in a thread."""
    folder = maildir / f".{FOLDER}"
    if not (folder / "new").is_dir():
        _maildirmake_folder(folder)
    _subscribe(maildir / COURIER_FILE, COURIER_NAME)
    _subscribe_dovecot(maildir / DOVECOT_FILE, FOLDER)
    return folder


def is_folder(maildir: Path) -> bool:
    """A Maildir++ folder (has ``maildirfolder``): never redirected again."""
    return (maildir / "maildirfolder").exists()
