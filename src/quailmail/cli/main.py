"""`quail`: the command line.  Subcommands live in their own modules."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from quailmail import __version__
from quailmail.cli import (
    checkdns,
    dknewkey,
    init,
    inject,
    queue,
    serve,
    sign,
    spf,
    tcprules,
    user,
    verify,
)
from quailmail.cli.common import CliError

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quail", description="quailmail: a qmail-style mail server."
    )
    parser.add_argument("--version", action="version", version=f"quail {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in (
        init,
        serve,
        inject,
        dknewkey,
        sign,
        verify,
        spf,
        checkdns,
        tcprules,
        user,
        queue,
    ):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except CliError as exc:
        print(f"quail {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 141


if __name__ == "__main__":
    sys.exit(main())
