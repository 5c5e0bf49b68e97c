"""A root's qmail control files (`ROOT/control/NAME`), read as qmail reads them.

Three shapes, as in qmail 1.03's `control.c` and its users:

- one-value files (`me`, `checkpassword`, …): the first line with trailing
  whitespace stripped, or a default when the file is missing
  (`control_rldef`).  No comment handling, as in qmail: a one-value file
  holds its value on line 1.
- list files (`rcpthosts`, `morercpthosts`, `locals`): one entry a line;
  blank lines and lines starting with `#` are skipped; surrounding
  whitespace stripped (qmail strips only trailing blanks; a leading one in
  `rcpthosts` is always a mistake).  Domains compare case-insensitively, as
  qmail's `constmap` does.
- mapping files (`virtualdomains`): `key:value` lines split at the first
  colon, looked up in qmail-send's order (`virtualdomain`).

qmail reads `morercpthosts` only in its compiled form, `morercpthosts.cdb`
(made by `qmail-newmrh` from the text file).  We read the text file, which
is the source the admin edits; the `.cdb` is ignored.

Every parse is kept under the file's (device, inode, mtime, size), so a call
per connection or per RCPT costs one `stat()` per file, and an edit (or a
replacement by rename) is seen at the next call without a restart.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger("quailmail.control")

# (st_dev, st_ino, st_mtime_ns, st_size): a rewrite in place changes mtime or
# size, a replacement by rename changes the inode.
_Key = tuple[int, int, int, int]


def _key(st: os.stat_result) -> _Key:
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class FileReadError(OSError):
    """A file that is there but cannot be read (a directory, no permission,
    a symlink loop): the caller's temporary failure, said in one line."""

    def __str__(self) -> str:
        return f"cannot read {self.filename}: {self.strerror}"


def _unreadable(exc: OSError, path: str) -> FileReadError:
    return FileReadError(exc.errno, exc.strerror or str(exc), path)


class FileCache:
    """Parsed files kept by (path, parser) under the file's stat key."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, object], tuple[_Key, object]] = {}
        self._lock = threading.Lock()  # argon2 and checkpassword run in threads

    def get(self, path: Path | str, parse: Callable[[bytes], T], default: T) -> T:
        """`parse(content)` of the file at `path`, or `default` when it is missing.

        Other errors (permissions, a directory) raise `FileReadError`: a
        control file we cannot read is a temporary failure of the caller,
        never "empty".
        """
        spath = path if isinstance(path, str) else os.fspath(path)
        slot = (spath, parse)
        try:
            st = os.stat(spath)
        except FileNotFoundError:
            return default
        except NotADirectoryError:
            return default
        except OSError as exc:  # a symlink loop, a name too long, no permission
            raise _unreadable(exc, spath) from None
        with self._lock:
            hit = self._entries.get(slot)
        if hit is not None and hit[0] == _key(st):
            return hit[1]  # type: ignore[return-value]
        try:
            fd = os.open(spath, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return default
        except OSError as exc:
            raise _unreadable(exc, spath) from None
        try:
            # The key of what we read, not of what we stat'ed: a rename between
            # the two is then caught by the next call.
            key = _key(os.fstat(fd))
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
        except OSError as exc:  # EISDIR: a directory opens, but does not read
            raise _unreadable(exc, spath) from None
        finally:
            os.close(fd)
        value = parse(b"".join(chunks))
        with self._lock:
            self._entries[slot] = (key, value)
        return value


CACHE = FileCache()


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def parse_value(data: bytes) -> str:
    """qmail's `control_readline`: line 1, trailing whitespace stripped."""
    return _text(data).split("\n", 1)[0].rstrip()


def parse_lines(data: bytes) -> tuple[str, ...]:
    """qmail's `control_readfile`: entries, without blank and `#` lines."""
    out = []
    for raw in _text(data).split("\n"):
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return tuple(out)


def parse_domains(data: bytes) -> frozenset[str]:
    return frozenset(line.lower() for line in parse_lines(data))


def parse_mapping(data: bytes) -> Mapping[str, str]:
    """`key:value` lines (keys lowercased); a line without a colon is ignored.

    A later line for the same key wins, as qmail's `constmap` (which looks
    up from the end of its list) does.
    """
    out: dict[str, str] = {}
    for line in parse_lines(data):
        key, colon, value = line.partition(":")
        if colon:
            out[key.strip().lower()] = value.strip()
    return out


_LEADING_DIGITS = re.compile(r"[0-9]+")  # scan_ulong: ASCII digits only
ULONG_DIGITS = 19  # longer numbers saturate, as an overflowing scan_ulong wraps


def scan_ulong(text: str, max_digits: int = ULONG_DIGITS) -> int | None:
    """qmail's `scan_ulong` (and C's `atoi` without its sign): the number the
    ASCII digits `text` starts with, None when it starts with none.  A number
    of more than `max_digits` digits saturates at 10**max_digits, where C's
    would overflow (and Python's `int()` refuses 4,300 digits and more)."""
    match = _LEADING_DIGITS.match(text)
    if match is None:
        return None
    digits = match.group().lstrip("0") or "0"
    return int(digits) if len(digits) <= max_digits else 10**max_digits


