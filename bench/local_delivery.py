"""Local delivery to a Maildir, quailmail beside Postfix's virtual(8) in one run.

    .venv/bin/python bench/local_delivery.py [--messages 5000]
        [--concurrency 50] [--size 4096] [--rounds 3] [--json FILE]

smtp-source (`--concurrency` sessions, one message per connection) sends
`--messages` messages of `--size` bytes to one virtual user, joe@bench.test,
on 127.0.0.1; the server queues each (fsync before 250) and delivers it to
the user's Maildir:

- quailmail: `quail init ROOT --hostname bench.test` (one worker per CPU,
  `concurrencylocal` 10 split among them), `quail user add joe@bench.test`
  (vpopmail's layout: ROOT/domains/bench.test/joe/Maildir), `quail serve
  --quiet`.  Delivery writes the file in tmp/, fsyncs it, links it into
  new/ and fsyncs new/.
- Postfix: bench/postfix_relay_anchor.py's private Postfix with its
  defaults, bench.test a virtual mailbox domain delivered by virtual(8) (as
  nobody; destination concurrency 20) to its Maildir.

Each server: a warm-up of 2 x concurrency messages; then `--rounds` rounds,
the servers in turn (every other round in reverse).  A round: time from
smtp-source's start to its end (accepted msgs/s) and to the count of files
in Maildir/new reaching `--messages` (delivered msgs/s, polled every 20 ms);
then the queue must empty and exactly what was sent must have arrived, and
new/ is moved aside (a fresh new/ in its place) for the next round.  Not
emptied: on an ext4 without a journal, as here, each file created within
30 s of thousands of deletions pays an inode-table probe per deleted inode
(ext4's recently_deleted), which measured the cleanup, not the delivery:
about 480/s here with deletions against 750/s without.  The table shows
the median of the rounds.

Goal: quailmail delivers >= 1,000 msgs/s.  That number depends on the
machine; Postfix beside it says what this machine does.

Runs as root (Postfix's master must); needs postfix and smtp-source
(`make peers`).  Every process it starts is stopped on exit, failure or
signal.
"""

from __future__ import annotations

import argparse
import os
import pwd
import sys
import time
from pathlib import Path

import quailmail
from postfix_relay_anchor import (
    Mode,
    Postfix,
    arguments,
    bench_main,
    load_average,
    program,
    run_rigs,
    table_row,
    wait_count,
    work_directory,
    write_results,
)
from smtp_accept import BenchError, Quail

GOAL = 1000.0  # quailmail's delivered msgs/s
USER = "joe@bench.test"

# Added to the anchor's main.cf: bench.test's one user, by virtual(8).
VIRTUAL_CF = """\
virtual_mailbox_domains = bench.test
virtual_mailbox_base = {base}
virtual_mailbox_maps = inline:{{ {user}=bench.test/joe/Maildir/ }}
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
"""
VIRTUAL_MASTER_CF = "virtual   unix  -  n  n  -  -  virtual\n"


class Maildir:
    """Messages delivered to a Maildir: the files in new/ (a delivery links
    its file there last) and those cleared away after a round."""

    arrived = "delivered"

    def __init__(self, path: Path) -> None:
        self.new = path / "new"
        self.cleared = 0
        self.rounds = 0

    def received(self) -> int:
        try:
            return self.cleared + len(os.listdir(self.new))
        except FileNotFoundError:
            return self.cleared

    def wait_received(self, count: int, deadline: float) -> float:
        # Listing 5,000 names costs ~1 ms: every 20 ms keeps the poll's CPU small.
        return wait_count(self.received, count, deadline, 0.02, str(self.new))

    def clear(self) -> None:
        # Moved aside, not deleted: on an ext4 without a journal (this
        # machine's), creating a file skips every inode freed in the last
        # 30 s (ext4's recently_deleted), one inode-table probe each, so
        # thousands of deletions just before a round slow each create of
        # the next and bias the round by whatever ran before it.
        moved = self.new.parent / f"cleared-{self.rounds}"
        self.rounds += 1
        st = self.new.stat()
        count = len(os.listdir(self.new))
        self.new.rename(moved)
        self.new.mkdir(mode=st.st_mode & 0o7777)
        os.chown(self.new, st.st_uid, st.st_gid)
        self.cleared += count


