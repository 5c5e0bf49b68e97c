"""`quail serve`: run a root's listeners and queue in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from quailmail.cli.common import CliError, add_root_option
from quailmail.server.app import ServeError, serve


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "serve",
        help="run the SMTP listeners and the queue of a root (foreground)",
        description="Serve ROOT in the foreground; SIGTERM stops it cleanly.",
    )
    add_root_option(p)
    p.add_argument("--quiet", action="store_true", help="log warnings only")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.root is None:
        raise CliError("give --root DIR (or set $QUAIL_ROOT)")
    if not (args.root / "control").is_dir():
        raise CliError(f"{args.root} is not a quailmail root (run: quail init {args.root})")
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
    )
    try:
        import uvloop  # noqa: PLC0415 (optional: the faster event loop when installed)
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(serve(args.root.resolve()))
    except ServeError as exc:
        raise CliError(str(exc), code=1) from None
    return 0
