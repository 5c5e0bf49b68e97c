"""Durable small-file writes, in one place (qmail's rule: fsync, then rename,
then fsync the directory, or a crash can lose the rename).

Used for control files (`quail user`, `quail init`), compiled rules
(`quail tcprules`), Maildir deliveries and the queue's directory entries.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def is_file_name(name: str) -> bool:
    """`name` names one entry of a directory, and only that: not empty, no
    `/` or NUL, not `.` or `..` (a domain or prefix made into a path)."""
    return bool(name) and "/" not in name and "\0" not in name and name not in (".", "..")


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a write may take part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make the directory's entries (a create, a rename, a link) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: Path,
    data: bytes,
    *,
    mode: int = 0o644,
    tmp: Path | None = None,
    owner: tuple[int, int] | None = None,
) -> None:
    """Replace `path` with `data`: write `tmp` (default: a hidden sibling),
    fsync it, rename it over `path`, fsync the directory.  On any error
    before the rename, `path` is left as it was and `tmp` is removed.
    `owner` (uid, gid): the new file's, set before the rename, so nobody
    ever sees it with ours."""
    tmp = tmp if tmp is not None else path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)  # whatever the umask
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    # Some file systems refuse fsync on a directory; the rename has happened.
    with contextlib.suppress(OSError):
        fsync_dir(path.parent)
