"""CPU a local delivery as another uid costs (qmail-lspawn's part).

    .venv/bin/python bench/as_user.py [--messages 200] [--concurrency 10]

Creates a system user (useradd, removed at the end whatever happens) with
a Maildir and delivers `--messages` messages of about 1 KB to it through
`deliver_as_user`, `--concurrency` at a time, as the scheduler does within
`concurrencylocal`.  CPU is ours plus that of every process we waited for
(`os.times()`: user + system, self + children, shown apart), taken after the helper
has stopped, so it counts the helper, its forked children and anything
they ran.  Prints wall time and CPU per delivery.  Measured here: 7.6-8.3 ms a
delivery with the helper; 110-130 ms before it (a fresh interpreter per
delivery).

Runs as root (it creates a user and becomes it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from quailmail.deliver.asuser import deliver_as_user
from quailmail.deliver.local import Mailbox
from quailmail.deliver.lspawn import Lspawn

MESSAGE = b"From: a@sender.test\nTo: b@bench.test\nSubject: as user %d\n\n" + b"x" * 1000 + b"\n"


def cpu() -> tuple[float, float]:
    """(ours, that of the processes we waited for)."""
    t = os.times()
    return t.user + t.system, t.children_user + t.children_system


async def deliver_all(mb: Mailbox, messages: int, concurrency: int) -> list[str]:
    limit = asyncio.Semaphore(concurrency)
    async with Lspawn() as spawn:  # the scheduler's helper, started at the first delivery

        async def one(n: int) -> str:
            async with limit:
                result = await deliver_as_user(
                    mb, MESSAGE % n, sender="a@sender.test", junk_folder=False,
                    command_timeout=60, lspawn=spawn,
                )  # fmt: skip
                return result.outcome.kind

        return list(await asyncio.gather(*(one(n) for n in range(messages))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("as_user: needs root", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="quailbench-"))
    os.chmod(base, 0o755)
    name = f"qb{uuid.uuid4().hex[:10]}"
    home = base / name
    subprocess.run(["useradd", "-M", "-d", str(home), "-s", "/bin/sh", "-U", name], check=True)
    try:
        pw = pwd.getpwnam(name)
        for path in (home, home / "Maildir", home / "Maildir/tmp", home / "Maildir/new",
                     home / "Maildir/cur"):  # fmt: skip
            path.mkdir(mode=0o700)
            os.chown(path, pw.pw_uid, pw.pw_gid)
        mb = Mailbox(home, name, name, "bench.test", uid=pw.pw_uid, gid=pw.pw_gid)
        start_cpu, start = cpu(), time.monotonic()
        kinds = asyncio.run(deliver_all(mb, args.messages, args.concurrency))
        wall, end_cpu = time.monotonic() - start, cpu()
        ours, theirs = end_cpu[0] - start_cpu[0], end_cpu[1] - start_cpu[1]
        per = 1000 / args.messages
        delivered = len(os.listdir(home / "Maildir/new"))
        print(f"{args.messages} deliveries as uid {pw.pw_uid}, {args.concurrency} at a time: "
              f"{kinds.count('ok')} ok, {delivered} files; "
              f"{wall:.2f} s wall ({args.messages / wall:.0f}/s), "
              f"{(ours + theirs) * per:.2f} ms CPU a delivery "
              f"(caller {ours * per:.2f}, delivery processes {theirs * per:.2f})")  # fmt: skip
        return 0 if delivered == args.messages else 1
    finally:
        with contextlib.suppress(OSError):
            subprocess.run(["userdel", "-f", name], check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
