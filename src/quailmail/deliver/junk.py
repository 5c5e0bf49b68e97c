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

import os
import re
from pathlib import Path

FOLDER = "Junk"
COURIER_FILE = "courierimapsubscribed"
COURIER_NAME = "INBOX.Junk"
DOVECOT_FILE = "subscriptions"
# Dovecot >= 2.2.? writes its subscriptions file as a version line "V\t2",
# an empty line, then one name a line (subscription-file.c); older files
# without the header (version 1: names only) are read the same way.
DOVECOT_HEADER = "V\t2\n\n"

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


def _flag(path: Path) -> bool | None:
    try:
        text = path.read_text(errors="replace").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return text not in {"0", "no", "off"}


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


def _subscribe(path: Path, name: str, header: str = "") -> None:
    """Append NAME to the subscription file PATH unless already listed."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        text = ""
    if name in text.splitlines():
        return
    sep = "\n" if text and not text.endswith("\n") else ""
    with path.open("a") as f:
        f.write(sep + (header if not text else "") + name + "\n")
    os.chmod(path, 0o600)


def ensure_junk_folder(maildir: Path) -> Path:
    """Create MAILDIR/.Junk as maildirmake does if it is missing and subscribe
    it for Courier and Dovecot; returns the folder's path.  Blocking."""
    folder = maildir / f".{FOLDER}"
    if not (folder / "new").is_dir():
        _maildirmake_folder(folder)
    _subscribe(maildir / COURIER_FILE, COURIER_NAME)
    _subscribe(maildir / DOVECOT_FILE, FOLDER, DOVECOT_HEADER)
    return folder


def is_folder(maildir: Path) -> bool:
    """A Maildir++ folder (has ``maildirfolder``): never redirected again."""
    return (maildir / "maildirfolder").exists()
