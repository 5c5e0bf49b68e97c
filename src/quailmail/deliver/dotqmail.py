"""``.qmail`` files: parsing (dot-qmail(5)) and lookup (qmail-local(8)).

dot-qmail(5) line kinds, by first character:

- ``#``: a comment.
- ``|``: a program, run by ``/bin/sh -c`` with qmail-command(8)'s environment.
- ``/`` or ``.``: a file.  Ending in ``/`` it is a Maildir, otherwise an mbox
  file (we append with flock, as qmail-local does).
- ``&`` (or any other character): a forwarding address.
- blank: ignored (qmail-local refuses a blank *first* line of a .qmail,
  "first line of .qmail file is blank (#4.2.1)"; we do the same).

Lookup: for ``LOCAL = USER DASH EXT``, qmail-local reads ``.qmail-EXT`` (with
``.`` written ``:`` and lowercase), then for each ``-`` in EXT from the
right ``.qmail-PREFIX-default``, then ``.qmail-default``; DEFAULT is the part
of EXT that ``default`` stood for.  With no dash it reads ``.qmail`` (and
``.qmailEXT`` for an assignment that gives an extension without a dash).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from quailmail.config.lspawn import Found, qmesearch


class Kind(Enum):
    PROGRAM = "program"
    FORWARD = "forward"
    MAILDIR = "maildir"
    MBOX = "mbox"


@dataclass(frozen=True, slots=True)
class Line:
    kind: Kind
    value: str  # the command, the address, or the path as written


class DotQmailError(ValueError):
    """A .qmail file qmail-local would refuse (a temporary failure)."""


def parse_dotqmail(text: str) -> list[Line]:
    """The delivery lines of a .qmail file, in order."""
    lines: list[Line] = []
    for n, raw in enumerate(text.split("\n")):
        line = raw.rstrip("\r")
        if not line.strip():
            if n == 0 and text.strip():
                raise DotQmailError("first line of .qmail file is blank (#4.2.1)")
            continue
        first = line[0]
        if first == "#":
            continue
        if first == "|":
            lines.append(Line(Kind.PROGRAM, line[1:]))
        elif first in "./":
            # dot-qmail(5): trailing spaces are not removed from file names.
            kind = Kind.MAILDIR if line.endswith("/") else Kind.MBOX
            lines.append(Line(kind, line))
        else:
            # dot-qmail(5): "&" is optional unless the address starts with a
            # letter or digit... any other first character is an address too.
            addr = line[1:] if first == "&" else line
            addr = addr.strip()
            if addr:
                lines.append(Line(Kind.FORWARD, addr))
    return lines


def find_dotqmail(home: Path, ext: str, dash: str | None = None) -> Found | None:
    """The .qmail file qmail-local reads for extension EXT in HOME
    (`config.lspawn.qmesearch`, which the RCPT check uses too).

    DASH defaults to "-" when there is an extension.  Returns None when
    nothing matches after a dash (qmail-local: "Sorry, no mailbox here by
    that name. (#5.1.1)"); Found(None, "") when there is no dash and no
    ``.qmail`` (default delivery).
    """
    return qmesearch(home, ("-" if ext else "") if dash is None else dash, ext)


def read_dotqmail(path: Path) -> list[Line] | None:
    """Parse PATH; None when it is empty (0 bytes: dot-qmail(5) says follow
    the default delivery).  Raises DotQmailError for files qmail-local
    refuses: writable by others (qmail-local: ".qmail file is writable")."""
    st = path.stat()
    if st.st_mode & stat.S_IWOTH:
        raise DotQmailError(f"{path.name} is world-writable (#4.7.0)")
    if st.st_size == 0:
        return None
    return parse_dotqmail(path.read_text(errors="surrogateescape"))


def check_home(home: Path) -> None:
    """qmail-local(8): a home directory with the sticky bit set means "the
    user is editing his .qmail file": defer (#4.2.1)."""
    try:
        mode = os.stat(home).st_mode
    except FileNotFoundError as err:
        raise DotQmailError(f"home directory {home} does not exist (#4.2.1)") from err
    if mode & stat.S_ISVTX:
        raise DotQmailError("home directory is sticky: user is editing his .qmail file (#4.2.1)")
    if mode & stat.S_IWOTH:
        raise DotQmailError("home directory is writable by others (#4.7.0)")
