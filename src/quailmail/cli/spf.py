"""`quail spf`: check a client address against a sender's SPF record.

Prints the result word, the explanation (for a fail) and the Received-SPF
field (RFC 7208 §9.1); with --json one object.  Exit 0 whatever the
verdict; 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from quailmail.auth import authres
from quailmail.auth.spf import check_helo, check_mailfrom, client_address
from quailmail.cli.common import CliError, add_dns_options, authserv_id
from quailmail.dns.resolver import make_resolver


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "spf",
        help="check a client address against a sender's SPF record",
        description="Evaluate SPF (RFC 7208) for a client address and a MAIL FROM sender "
        "(an empty --sender is the null sender: postmaster@HELO is checked), or for the "
        "HELO name alone with --helo and no --sender.",
    )
    p.add_argument("--ip", metavar="IP", help="the client's IPv4 or IPv6 address")
    p.add_argument("--sender", metavar="ADDR", help="the MAIL FROM address ('' for <>)")
    p.add_argument("--helo", metavar="NAME", default="", help="the HELO/EHLO name")
    p.add_argument(
        "--receiver",
        metavar="NAME",
        help="this host's name, for %%{r} and receiver= (default: control/me, else host name)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object")
    add_dns_options(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Checked here rather than with required=True, so that a missing
    # argument is one line on stderr like every other error.
    if not args.ip:
        raise CliError("--ip is required")
    if args.sender is None and not args.helo:
        raise CliError("--sender is required (or --helo to check the HELO name)")
    if args.sender == "" and not args.helo:
        raise CliError("a null --sender needs --helo (postmaster@HELO is checked)")
    try:
        address = client_address(args.ip.strip())
    except ValueError:
        raise CliError(f"--ip {args.ip!r} is not an IP address") from None
    try:
        resolver = make_resolver(args.dns, args.root)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    receiver = authserv_id(args.receiver, args.root)
    if args.sender is None:
        verdict = asyncio.run(check_helo(address, args.helo, resolver, receiver=receiver))
    else:
        verdict = asyncio.run(
            check_mailfrom(address, args.sender, args.helo, resolver, receiver=receiver)
        )
    header = authres.received_spf(verdict)
    if args.json:
        print(
            json.dumps(
                {
                    "result": verdict.result.value,
                    "explanation": verdict.explanation,
                    "mechanism": verdict.mechanism,
                    "received_spf": header,
                }
            )
        )
    else:
        print(verdict.result.value)
        if verdict.explanation:
            print(verdict.explanation)
        print(header)
    return 0
