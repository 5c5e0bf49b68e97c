"""`ROOT/users/assign`: qmail-users(5), looked up as qmail-lspawn does.

Two kinds of line (qmail-users(5)):

    =local:user:uid:gid:homedir:dash:ext:     mail for `local` exactly
    +loc:user:uid:gid:homedir:dash:pre:       mail for `loc` followed by
                                              anything: the extension is
                                              `pre` and what followed `loc`

`local` and `loc` are read without regard to case.  A line whose first
character is `.` ends the file.  The first assignment of an address wins;
a simple assignment wins over any wildcard, a longer `loc` over a shorter
one, and an empty `loc` (`+:…`) catches every address.

qmail reads the file only in the form `qmail-newu` compiles it to,
`users/cdb`; we read the text file, which is what the admin edits, and
ignore the `.cdb` (as for `morercpthosts` and `badmimetypes`).  qmail-newu
refuses a whole file for one bad line; we skip the line and log it once
per version of the file (a bad line costs its own addresses, never the
others').  What qmail-newu keeps from a line is kept: the six fields after
`local`, the text past the seventh colon ignored.  uid and gid must be
decimal numbers (qmail's `scan_ulong` would read garbage as uid 0, which
qmail-lspawn then refuses to deliver as).

The parse is cached by the file's (device, inode, mtime, size), like the
control files: one `stat()` a lookup, an edit seen at the next.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from quailmail.config.control import CACHE, FileCache

log = logging.getLogger("quailmail.config")

ASSIGN = os.path.join("users", "assign")


@dataclass(frozen=True, slots=True)
class Entry:
    """One assignment: the six fields qmail-lspawn hands to qmail-local."""

    user: str
    uid: int
    gid: int
    home: str  # as written; a relative one is under the root (qmail-lspawn's cwd)
    dash: str
    ext: str  # `ext` of an `=` line, `pre` of a `+` line


@dataclass(frozen=True, slots=True)
class Assign:
    exact: Mapping[str, Entry] = field(default_factory=dict)  # lowercased local
    wild: Mapping[str, Entry] = field(default_factory=dict)  # lowercased loc

    def lookup(self, local: str) -> tuple[Entry, str] | None:
        """qmail-lspawn's `nughde_get`: the entry for `local` and the
        extension to give qmail-local, or None.

        The exact key first, then every prefix of the lowercased local
        from the longest (the whole local part included) down to the empty
        one; a wildcard's extension is its `pre` and the rest of `local`
        as written (qmail-lspawn appends `local + i - 1`, not the
        lowercased copy).
        """
        lower = local.lower()
        entry = self.exact.get(lower)
        if entry is not None:
            return entry, entry.ext
        if not self.wild:
            return None
        for n in range(len(lower), -1, -1):
            entry = self.wild.get(lower[:n])
            if entry is not None:
                return entry, entry.ext + local[n:]
        return None

    def domain_entry(self, prefix: str) -> Entry | None:
        """The wildcard `+PREFIX-` that vpopmail's vadddomain writes for a
        virtual domain (`+sample.com-:sample.com:89:89:/home/vpopmail/domains/sample.com:-::`):
        every address qmail-send rewrites to `PREFIX-user`."""
        return self.wild.get(f"{prefix.lower()}-")


EMPTY = Assign()


def _parse_line(line: str) -> tuple[str, str, Entry] | str:
    """(kind, key, entry) of one line, or why qmail-newu would refuse it."""
    if "\0" in line:
        return "a NUL"
    kind = line[:1]
    if kind not in ("=", "+"):
        return "neither = nor + in front"
    key, colon, rest = line[1:].partition(":")
    if not colon:
        return "no colon"
    fields = rest.split(":")
    if len(fields) < 7:
        return "fewer than seven colons"
    user, uid, gid, home, dash, ext = fields[:6]
    if not (uid.isascii() and uid.isdigit() and gid.isascii() and gid.isdigit()):
        return "uid or gid not a number"
    if not home:
        return "no home directory"
    return kind, key.lower(), Entry(user, int(uid), int(gid), home, dash, ext)


def parse_assign(data: bytes) -> Assign:
    """The assignments of a `users/assign` text; bad lines logged and skipped."""
    exact: dict[str, Entry] = {}
    wild: dict[str, Entry] = {}
    for number, raw in enumerate(data.decode("utf-8", errors="surrogateescape").split("\n"), 1):
        line = raw.removesuffix("\r")
        if line.startswith("."):
            break  # qmail-users(5): "It ends with a line containing a single dot."
        if not line:
            continue  # the end of the file (qmail-newu wants the dot; we do not)
        parsed = _parse_line(line)
        if isinstance(parsed, str):
            log.warning("users/assign line %d skipped: %s", number, parsed)
            continue
        kind, key, entry = parsed
        # qmail-users(5): "If there are several assignments for the same
        # local address, qmail-lspawn will use the first one."
        (exact if kind == "=" else wild).setdefault(key, entry)
    return Assign(exact, wild)


def read_assign(root: Path | str, cache: FileCache = CACHE) -> Assign:
    """`ROOT/users/assign`, parsed (cached by its stat); empty when missing."""
    return cache.get(os.path.join(root, ASSIGN), parse_assign, EMPTY)


def home_of(root: Path | str, entry: Entry) -> Path:
    """The entry's home: qmail-lspawn runs in the qmail directory, so a
    relative homedir is under the root."""
    return Path(root) / entry.home
