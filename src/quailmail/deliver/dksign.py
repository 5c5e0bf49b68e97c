"""Signing at delivery, as the seeds' qmail-remote patch does (001_*).

`control/dksign` holds a key path in which `%` stands for the domain of
`Sender:` (else `From:`).  If no file exists for that domain, parent domains
are tried (`bar.example.com`, then `example.com`); with none the message
goes unsigned.  A key file that exists but cannot be read or parsed keeps
the message in the queue (a temporary outcome) so that the problem is fixed
before mail leaves unsigned.  A path without `%` is one key for every
domain.  The selector is the key file's name.  Bounces are signed like any
other mail: that is why the patch signs in qmail-remote.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from quailmail.auth.dkim import SignError, sign_dkim
from quailmail.auth.domainkeys import sign_domainkeys
from quailmail.auth.keys import KeyProblem, parse_private_key
from quailmail.auth.message import parse_message, sender_domain


@dataclass(frozen=True, slots=True)
class Signed:
    """What to put on top of the message (empty: send it unsigned), or
    `temporary` with the reason the message must wait."""

    fields: bytes = b""
    temporary: str | None = None
    key: Path | None = None
    domain: str | None = None


def find_key(
    template: str, domain: str, *, exists: Callable[[str], bool] = os.path.exists
) -> tuple[Path, str] | None:
    """The key file for `domain` and the domain it was found for (d=)."""
    if "%" not in template:
        return (Path(template), domain) if exists(template) else None
    labels = domain.lower().rstrip(".").split(".")
    # bar.example.com, example.com -- never the top-level label alone.
    for start in range(max(len(labels) - 1, 1)):
        candidate = ".".join(labels[start:])
        if "/" in candidate or candidate in ("", ".", ".."):
            return None
        path = template.replace("%", candidate)
        if exists(path):
            return Path(path), candidate
    return None


def sign_for_delivery(
    data: bytes, template: str | None, *, dkim: bool = True, domainkeys: bool = True
) -> Signed:
    """Signature fields for `data` under the `control/dksign` template."""
    if not template:
        return Signed()
    message = parse_message(data)
    domain = sender_domain(message.headers)
    if domain is None:
        return Signed()
    found = find_key(template, domain)
    if found is None:
        return Signed()
    path, d = found
    try:
        key = parse_private_key(path.read_bytes())
    except OSError as exc:
        return Signed(temporary=f"cannot read key {path}: {exc.strerror or exc}", key=path)
    except KeyProblem as exc:
        return Signed(temporary=f"key {path} cannot be used: {exc}", key=path)
    selector = path.name
    fields = b""
    try:
        if dkim:
            fields += sign_dkim(message, key, selector=selector, domain=d)
        if domainkeys and key.type == "rsa":
            fields += sign_domainkeys(message, key, selector=selector, domain=d)
    except (SignError, ValueError) as exc:
        return Signed(temporary=f"cannot sign with {path}: {exc}", key=path)
    return Signed(fields=fields, key=path, domain=d)
