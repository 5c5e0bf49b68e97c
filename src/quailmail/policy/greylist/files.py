"""jgreylist's file store: one empty file per key, its timestamps the state.

`DIR/ip4/127/000/000` (or `DIR/ip6/20/01/…`): the file's mtime is when the
key was first seen, its atime when last seen.  A sighting sets the atime and
keeps the mtime (jgreylist's `file_touch`), so an existing jgreylist
directory keeps working and jgreylist and quailmail can share one.  Files
are created 0600 and directories 0700, as jgreylist makes them.

The original jgreylist (without the seeds' IPv6 patch) keeps IPv4 entries
at the top, `DIR/127/000/000`.  When an `ip4/` entry is missing and such an
entry exists, its mtime is taken over as the first sighting, so a client
that passed under the old program is not greylisted again; `quail greylist
clean` ages the old entries out like any other.

The calls are a handful of metadata operations on a local disk (the same
cost as the control files' `stat` per connection), made inline on the
event loop; the directory must exist (jgreylist refuses to run without
it), so a typo in its name is an error in the log, not a tree in a
surprising place.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from quailmail.policy.greylist.store import Key, StoreError, Visit

log = logging.getLogger("quailmail.policy.greylist")

_DECIMAL = re.compile(r"\d{3}\Z")
_HEX = re.compile(r"[0-9a-f]{2}\Z")


class FileStore:
    def __init__(self, directory: Path, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.clock = clock
        self._base = os.fspath(directory)

    async def visit(self, key: Key) -> Visit:
        return self.visit_now(key)

    def visit_now(self, key: Key) -> Visit:
        now = self.clock()
        path = os.path.join(self._base, *key)
        try:
            try:
                st = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                first = self._unpatched_first_seen(key)
                if self._create(Path(path), first, now):
                    return Visit(first, now)
                st = os.stat(path)  # another worker created it first
            # jgreylist's file_touch: atime = now, mtime kept.
            os.utime(path, ns=(int(now * 1e9), st.st_mtime_ns))
        except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
            self._check_directory()
            raise StoreError(f"{path}: {getattr(exc, 'strerror', None) or exc}") from None
        return Visit(st.st_mtime, now)

    def _check_directory(self) -> None:
        """StoreError with jgreylist's reason when the directory is unusable."""
        try:
            st = os.stat(self.directory)
        except FileNotFoundError:
            raise StoreError(f"greylist directory {self.directory} does not exist") from None
        except (OSError, ValueError) as exc:  # too long, a loop, a NUL, no permission
            reason = getattr(exc, "strerror", None) or exc
            raise StoreError(f"greylist directory {self.directory}: {reason}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise StoreError(f"greylist directory {self.directory} is not a directory")

    def _unpatched_first_seen(self, key: Key) -> float | None:
        """The mtime of the unpatched jgreylist's entry for an IPv4 key, if any."""
        if key[0] != "ip4":
            return None
        try:
            st = os.stat(os.path.join(self._base, *key[1:]))
        except OSError:
            return None
        return st.st_mtime if stat.S_ISREG(st.st_mode) else None

    def _create(self, path: Path, first: float | None, now: float) -> bool:
        """Create the entry (first seen `first`, or now); False when it
        appeared meanwhile."""
        self._check_directory()
        for attempt in (1, 2):
            try:
                self._makedirs(path.parent)
            except (FileExistsError, NotADirectoryError):
                # An entry of the other granularity (JGREYLIST_BY_IP changed)
                # sits where a directory goes: it gives way, and that network
                # is greylisted once more.
                self._clear_way(path.parent)
                self._makedirs(path.parent)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                return False
            except FileNotFoundError:
                if attempt == 2:
                    raise
                continue  # `quail greylist clean` removed the directory just now
            try:
                if first is not None:
                    os.utime(fd, ns=(int(now * 1e9), int(first * 1e9)))
            finally:
                os.close(fd)
            break
        return True

    def _makedirs(self, directory: Path) -> None:
        """Each level 0700, as jgreylist's mkdir calls (os.makedirs gives
        only the last one its mode)."""
        current = self.directory
        for part in directory.relative_to(self.directory).parts:
            current = current / part
            try:
                os.mkdir(current, 0o700)
            except FileExistsError:
                if not current.is_dir():
                    raise

    def _clear_way(self, directory: Path) -> None:
        current = self.directory
        for part in directory.relative_to(self.directory).parts:
            current = current / part
            if current.exists() and not current.is_dir():
                log.info(
                    "greylist: file %s removed, a directory goes there"
                    " (JGREYLIST_BY_IP changed, or a stray file)",
                    current,
                )  # fmt: skip
                current.unlink()


@dataclass
class CleanResult:
    removed: int = 0  # entries not seen for the given time, deleted
    kept: int = 0
    directories: int = 0  # directories left empty, deleted
    skipped: int = 0  # names outside jgreylist's layout, left alone


def top_entries(directory: Path) -> list[str]:
    """The top-level names of the layout: `ip4`, `ip6`, and the first
    octets of the unpatched jgreylist's IPv4 entries."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        raise StoreError(f"greylist directory {directory} does not exist") from None
    return [n for n in names if n in ("ip4", "ip6") or _DECIMAL.match(n)]


def clean_top(directory: Path, name: str, cutoff: float, result: CleanResult) -> None:
    """jgreylist-clean for one top-level entry: delete entries last seen
    (atime) before `cutoff`, then the directories they leave empty."""
    pattern = _HEX if name == "ip6" else _DECIMAL
    path = directory / name
    if name in ("ip4", "ip6") and not path.is_dir():
        result.skipped += 1
        return
    _clean(path, pattern, cutoff, result)


def _clean(path: Path, pattern: re.Pattern[str], cutoff: float, result: CleanResult) -> bool:
    """Clean `path`; True when it is gone."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True
    if stat.S_ISREG(st.st_mode):
        if st.st_atime < cutoff:
            os.unlink(path)
            result.removed += 1
            return True
        result.kept += 1
        return False
    if not stat.S_ISDIR(st.st_mode):
        result.skipped += 1
        return False
    empty = True
    with os.scandir(path) as entries:
        children = [entry.name for entry in entries]
    for child in children:
        if not pattern.match(child):
            result.skipped += 1
            empty = False
            continue
        if not _clean(path / child, pattern, cutoff, result):
            empty = False
    if empty:
        try:
            os.rmdir(path)
        except OSError:
            return False  # an entry appeared meanwhile
        result.directories += 1
        return True
    return False
