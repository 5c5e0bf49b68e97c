"""`quail learn`: teach spamd the Junk folders' old mail as spam, then delete it.

Seed 003's nightly cron job, without sa-learn::

    cd ~vpopmail/domains
    for ii in `find . -type d -name '.Junk'`; do
      for jj in `find $ii/cur/ -type f -mtime +4`; do   # 5 days or older
        /usr/bin/sa-learn --spam --no-sync $jj
        rm -f $jj
      done
    done
    /usr/bin/sa-learn --sync

Here each message goes to spamd as `TELL` (Message-class: spam, Set: local:
what `spamc -L spam` sends; spamd must run with `--allow-tell`), so the
Bayes database spamd scans with is the one taught, and no --sync is needed
(spamd writes it directly).  A message is deleted once spamd has answered
EX_OK: learnt now, or learnt before (spamd then says it did nothing).

Which messages, as the seed: regular files in `.Junk/cur/` (what the user
has seen there, or moved there with the MUA's junk button) whose mtime is at
least `--older-than` days old (5 = `find -mtime +4`), under `ROOT/domains`
(vpopmail's layout), `ROOT/alias` and the homes of `users/assign`.
`.Junk/new/` holds what the scanner itself filed and nobody has looked at;
teaching spamd its own verdicts only repeats them, so it is left alone
unless `--include-new`.  A message over
spamc's size limit (`control/spamdmaxsize`, 500 KB) is deleted unlearnt,
as sa-learn skips it and the seed's `rm -f` follows anyway.

Exit 0 when all went.  A folder or message that cannot be read, or a
message that cannot be removed, is passed over as the seed's loop passes
over it (one line on stderr each; the others are still learnt) and the exit
is 1.  spamd unreachable or refusing stops the run at once, exit 1 with one
line: what was learnt until then is gone from the folders, the rest is left
for next time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quailmail.cli.common import CliError, add_root_option
from quailmail.cli.progress import Progress
from quailmail.config.assign import home_of, read_assign
from quailmail.config.control import control_for
from quailmail.policy.spamc import (
    DEFAULT_MAX_SIZE,
    Endpoint,
    SpamdClient,
    SpamdError,
    parse_endpoint,
)

DAY = 86400.0
DEFAULT_DAYS = 5.0
DEFAULT_TIMEOUT = 60.0
JUNK = ".Junk"


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "learn",
        help="teach spamd the Junk folders' old mail as spam, then delete it",
        description="Walk every .Junk folder under ROOT/domains, ROOT/alias and the users/assign "
        "homes, tell spamd "
        "(TELL, as spamc -L spam; spamd needs --allow-tell) each message in cur/ at least "
        "DAYS old is spam, and delete it once spamd has answered.  Seed 003's nightly job.",
    )
    p.add_argument(
        "--older-than",
        type=float,
        default=DEFAULT_DAYS,
        metavar="DAYS",
        help="learn messages at least this many days old (default 5: find -mtime +4)",
    )
    p.add_argument(
        "--spamd",
        metavar="HOST:PORT|PATH",
        help="spamd's address or unix socket (default: control/spamd, else 127.0.0.1:783)",
    )
    p.add_argument(
        "--include-new",
        action="store_true",
        help="also learn from .Junk/new/ (what the scanner filed and nobody has seen)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="how long spamd may take over one message (default 60)",
    )
    add_root_option(p)
    p.set_defaults(handler=run)


def junk_folders(root: Path) -> list[Path]:
    """Every directory named `.Junk` under ROOT/domains, ROOT/alias and the
    homes `users/assign` names (a vpopmail tree moved over, e.g.
    `/home/vpopmail/domains/D`; `find . -type d -name .Junk`: symbolic
    links are not followed)."""
    assign = read_assign(root)
    homes = {home_of(root, e) for e in (*assign.exact.values(), *assign.wild.values())}
    found: set[Path] = set()
    for top in (root / "domains", root / "alias", *sorted(homes)):
        for path, dirs, _files in os.walk(top):
            if JUNK in dirs:
                found.add(Path(os.path.normpath(Path(path) / JUNK)))
    return sorted(found)


def old_messages(
    folders: list[Path], cutoff: float, include_new: bool, problems: list[str] | None = None
) -> list[Path]:
    """Regular files in the folders' cur/ (and new/) modified at or before
    `cutoff` (a time.time() value).  A directory that cannot be read is
    passed over, and said in `problems`."""
    out: list[Path] = []
    for folder in folders:
        for sub in ("cur", "new") if include_new else ("cur",):
            try:
                entries = list(os.scandir(folder / sub))
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                if problems is not None:
                    problems.append(f"cannot read {folder / sub}: {exc.strerror or exc}")
                continue
            for entry in entries:
                try:
                    if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime <= cutoff:
                        out.append(Path(entry.path))
                except FileNotFoundError:
                    continue  # taken away meanwhile (an IMAP client moved it)
                except OSError as exc:
                    if problems is not None:
                        problems.append(f"cannot read {entry.path}: {exc.strerror or exc}")
    return sorted(out)


@dataclass
class Tally:
    learnt: int = 0
    known: int = 0  # spamd had learnt it before
    too_large: int = 0
    gone: int = 0  # vanished before we read it
    problems: list[str] = field(default_factory=list)  # passed over: unreadable, undeletable

    @property
    def deleted(self) -> int:
        return self.learnt + self.known + self.too_large


def _endpoint(args: argparse.Namespace) -> Endpoint:
    spec = args.spamd
    if spec is None and args.root is not None:
        spec = control_for(args.root).value("spamd")
    if not spec:
        return Endpoint("127.0.0.1")
    try:
        return parse_endpoint(spec)
    except ValueError as exc:
        raise CliError(f"--spamd: {exc}") from None


async def learn(
    paths: list[Path], spamd: SpamdClient, max_size: int, bar: Progress | None = None
) -> Tally:
    tally = Tally()
    for count, path in enumerate(paths, 1):
        await _learn_one(path, spamd, max_size, tally)
        if bar is not None:
            bar.update(count)
    return tally


async def _learn_one(path: Path, spamd: SpamdClient, max_size: int, tally: Tally) -> None:
    """Tell spamd one message, and delete it; what cannot be read or
    deleted is passed over and kept in `tally.problems`."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        tally.gone += 1
        return
    except OSError as exc:
        tally.problems.append(f"cannot read {path}: {exc.strerror or exc}")
        return
    if max_size > 0 and len(data) > max_size:
        tally.too_large += 1
    else:
        try:
            did = await spamd.tell(data, "spam")
        except SpamdError as exc:
            raise CliError(f"{exc} ({_story(tally)} until then)", 1) from None
        if "local" in did:
            tally.learnt += 1
        else:
            tally.known += 1
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        tally.problems.append(f"cannot delete {path}: {exc.strerror or exc}")


