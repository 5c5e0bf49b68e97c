"""`quail tcprules`: compile per-client rules, or say which rule a client meets.

`quail tcprules RULES.cdb RULES.tmp < rules` is ucspi-tcp's tcprules: it reads
the rules on standard input, writes RULES.tmp, fsyncs it and renames it over
RULES.cdb; on a bad line it prints the line's number and text and leaves
RULES.cdb alone.  Exit codes are tcprules': 100 for bad input, 111 when a file
cannot be written.

`quail tcprules --check IP [--hostname NAME] [--rules FILE.cdb]` prints what
tcprulescheck prints ("rule KEY:", "set environment variable VAR=value", "allow
connection" / "deny connection", or "default:" when no rule matches), for the
address as the server sees it (IPv4-mapped IPv6 addresses as IPv4).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from quailmail.cli.common import CliError, add_root_option
from quailmail.config.cdb import CdbError, write_atomic
from quailmail.config.tcprules import (
    SMTP_RULES,
    TcpRulesError,
    compile_rules,
    control_rules,
    lookup,
)

BAD_INPUT = 100  # tcprules' exit code for a line it cannot parse
CANNOT_WRITE = 111  # tcprules' (and tcprulescheck's) code for file trouble


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "tcprules",
        help="compile tcprules text to a cdb, or check which rule a client meets",
        description="Compile rules from standard input into RULES.cdb by way of "
        "RULES.tmp (as ucspi-tcp's tcprules), or with --check print the rule an "
        "address meets (as tcprulescheck).",
    )
    p.add_argument("files", metavar="RULES.cdb RULES.tmp", nargs="*")
    p.add_argument("--check", metavar="IP", help="print the rule this client address meets")
    p.add_argument(
        "--hostname", metavar="NAME", help="with --check: the client's verified reverse name"
    )
    p.add_argument("--info", metavar="USER", help=argparse.SUPPRESS)  # ident (TCPREMOTEINFO)
    p.add_argument(
        "--rules",
        type=Path,
        metavar="FILE.cdb",
        help=f"with --check: the rules cdb (default: control/{SMTP_RULES} of --root)",
    )
    add_root_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.check is not None:
        if args.files:
            raise CliError("--check takes no RULES.cdb RULES.tmp")
        return check(args)
    if args.hostname or args.rules or args.info:
        raise CliError("--hostname and --rules go with --check")
    if len(args.files) != 2:
        raise CliError("usage: quail tcprules RULES.cdb RULES.tmp < rules", code=BAD_INPUT)
    return build(Path(args.files[0]), Path(args.files[1]))


def build(target: Path, tmp: Path) -> int:
    text = sys.stdin.buffer.read().decode("utf-8", "surrogateescape")
    try:
        data = compile_rules(text)
    except TcpRulesError as exc:
        raise CliError(f"unable to parse {exc}", code=BAD_INPUT) from None
    try:
        write_atomic(target, tmp, data)
    except OSError as exc:
        raise CliError(
            f"unable to write {target} by way of {tmp}: {exc.strerror or exc}",
            code=CANNOT_WRITE,
        ) from None
    return 0


def check(args: argparse.Namespace) -> int:
    path: Path | None = args.rules
    if path is None:
        if args.root is None:
            raise CliError("--check needs --rules FILE.cdb, or --root (or $QUAIL_ROOT)")
        path = control_rules(args.root)
    try:
        match = lookup(path, args.check, hostname=args.hostname, info=args.info, missing_ok=False)
    except ValueError as exc:
        if isinstance(exc, CdbError):
            raise CliError(f"unable to read {path}: {exc}", code=CANNOT_WRITE) from None
        raise CliError(f"not an IP address: {args.check!r}") from None
    except OSError as exc:
        raise CliError(f"unable to read {path}: {exc.strerror or exc}", code=CANNOT_WRITE) from None
    if match is None:
        lines = ["default:", "allow connection"]
        _write(lines)
        return 0
    lines = [f"rule {match.key}:"]
    if match.allow:
        lines.extend(f"set environment variable {name}={value}" for name, value in match.settings)
        lines.append("allow connection")
    else:
        # tcprulescheck stops at the D that starts a deny rule's value.
        lines.append("deny connection")
    _write(lines)
    return 0


def _write(lines: list[str]) -> None:
    # Keys and values are bytes in the cdb; print them back as they were.
    sys.stdout.buffer.write(
        "".join(f"{line}\n" for line in lines).encode("utf-8", "surrogateescape")
    )
    sys.stdout.flush()
