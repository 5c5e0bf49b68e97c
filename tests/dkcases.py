"""Shared material for DomainKeys tests: the vectors, a key, a message, helpers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from quailmail.auth.domainkeys import DomainKeysResult, sign_domainkeys, verify_domainkeys
from quailmail.auth.keys import PrivateKey, parse_private_key
from quailmail.auth.message import parse_message
from quailmail.dns.resolver import DnsResolver

from dkimcases import serve_keytable

DATA = Path(__file__).parent / "data" / "domainkeys"
VECTORS: dict[str, dict[str, str]] = {
    name: case
    for name, case in json.loads((DATA / "expected.json").read_text()).items()
    if not name.startswith("_")
}
KEY_FILES = {
    "mail-dkim-signer-vectors": DATA / "mail-dkim-signer-vectors" / "test.key",
    "rfc8463-message-dk": DATA / "rfc8463-message-dk" / "A.1-rsa-private.pem",
}
# Mail::DKIM's t/test.key (1024 bits), published as test8._domainkey.messiah.edu.
KEY_FILE = KEY_FILES["mail-dkim-signer-vectors"]
KEY: PrivateKey = parse_private_key(KEY_FILE.read_bytes())
GOOD_KEY = f"test8._domainkey.messiah.edu  k=rsa; p={KEY.public_record_value()}"
BASE = (
    b"From: Jason Long <jlong@messiah.edu>\r\n"
    b"Subject: hi there\r\n"
    b"To: someone@example.org\r\n"
    b"\r\n"
    b"this is a sample message\r\n"
)


def keytable_resolver(path: Path | str) -> DnsResolver:
    """The resolver every DomainKeys test uses: the key table served by the
    real DNS server on loopback, asked over the wire."""
    return serve_keytable(Path(path).read_text())


def resolver(tmp_path: Path, *lines: str) -> DnsResolver:
    """A key table of `lines` (`NAME  VALUE`), written out and served."""
    path = tmp_path / "keys.dns"
    path.write_text("".join(f"{line}\n" for line in lines))
    return keytable_resolver(path)


def sign(message: bytes = BASE, key: PrivateKey = KEY, **options: Any) -> bytes:
    """`message` with a DomainKey-Signature on top (selector test8 by default)."""
    options.setdefault("selector", "test8")
    return sign_domainkeys(parse_message(message), key, **options) + message


def verify(data: bytes, dns: DnsResolver, **options: Any) -> DomainKeysResult:
    return asyncio.run(verify_domainkeys(parse_message(data), dns, **options))


def without_signature(data: bytes) -> bytes:
    """The message with its first header field (the DomainKey-Signature,
    continuation lines included) removed."""
    lines = data.split(b"\r\n")
    assert lines[0].lower().startswith(b"domainkey-signature:")
    rest = 1
    while lines[rest][:1] in (b" ", b"\t"):
        rest += 1
    return b"\r\n".join(lines[rest:])
