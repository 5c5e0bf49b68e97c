"""`quail verify`: check every DKIM and DomainKeys signature of messages.

Prints the Authentication-Results line per file, or with --json one object
per line.  Exit 0 when every file could be judged, whatever the verdicts;
2 when an input could not be read.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from typing import Any

from quailmail.auth import authres
from quailmail.auth.dkim import DkimResult, VerifyOptions, verify_dkim
from quailmail.auth.domainkeys import DomainKeysResult, verify_domainkeys
from quailmail.auth.message import parse_message
from quailmail.cli.common import CliError, add_dns_options, authserv_id, read_input
from quailmail.core.clock import Clock, FixedClock, SystemClock
from quailmail.core.dns import Resolver
from quailmail.dns.resolver import make_resolver


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "verify",
        help="verify DKIM and DomainKeys signatures",
        description="Verify every DKIM and DomainKeys signature of each FILE ('-' for "
        "standard input).",
    )
    p.add_argument("files", metavar="FILE", nargs="+")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.add_argument("--at", type=float, metavar="UNIXTIME", help="judge x= as of this time")
    p.add_argument(
        "--accept-sha1", action="store_true", help="accept rsa-sha1 (RFC 8301 refuses it)"
    )
    p.add_argument(
        "--min-key-bits",
        type=int,
        metavar="N",
        help="refuse shorter keys (default: DKIM 1024, as RFC 8301; DomainKeys none, "
        "as libdomainkeys)",
    )
    p.add_argument("--authserv-id", help="authserv-id (default: control/me, else host name)")
    add_dns_options(p)
    p.set_defaults(handler=run)


def dkim_json(result: DkimResult) -> dict[str, Any]:
    return {
        "result": result.result.value,
        "code": result.code,
        "reason": result.reason,
        "signatures": [
            {
                "domain": s.domain,
                "selector": s.selector,
                "algorithm": s.algorithm,
                "result": s.result.value,
                "code": s.code,
                "reason": s.reason,
            }
            for s in result.signatures
        ],
    }


def domainkeys_json(result: DomainKeysResult) -> dict[str, Any]:
    return {
        "result": result.result.value,
        "code": result.status.letter,
        "reason": result.reason,
        "domain": result.domain,
        "selector": result.selector,
    }


async def _judge(
    data: bytes, resolver: Resolver, options: VerifyOptions, clock: Clock, dk_min_bits: int
) -> tuple[DkimResult, DomainKeysResult]:
    message = parse_message(data)
    dkim = await verify_dkim(message, resolver, options=options, clock=clock)
    dk = await verify_domainkeys(message, resolver, min_key_bits=dk_min_bits)
    return dkim, dk


async def _run(args: argparse.Namespace) -> int:
    try:
        resolver = make_resolver(args.dns, args.root)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    # --min-key-bits sets both floors; without it each verifier's own default.
    given = args.min_key_bits
    options = VerifyOptions(accept_sha1=args.accept_sha1)
    if given is not None:
        options = dataclasses.replace(options, min_key_bits=given)
    dk_min_bits = given or 0
    clock: Clock = FixedClock(args.at) if args.at is not None else SystemClock()
    server_id = authserv_id(args.authserv_id, args.root)
    status = 0
    many = len(args.files) > 1
    for name in args.files:
        try:
            data = read_input(name)
        except CliError as exc:
            print(f"quail verify: {exc}", file=sys.stderr)
            status = 2
            continue
        dkim, dk = await _judge(data, resolver, options, clock, dk_min_bits)
        if args.json:
            line = json.dumps(
                {"file": name, "dkim": dkim_json(dkim), "domainkeys": domainkeys_json(dk)}
            )
        else:
            line = authres.authentication_results(
                server_id, authres.domainkeys_and_dkim(dk, dkim), fold=False
            )
            if many:
                line = f"{name}: {line}"
        print(line, flush=True)
    return status


def run(args: argparse.Namespace) -> int:
    if args.min_key_bits is not None and args.min_key_bits < 0:
        raise CliError("--min-key-bits must not be negative")
    return asyncio.run(_run(args))
