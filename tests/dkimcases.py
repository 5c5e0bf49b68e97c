"""Shared material for DKIM tests: keys, a message, signing helpers."""

from __future__ import annotations

import asyncio
import atexit
from pathlib import Path

from quailmail.auth.dkim import DkimResult, VerifyOptions, sign_dkim, verify_dkim
from quailmail.auth.keys import PrivateKey, parse_private_key
from quailmail.auth.message import parse_message
from quailmail.core.clock import FixedClock
from quailmail.dns.resolver import DnsResolver
from quailmail.dns.zoneserver import Zone, ZoneServer

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


_server: ZoneServer | None = None


def shared_server() -> ZoneServer:
    """One real DNS server on loopback for the DKIM tests; each test sets its zone."""
    global _server  # noqa: PLW0603 (started once per test process)
    if _server is None:
        _server = ZoneServer(Zone()).start()
        atexit.register(_server.stop)
    return _server


def serve_keytable(text: str) -> DnsResolver:
    """Serve a key table (shared test-data format) and return a fresh resolver
    (empty cache) that asks the server over the wire."""
    server = shared_server()
    server.zone.clear()
    server.zone.load_keytable(text)
    return DnsResolver(server.addresses, timeout=2.0)


def rfc8463_resolver() -> DnsResolver:
    return serve_keytable((RFC8463 / "A.2-keys.dns").read_text())


def resolver(**records: str) -> DnsResolver:
    """Selector → record for football.example.com (or full names with dots)."""
    lines = []
    for name, value in records.items():
        full = name if "." in name else f"{name}._domainkey.{DOMAIN}"
        lines.append(f"{full} {value if value else chr(34) * 2}")
    return serve_keytable("\n".join(lines))


def sign(
    message: bytes = MESSAGE, key: PrivateKey = RSA_KEY, selector: str = "test", **kwargs: object
) -> bytes:
    return (
        sign_dkim(parse_message(message), key, selector=selector, domain=DOMAIN, **kwargs) + message
    )  # type: ignore[arg-type]


def verify(
    message: bytes, res: DnsResolver, *, at: float | None = None, **options: object
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
