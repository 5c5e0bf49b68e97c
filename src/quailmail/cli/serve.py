"""`quail serve`: run a root's listeners and queue in the foreground.

With several workers (`--workers N`, else `control/workers`, else 1) the
command supervises N processes that share the listening sockets
(SO_REUSEPORT), each writing its own queue shard; SIGTERM to the
supervisor stops them all cleanly, and a worker dies with its supervisor
(PR_SET_PDEATHSIG), so a killed server is killed whole.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from quailmail.cli.common import CliError, add_root_option
from quailmail.config.control import control_for
from quailmail.server.app import ServeError, serve

_PR_SET_PDEATHSIG = 1


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "serve",
        help="run the SMTP listeners and the queue of a root (foreground)",
        description="Serve ROOT in the foreground; SIGTERM stops it cleanly.",
    )
    add_root_option(p)
    p.add_argument("--quiet", action="store_true", help="log warnings only")
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes sharing the listeners (default: control/workers, else 1)",
    )
    p.add_argument(
        "--receive-only",
        action="store_true",
        help="accept and queue mail but deliver nothing (no scheduler)",
    )
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set by the supervisor
    p.add_argument("--parent", type=int, help=argparse.SUPPRESS)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.root is None:
        raise CliError("give --root DIR (or set $QUAIL_ROOT)")
    root: Path = args.root.resolve()
    if not (root / "control").is_dir():
        raise CliError(f"{args.root} is not a quailmail root (run: quail init {args.root})")
    workers = args.workers or control_for(root).int_value("workers", 1)
    if workers < 1:
        raise CliError("--workers must be at least 1")
    if workers > 1 and args.worker is None:
        return _supervise(root, workers, quiet=args.quiet, receive_only=args.receive_only)
    worker = args.worker or 0
    if args.parent is not None:
        _die_with_parent(args.parent)
    _log_to_stderr(worker, logging.WARNING if args.quiet else logging.INFO)
    try:
        import uvloop  # noqa: PLC0415 (optional: the faster event loop when installed)
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(serve(root, worker=worker, workers=workers, deliver=not args.receive_only))
    except ServeError as exc:
        raise CliError(str(exc), code=1) from None
    return 0


class _LogFormat(logging.Formatter):
    """logging's own line, with the date and time formatted once a second
    rather than once a line: a busy server logs several lines a message."""

    _second = -1
    _stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        return f"{self._stamp},{int(record.msecs):03d}"  # logging's default_msec_format


def _log_to_stderr(worker: int, level: int) -> None:
    """One line a record on stderr, for multilog or journald to take.

    Our lines name no thread, process or source line, so logging is told
    not to look them up for every record (the logging HOWTO's
    "Optimization"): that and the time above cost a third of a line."""
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # no caller's frame looked up
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogFormat(f"%(asctime)s %(name)s[{worker}]: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this worker when the supervisor goes, however it goes."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os._exit(1)


def _supervise(root: Path, workers: int, *, quiet: bool, receive_only: bool) -> int:
    command = [sys.executable, "-m", "quailmail", "serve", "--root", str(root)]
    command += ["--workers", str(workers), "--parent", str(os.getpid())]
    if quiet:
        command.append("--quiet")
    if receive_only:
        command.append("--receive-only")
    children = [subprocess.Popen([*command, "--worker", str(i)]) for i in range(workers)]

    stopping = []

    def forward(signum: int, _frame: object) -> None:
        stopping.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def failed(code: int) -> bool:
        # A worker still starting when told to stop dies of the SIGTERM
        # itself, before its handler is in place: that is a clean stop too.
        return code != 0 and not (stopping and code == -signal.SIGTERM)

    def alarm(signum: int, _frame: object) -> None:
        for child in children:  # `kill -ALRM` the supervisor: every worker flushes
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGALRM, alarm)
    status = 0
    try:
        # The first worker to exit ends the server: the others are told to stop.
        pid, raw = os.wait()
        code = os.waitstatus_to_exitcode(raw)
        for child in children:
            if child.pid == pid:
                child.returncode = code
        if failed(code):
            status = code if code > 0 else 1
        forward(signal.SIGTERM, None)
        for child in children:
            child.wait()
            if failed(child.returncode) and status == 0:
                status = child.returncode if child.returncode > 0 else 1
    except KeyboardInterrupt:
        forward(signal.SIGTERM, None)
    return status
