"""What every subcommand shares: errors, --dns/--root, reading input."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from quailmail.config.control import FileReadError, control_for


class CliError(Exception):
    """A problem the user can fix; printed as one line, exit `code`."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def handle(args: argparse.Namespace) -> int:
    """Run a parsed subcommand: its exit code, one line on stderr for a
    CliError, 130 on ^C, 141 when the reader of stdout went away."""
    try:
        return int(args.handler(args))
    except CliError as exc:
        print(f"quail {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except FileReadError as exc:  # a control file there but unreadable
        print(f"quail {args.command}: {exc}", file=sys.stderr)
        return 111
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 141


def standalone(prog: str, command: str, register: Callable[[Any], None],
               argv: Sequence[str] | None) -> int:  # fmt: skip
    """A subcommand as its own program (`quail-dkverify`, `quail-qmail-queue`:
    what QMAILQUEUE chains exec by path)."""
    parser = argparse.ArgumentParser(prog=prog)
    register(parser.add_subparsers(dest="command"))
    return handle(parser.parse_args([command, *(sys.argv[1:] if argv is None else argv)]))


def add_dns_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dns",
        action="append",
        metavar="HOST[:PORT]",
        help="DNS server to ask instead of the system's (repeatable; [::1]:53 for IPv6)",
    )
    add_root_option(parser)


def add_root_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        type=Path,
        default=os.environ.get("QUAIL_ROOT") or None,
        help="quailmail root directory (default $QUAIL_ROOT); its control/ is read",
    )


def read_input(name: str) -> bytes:
    """A message from a file, or standard input for "-"."""
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {name}: {exc.strerror or exc}") from None


def control_value(root: Path | None, name: str) -> str | None:
    """A one-value control file of the root, read as qmail reads it."""
    if root is None:
        return None
    return control_for(root).value(name)


def authserv_id(explicit: str | None, root: Path | None) -> str:
    """--authserv-id, else control/me of the root, else this host's name."""
    return explicit or control_value(root, "me") or socket.getfqdn()
