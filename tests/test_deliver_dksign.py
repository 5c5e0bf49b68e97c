"""control/dksign: the key for the sender's domain or a parent, signatures
that verify, and the cases that send unsigned or keep the message queued."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from quailmail.auth.dkim import verify_dkim
from quailmail.auth.domainkeys import verify_domainkeys
from quailmail.auth.keys import generate, private_key_pem, record_value
from quailmail.auth.message import parse_message
from quailmail.deliver.dksign import find_key, sign_for_delivery
from quailmail.dns.resolver import DnsResolver
from quailmail.dns.zoneserver import ZoneServer

MESSAGE = (
    b"From: Joe <joe@bar.example.com>\r\nTo: x@example.org\r\nSubject: s\r\n"
    b"Date: Fri, 11 Jul 2003 21:00:37 -0700\r\n\r\nbody\r\n"
)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """/etc/domainkeys/%/default as the seeds lay it out, for example.com only."""
    base = tmp_path / "domainkeys"
    (base / "example.com").mkdir(parents=True)
    key = generate("rsa", 1024)
    (base / "example.com" / "default").write_bytes(private_key_pem(key))
    (base / "example.com" / "default.pub").write_text(record_value(key))
    return base


def test_parent_domain_fallback(keys: Path) -> None:
    template = str(keys / "%" / "default")
    found = find_key(template, "bar.example.com")
    assert found == (keys / "example.com" / "default", "example.com")
    assert find_key(template, "other.org") is None
    assert find_key(str(keys / "example.com" / "default"), "any.net") == (
        keys / "example.com" / "default",
        "any.net",
    )


def test_signed_mail_verifies(keys: Path, dns_server: ZoneServer) -> None:
    record = (keys / "example.com" / "default.pub").read_text()
    dns_server.zone.add_txt("default._domainkey.example.com", record)
    signed = sign_for_delivery(MESSAGE, str(keys / "%" / "default"))
    assert signed.temporary is None and signed.domain == "example.com"
    assert signed.fields.startswith(b"DKIM-Signature:")
    assert b"\r\nDomainKey-Signature: a=rsa-sha1;" in signed.fields
    message = parse_message(signed.fields + MESSAGE)
    resolver = DnsResolver(dns_server.addresses, timeout=2)
    assert asyncio.run(verify_dkim(message, resolver)).code == "A"
    assert asyncio.run(verify_domainkeys(message, resolver)).status.letter == "A"


def test_no_key_sends_unsigned(keys: Path) -> None:
    other = MESSAGE.replace(b"bar.example.com", b"example.net")
    assert sign_for_delivery(other, str(keys / "%" / "default")).fields == b""
    assert sign_for_delivery(MESSAGE, None).fields == b""
    assert (
        sign_for_delivery(b"Subject: no from\r\n\r\nx\r\n", str(keys / "%" / "default")).fields
        == b""
    )


def test_broken_key_keeps_the_message_queued(keys: Path) -> None:
    (keys / "example.com" / "default").write_bytes(b"not a key\n")
    signed = sign_for_delivery(MESSAGE, str(keys / "%" / "default"))
    assert signed.fields == b"" and signed.temporary is not None
    assert "cannot be used" in signed.temporary
    (keys / "example.com" / "default").chmod(0)
    (keys / "example.com" / "default").unlink()
    (keys / "example.com" / "default").mkdir()  # a directory where the key should be
    signed = sign_for_delivery(MESSAGE, str(keys / "%" / "default"))
    assert signed.temporary is not None and "cannot read key" in signed.temporary