class QuailLocal:
    def __init__(self, work: Path, mode: Mode) -> None:
        self.mode = mode
        self.quail = Quail(work, "quail-local", receive_only=False)
        self.sink = Maildir(self.quail.root / "domains" / "bench.test" / "joe" / "Maildir")
        self.recipient = USER

    @property
    def port(self) -> int:
        return self.quail.port

    def start(self) -> None:
        self.quail.init()
        root = str(self.quail.root)
        done = self.quail.quail(
            "user", "add", USER, "--password-stdin", "--root", root, stdin="bench-password\n"
        )
        if done.returncode != 0:
            raise BenchError(f"quail user add: {done.stderr.strip()}")
        # `quail init` listed bench.test in locals, which wins over
        # virtualdomains (as in qmail-send): the user's domain must leave it.
        (self.quail.root / "control" / "locals").write_text("localhost\n")
        self.quail.serve()

    def check(self, args: argparse.Namespace) -> None:
        pass  # the warm-up's messages must arrive

    def pids(self) -> list[int]:
        return [self.quail.pid]

    def queued(self) -> int:
        return self.quail.queued()

    def versions(self) -> dict[str, str]:
        return {"quailmail": quailmail.__version__}

    def stop(self) -> None:
        self.quail.stop()


class PostfixLocal:
    def __init__(self, work: Path, mode: Mode) -> None:
        self.mode = mode
        self.postfix = Postfix(work, "postfix-local")
        self.base = work / "postfix-mail"
        self.sink = Maildir(self.base / "bench.test" / "joe" / "Maildir")
        self.recipient = USER

    @property
    def port(self) -> int:
        return self.postfix.port

    def start(self) -> None:
        nobody = pwd.getpwnam("nobody")  # virtual(8) refuses uid 0
        self.base.mkdir()
        os.chown(self.base, nobody.pw_uid, nobody.pw_gid)
        main_cf = VIRTUAL_CF.format(base=self.base, user=USER, uid=nobody.pw_uid, gid=nobody.pw_gid)
        self.postfix.start({}, main_cf=main_cf, master_cf=VIRTUAL_MASTER_CF)

    def check(self, args: argparse.Namespace) -> None:
        pass

    def pids(self) -> list[int]:
        return [self.postfix.master_pid]

    def queued(self) -> int:
        return self.postfix.queued()

    def versions(self) -> dict[str, str]:
        return {"postfix": self.postfix.version}

    def stop(self) -> None:
        self.postfix.stop()


def report(modes: dict[str, Mode], args: argparse.Namespace, versions: dict[str, str]) -> list[str]:
    quail, postfix = modes["quailmail"], modes["postfix"]
    lines = [
        f"Local delivery to one Maildir, msgs/s (median of {args.rounds} round(s); "
        f"{args.messages} messages of {args.size} B, smtp-source at {args.concurrency} "
        f"connections -> server -> Maildir/new)",
        "",
        f"{'server':<26} {'accepted/s':>10} {'deliver/s':>10} {'CPU ms/msg':>10}",
        table_row(f"Postfix {versions.get('postfix', '')} virtual(8)", postfix),
        table_row(f"quailmail {versions.get('quailmail', '')}", quail),
    ]
    delivered = quail.median("relayed_rate")
    ratio = delivered / postfix.median("relayed_rate")
    verdict = "met" if delivered >= GOAL else "MISSED"
    lines += [
        "",
        f"quailmail delivered {delivered:.0f}/s (goal >= {GOAL:.0f}/s {verdict}), "
        f"{ratio:.2f}x Postfix",
    ]
    return lines


def run(args: argparse.Namespace) -> int:
    for name in ("postfix", "smtp-source"):
        program(name)
    modes = {name: Mode(name, signed=False) for name in ("postfix", "quailmail")}
    started, load = time.monotonic(), load_average()
    with work_directory(args, "quail-local-") as work:
        versions = run_rigs(
            [PostfixLocal(work, modes["postfix"]), QuailLocal(work, modes["quailmail"])], args
        )
    write_results(
        args,
        "local_delivery",
        list(modes.values()),
        report(modes, args, versions),
        arrived="delivered",
        quailmail_version=versions.get("quailmail", ""),
        postfix_version=versions.get("postfix", ""),
        wall_seconds=round(time.monotonic() - started, 1),
        load_average_at_start=load,
    )
    return 0


def main() -> int:
    return bench_main("local_delivery", arguments(__doc__, "local_delivery"), run)


if __name__ == "__main__":
    sys.exit(main())
