"""Shared material for DKIM tests: keys, a message, signing helpers."""

from __future__ import annotations

import asyncio
from pathlib import Path

from keytable import TableResolver, load_keytable
from quailmail.auth.dkim import DkimResult, VerifyOptions, sign_dkim, verify_dkim
from quailmail.auth.keys import PrivateKey, parse_private_key
from quailmail.auth.message import parse_message
from quailmail.core.clock import FixedClock

DATA = Path(__file__).parent / "data"
RFC8463 = DATA / "dkim" / "rfc8463"
DOMAIN = "football.example.com"

RSA_KEY: PrivateKey = parse_private_key((RFC8463 / "A.1-rsa-private.pem").read_bytes())
ED_KEY: PrivateKey = parse_private_key((RFC8463 / "A.1-ed25519-private.b64").read_bytes())
RSA_RECORD = "v=DKIM1; k=rsa; p=" + RSA_KEY.public_record_value()
ED_RECORD = "v=DKIM1; k=ed25519; p=" + ED_KEY.public_record_value()

MESSAGE = (
    b"From: Joe SixPack <joe@football.example.com>\r\n"
    b"To: Suzie Q <suzie@shopping.example.net>\r\n"
    b"Subject: Is dinner ready?\r\n"
    b"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    b"Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
    b"\r\n"
    b"Hi.\r\n"
    b"\r\n"
    b"We lost the game.  Are you hungry yet?\r\n"
    b"\r\n"
    b"Joe.\r\n"
)


def rfc8463_resolver() -> TableResolver:
    return TableResolver(load_keytable(RFC8463 / "A.2-keys.dns"))


def resolver(**records: str) -> TableResolver:
    """Selector → record for football.example.com (plus any full names)."""
    table = {}
    for name, value in records.items():
        table[name if "." in name else f"{name}._domainkey.{DOMAIN}"] = value
    return TableResolver(table)


def sign(
    message: bytes = MESSAGE, key: PrivateKey = RSA_KEY, selector: str = "test", **kwargs: object
) -> bytes:
    return (
        sign_dkim(parse_message(message), key, selector=selector, domain=DOMAIN, **kwargs) + message
    )  # type: ignore[arg-type]


def verify(
    message: bytes, res: TableResolver, *, at: float | None = None, **options: object
) -> DkimResult:
    clock = FixedClock(at) if at is not None else None
    return asyncio.run(
        verify_dkim(
            parse_message(message),
            res,
            options=VerifyOptions(**options),  # type: ignore[arg-type]
            clock=clock,
        )
    )
