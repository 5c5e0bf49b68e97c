"""`quail sign`: sign a message with DKIM and/or DomainKeys, as qmail-dk does.

The selector defaults to the key file's name and the domain to the Sender:
(else From:) domain, the conventions of qmail-dk and the seeds' DKSIGN paths
(`/var/qmail/control/domainkeys/%/private`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from quailmail.auth.dkim import SignError, sign_dkim
from quailmail.auth.domainkeys import sign_domainkeys
from quailmail.auth.keys import KeyProblem, PrivateKey, parse_private_key
from quailmail.auth.message import parse_message
from quailmail.cli.common import CliError, read_input


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "sign",
        help="sign a message (DKIM, DomainKeys or both)",
        description="Read a message (FILE or standard input) and write it signed to "
        "standard output. Without --dkim or --domainkeys, DKIM.",
    )
    p.add_argument("file", metavar="FILE", nargs="?", default="-")
    p.add_argument("--key", required=True, type=Path, help="private key file (PEM)")
    p.add_argument("--selector", help="selector (default: the key file's name)")
    p.add_argument("--domain", help="d= (default: the Sender:, else From:, domain)")
    p.add_argument("--dkim", action="store_true", help="add a DKIM-Signature")
    p.add_argument("--domainkeys", action="store_true", help="add a DomainKey-Signature")
    p.add_argument(
        "--canon",
        help="canonicalization: DKIM header/body (default relaxed/relaxed); "
        "DomainKeys simple or nofws (default simple)",
    )
    p.add_argument(
        "--dk-canon",
        choices=("simple", "nofws"),
        help="DomainKeys canonicalization when both are signed",
    )
    p.add_argument("--headers", help="colon-separated header names to sign (h=)")
    p.add_argument(
        "--algorithm",
        choices=("rsa-sha256", "ed25519-sha256", "rsa-sha1"),
        help="DKIM a= (default from the key: rsa-sha256 or ed25519-sha256)",
    )
    p.add_argument("--identity", help="DKIM i= (absent by default)")
    p.add_argument("--timestamp", type=int, help="DKIM t= (seconds since the epoch)")
    p.add_argument("--expire", type=int, help="DKIM x= (seconds since the epoch)")
    p.add_argument("--body-length", action="store_true", help="add DKIM l= (not recommended)")
    p.set_defaults(handler=run)


def load_key(path: Path) -> PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read key {path}: {exc.strerror or exc}") from None
    try:
        return parse_private_key(data)
    except KeyProblem as exc:
        raise CliError(f"{path}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    key = load_key(args.key)
    data = read_input(args.file)
    message = parse_message(data)
    selector = args.selector or args.key.name
    want_dkim = args.dkim or not args.domainkeys
    headers = tuple(h for h in args.headers.split(":") if h) if args.headers else None
    dk_canon = args.dk_canon or (args.canon if args.domainkeys and not want_dkim else None)
    dkim_canon = args.canon if want_dkim and args.canon else "relaxed/relaxed"
    if want_dkim and args.canon in ("nofws",):
        raise CliError("nofws is a DomainKeys canonicalization; use --dk-canon")
    fields = b""
    try:
        if want_dkim:
            fields += sign_dkim(
                message,
                key,
                selector=selector,
                domain=args.domain,
                algorithm=args.algorithm,
                canon=dkim_canon,
                headers=headers,
                identity=args.identity,
                timestamp=args.timestamp,
                expiration=args.expire,
                body_length=args.body_length,
            )
        if args.domainkeys:
            if dk_canon not in (None, "simple", "nofws"):
                raise CliError(f"DomainKeys canonicalization is simple or nofws, not {dk_canon}")
            fields += sign_domainkeys(
                message,
                key,
                selector=selector,
                domain=args.domain,
                canon=dk_canon or "simple",
                headers=list(headers) if headers else None,
            )
    except (SignError, ValueError) as exc:
        raise CliError(f"cannot sign: {exc}", code=1) from None
    out = sys.stdout.buffer
    out.write(fields)
    out.write(data)
    out.flush()
    return 0
