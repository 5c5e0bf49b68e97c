"""`quail dknewkey`: make a signing key and print the DNS record that publishes it.

As the seeds use libdomainkeys' dknewkey: `dknewkey default 1024 > default.pub`
writes the private key to the file `default` and prints the record.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from quailmail.auth import keys
from quailmail.cli.common import CliError

_DOMAIN = re.compile(r"(?=.{1,253}\Z)([A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,63}\Z")


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "dknewkey",
        help="generate a DKIM/DomainKeys key pair",
        description="Write a new private key to the file SELECTOR (mode 0600) and print "
        "its DNS TXT record.",
    )
    p.add_argument(
        "selector", metavar="SELECTOR", help="key file to write; its name is the selector"
    )
    p.add_argument("bits_pos", metavar="BITS", nargs="?", type=int, help="RSA key size")
    p.add_argument("--type", choices=("rsa", "ed25519"), default="rsa")
    p.add_argument("--bits", type=int, default=None, help="RSA key size (default 2048)")
    p.add_argument("--format", choices=("bind", "tinydns", "value"), default="bind")
    p.add_argument(
        "--domain",
        help="domain for the tinydns line (default: the key's directory name, "
        "as in /etc/domainkeys/example.com/default)",
    )
    p.add_argument("--ttl", type=int, default=3600, help="TTL of the tinydns line")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.bits is not None and args.bits_pos is not None and args.bits != args.bits_pos:
        raise CliError("BITS and --bits disagree")
    bits = args.bits or args.bits_pos or 2048
    path = Path(args.selector)
    selector = path.name
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", selector):
        raise CliError(f"{selector!r} is not a usable selector name")
    if args.type == "rsa" and bits < keys.MIN_GENERATE_BITS:
        raise CliError(
            f"{bits}-bit RSA keys are refused: they are broken (RFC 8301 requires at least "
            f"{keys.MIN_GENERATE_BITS})"
        )
    domain = None
    if args.format == "tinydns":
        domain = args.domain or path.resolve().parent.name
        if not _DOMAIN.match(domain):
            raise CliError(f"give --domain: {domain!r} is not a domain name")
    try:
        key = keys.generate(args.type, bits)
    except keys.KeyProblem as exc:
        raise CliError(str(exc)) from None
    pem = keys.private_key_pem(key)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CliError(f"{path} exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise CliError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
        out.flush()
        os.fsync(out.fileno())
    value = keys.record_value(key)
    if args.format == "value":
        line = value
    elif args.format == "tinydns":
        line = keys.tinydns_record(f"{selector}._domainkey.{domain}", value, args.ttl)
    else:
        line = keys.bind_record(selector, value)
    sys.stdout.write(line + "\n")
    return 0
