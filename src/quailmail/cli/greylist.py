"""`quail greylist clean`: jgreylist-clean for the file store.

Deletes the entries of a jgreylist directory not seen (atime: the last
sighting) for `--older-than DAYS` (default 30), then the directories they
leave empty.  Names outside jgreylist's layout (`ip4/` and three-digit
decimal octets, also at the top as the unpatched jgreylist keeps them;
`ip6/` and two-digit hex bytes) are left alone.  The directory is `--dir`,
else `control/greylistdir` of the root.  A Redis store needs no cleaning:
its entries expire by themselves after the same 30 days.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from quailmail.cli.common import CliError, add_root_option
from quailmail.cli.progress import Progress
from quailmail.config.control import control_for
from quailmail.policy.greylist.files import CleanResult, clean_top, top_entries
from quailmail.policy.greylist.store import EXPIRE_DAYS, StoreError


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "greylist",
        help="maintain the greylist (jgreylist's directory)",
        description="Maintain the greylisting store.",
    )
    add_root_option(p)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    clean = actions.add_parser(
        "clean",
        help="delete entries not seen for DAYS days (jgreylist-clean)",
        description="Delete the greylist entries not seen for DAYS days, and the "
        "directories left empty, as jgreylist-clean does.",
    )
    clean.add_argument(
        "--older-than",
        type=float,
        default=EXPIRE_DAYS,
        metavar="DAYS",
        help=f"last seen more than DAYS days ago (default {EXPIRE_DAYS})",
    )
    clean.add_argument(
        "--dir",
        type=Path,
        metavar="DIR",
        help="the greylist directory (default: control/greylistdir of --root)",
    )
    clean.add_argument("--root", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.set_defaults(handler=run)


def _directory(args: argparse.Namespace) -> Path:
    if args.dir is not None:
        return Path(args.dir)
    root: Path | None = args.root
    if root is None:
        raise CliError("no greylist directory: give --dir DIR, or --root with control/greylistdir")
    try:
        named = control_for(root).value("greylistdir")
    except OSError as exc:  # a directory, unreadable, a symlink loop
        raise CliError(f"{root}/control/greylistdir: {exc.strerror or exc}", 111) from None
    if not named:
        raise CliError(f"{root}/control/greylistdir is missing or empty: give --dir DIR")
    return root / named


def run(args: argparse.Namespace) -> int:
    days: float = args.older_than
    if not days >= 0:  # nan too: it compares with nothing, and nothing was removed
        raise CliError("--older-than must be a number of days, not negative")
    directory = _directory(args)
    if not directory.is_dir():
        raise CliError(f"{directory} is not a directory")
    cutoff = time.time() - days * 86400
    result = CleanResult()
    try:
        names = top_entries(directory)
        bar = Progress("top-level directories cleaned", len(names))
        for done, name in enumerate(names, 1):
            clean_top(directory, name, cutoff, result)
            bar.update(done)
        bar.done()
    except (OSError, StoreError) as exc:
        raise CliError(f"{directory}: {exc}", 111) from None
    print(
        f"removed {result.removed} entries not seen for {days:g} days, kept {result.kept}; "
        f"removed {result.directories} empty directories"
        + (f"; left {result.skipped} names outside the layout" if result.skipped else "")
    )
    return 0