@functools.cache
def _number_parser(name: str, minimum: int) -> Callable[[bytes], int | None]:
    """qmail's `control_readint` for control/NAME: the digits the first line
    starts with; None (the caller's default) when it starts with none, or
    the number is below `minimum`.  Said in the log once per version of the
    file (the parse runs once per version)."""

    def parse(data: bytes) -> int | None:
        text = parse_value(data).strip()
        number = scan_ulong(text)
        if number is None:
            log.warning("control/%s: %r is not a number; the default is used", name, text[:40])
            return None
        if number < minimum:
            log.warning("control/%s: %d is below %d; the default is used", name, number, minimum)
            return None
        return number

    return parse


def domain_suffixes(domain: str) -> list[str]:
    """`a.b.c` → `.b.c`, `.c`: the wildcard keys of `rcpthosts` and `virtualdomains`."""
    return [domain[i:] for i, ch in enumerate(domain) if ch == "." and i > 0]


class Control:
    """The control directory of one root.  Cheap to build and to call."""

    def __init__(self, root: Path | str, cache: FileCache = CACHE) -> None:
        self.root = Path(root)
        self.dir = self.root / "control"
        self._cache = cache
        self._files: dict[str, str] = {}  # name → path text: no Path built per call

    def path(self, name: str) -> Path:
        return self.dir / name

    def _file(self, name: str) -> str:
        found = self._files.get(name)
        if found is None:
            found = self._files[name] = os.path.join(self.dir, name)
        return found

    def value(self, name: str, default: str | None = None) -> str | None:
        """A one-value file's value (`control_rldef`)."""
        return self._cache.get(self._file(name), parse_value, default)

    def int_value(self, name: str, default: int, minimum: int = 0) -> int:
        """A number file (`databytes`, …) read as qmail's `control_readint`
        reads it: the digits its first line starts with (`100 bytes` is 100).
        Missing, not starting with a digit (`-5`, `abc`), or below `minimum`:
        the default, and a warning in the log once per version of the file."""
        number = self._cache.get(self._file(name), _number_parser(name, minimum), None)
        return default if number is None else number

    def flag(self, name: str) -> bool:
        """A yes/no file: present with a first line other than `0` (or empty) is yes."""
        text = self.value(name)
        return text is not None and text.strip() not in ("", "0")

    def lines(self, name: str) -> tuple[str, ...]:
        return self._cache.get(self._file(name), parse_lines, ())

    def domains(self, name: str) -> frozenset[str]:
        return self._cache.get(self._file(name), parse_domains, frozenset())

    def mapping(self, name: str) -> Mapping[str, str]:
        return self._cache.get(self._file(name), parse_mapping, {})

    def parsed(self, name: str, parse: Callable[[bytes], T], default: T) -> T:
        """A control file through the caller's own parser (cached as the others)."""
        return self._cache.get(self._file(name), parse, default)

    # -- the decisions qmail builds on these files --------------------------

    def rcpthosts_match(self, domain: str) -> bool:
        """qmail's `rcpthosts_match`: `domain` or a `.suffix` of it in
        `rcpthosts` or `morercpthosts`.

        Unlike qmail-smtpd, a missing `rcpthosts` accepts nothing (qmail
        then accepts everything: an open relay by omission).
        """
        domain = domain.lower()
        keys = [domain, *domain_suffixes(domain)]
        for name in ("rcpthosts", "morercpthosts"):
            hosts = self.domains(name)
            if any(k in hosts for k in keys):
                return True
        return False

    def is_local(self, domain: str) -> bool:
        """`domain` is in `locals` (exact: qmail-send has no wildcards there)."""
        return domain.lower() in self.domains("locals")

    def virtualdomain(self, local: str, domain: str) -> str | None:
        """The `virtualdomains` prefix for `local@domain`, in qmail-send's order.

        Keys tried, most specific first (qmail-send.c `rewrite()`): the whole
        address `user@domain`, the domain, each `.suffix` of the domain from
        the longest, then the empty key (a line `:prefix` catches every
        domain).  Returns the prefix, "" for an exception line (`domain:` —
        "not virtual"), or None when no line matches.
        """
        vdoms = self.mapping("virtualdomains")
        if not vdoms:
            return None
        domain = domain.lower()
        for key in (f"{local.lower()}@{domain}", domain, *domain_suffixes(domain), ""):
            prefix = vdoms.get(key)
            if prefix is not None:
                return prefix
        return None


_CONTROLS: dict[Path, Control] = {}


def control_for(root: Path | str) -> Control:
    """The `Control` of `root`, one per root for the process."""
    key = Path(root)
    control = _CONTROLS.get(key)
    if control is None:
        control = _CONTROLS.setdefault(key, Control(key))
    return control
