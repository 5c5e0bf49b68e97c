"""`quail check-dns`: what is wrong with a domain's mail DNS, before the world sees it.

Reads the records the seeds publish (../shared/seeds/003_*: SPF, Sender ID,
DomainKeys policy and selectors, DKIM, ADSP) plus DMARC and the MX hosts with
their IPv4 and IPv6 addresses.  Each finding is ok / warning / error with a
one-line reason and the record it read.  Exit 1 when there is an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any

from quailmail.auth.keys import KeyProblem, PrivateKey, parse_private_key
from quailmail.cli.common import CliError, add_dns_options
from quailmail.dns.resolver import make_resolver
from quailmail.dnscheck import check_domain
from quailmail.dnscheck.findings import Finding, Level

_DOMAIN = re.compile(r"(?=.{1,253}\Z)([A-Za-z0-9_-]{1,63}\.)+[A-Za-z0-9-]{1,63}\.?\Z")
_RECORD_WIDTH = 110


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "check-dns",
        help="check a domain's SPF, DKIM, DomainKeys, ADSP, DMARC and MX records",
        description="Check the mail records a domain publishes. Exit 1 when one is wrong.",
    )
    p.add_argument("domain", metavar="DOMAIN")
    p.add_argument(
        "--selector", action="append", default=[], metavar="S", help="DKIM selector (repeatable)"
    )
    p.add_argument(
        "--key",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="private key whose public half must be published (selector: the file's name)",
    )
    p.add_argument("--json", action="store_true", help="the findings as a JSON array")
    add_dns_options(p)
    p.set_defaults(handler=run)


def _keys(paths: list[Path]) -> dict[str, PrivateKey]:
    out: dict[str, PrivateKey] = {}
    for path in paths:
        try:
            out[path.name] = parse_private_key(path.read_bytes())
        except OSError as exc:
            raise CliError(f"cannot read key {path}: {exc.strerror or exc}") from None
        except KeyProblem as exc:
            raise CliError(f"{path}: {exc}") from None
    return out


def _show(finding: Finding) -> str:
    line = f"{finding.level.value:<8} {finding.check:<11} {finding.name}: {finding.reason}"
    if finding.record is not None:
        record = finding.record
        if len(record) > _RECORD_WIDTH:
            record = record[: _RECORD_WIDTH - 1] + "…"
        line += f"\n{'':20}{record}"
    return line


def run(args: argparse.Namespace) -> int:
    domain = args.domain.strip().lower().rstrip(".")
    if not _DOMAIN.match(domain):
        raise CliError(f"{args.domain!r} is not a domain name")
    keys = _keys(args.key)
    try:
        resolver = make_resolver(args.dns, args.root)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    selectors = list(dict.fromkeys([*args.selector, *keys]))
    findings = asyncio.run(check_domain(domain, resolver, selectors=selectors, keys=keys))
    if args.json:
        print(json.dumps([f.as_json() for f in findings], indent=1))
    else:
        for finding in findings:
            print(_show(finding))
        counts = {level: sum(f.level is level for f in findings) for level in Level}
        print(
            f"{counts[Level.OK]} ok, {counts[Level.WARNING]} warnings, "
            f"{counts[Level.ERROR]} errors",
            file=sys.stdout,
        )
    return 1 if any(f.level is Level.ERROR for f in findings) else 0