def _story(tally: Tally) -> str:
    text = f"{tally.learnt} learnt as spam"
    if tally.known:
        text += f", {tally.known} known to spamd already"
    if tally.too_large:
        text += f", {tally.too_large} too large to learn"
    return text


def run(args: argparse.Namespace) -> int:
    if args.root is None:
        raise CliError("--root is required (or $QUAIL_ROOT)")
    if args.older_than < 0 or args.timeout <= 0:
        raise CliError("--older-than must be 0 or more, --timeout more than 0")
    root: Path = args.root
    if not root.is_dir():
        raise CliError(f"{root}: not a directory")
    control = control_for(root)
    spamd = SpamdClient(
        _endpoint(args), timeout=args.timeout, user=control.value("spamduser") or None
    )
    max_size = control.int_value("spamdmaxsize", DEFAULT_MAX_SIZE)
    folders = junk_folders(root)
    problems: list[str] = []
    paths = old_messages(folders, time.time() - args.older_than * DAY, args.include_new, problems)
    bar = Progress("messages learnt", len(paths))
    try:
        tally = asyncio.run(learn(paths, spamd, max_size, bar))
    except CliError:
        if bar.tty:  # the error goes on a line of its own
            bar.stream.write("\n")
        raise
    bar.done()
    print(
        f"{tally.deleted} of {len(paths)} messages from {len(folders)} Junk folders "
        f"deleted: {_story(tally)}"
    )
    problems += tally.problems
    for problem in problems:
        print(f"quail learn: {problem}", file=sys.stderr)
    return 1 if problems else 0
