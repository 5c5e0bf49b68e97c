"""Sender ID: the PRA of RFC 4407 §2 and the check of RFC 4406."""

from __future__ import annotations

import asyncio

import pytest

from quailmail.auth import authres
from quailmail.auth.message import parse_message
from quailmail.auth.spf import PRA, SpfResult, check_senderid, pra, pra_field
from quailmail.dns.zoneserver import ZoneServer

from dnsfixtures import resolver_for


def headers(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\nbody\r\n").encode()


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        # Step 4: exactly one From
        (["From: Joe <joe@example.com>"], ("from", "joe@example.com")),
        (["From: joe@example.com (Joe)"], ("from", "joe@example.com")),
        # Step 3: Sender wins over From
        (
            ["From: a@example.com", "Sender: list@lists.example.org"],
            ("sender", "list@lists.example.org"),
        ),
        # Step 2: Resent-From wins over Sender
        (
            ["Resent-From: fwd@example.net", "From: a@example.com", "Sender: s@example.org"],
            ("resent-from", "fwd@example.net"),
        ),
        # Step 1: the first Resent-Sender of the newest block
        (
            ["Resent-Sender: rs@example.net", "Resent-From: rf@example.net", "From: a@example.com"],
            ("resent-sender", "rs@example.net"),
        ),
        (
            [
                "Resent-From: rf@example.net",
                "Resent-Sender: rs@example.net",
                "From: a@example.com",
            ],
            ("resent-sender", "rs@example.net"),
        ),
        # Step 1: a Resent-Sender of an older block (trace fields between) loses
        (
            [
                "Resent-From: new@example.net",
                "Received: from x by y; Mon, 1 Jan 2024 00:00:00 +0000",
                "Resent-Sender: old@example.org",
                "From: a@example.com",
            ],
            ("resent-from", "new@example.net"),
        ),
        # Empty fields are skipped
        (["Sender: ", "From: a@example.com"], ("from", "a@example.com")),
        (['From: "Doe, Joe" <joe@example.com>'], ("from", "joe@example.com")),
        # Step 6: no PRA
        (["From: a@example.com, b@example.com"], None),
        (["From: a@example.com", "From: b@example.com"], None),
        (["Sender: a@example.com", "Sender: b@example.com", "From: c@example.com"], None),
        (["From: undisclosed-recipients:;"], None),
        (["From: nobody"], None),
        (["Subject: no originator"], None),
    ],
)
def test_pra(lines: list[str], expected: tuple[str, str] | None) -> None:
    message = parse_message(headers(*lines))
    assert pra_field(message) == expected
    assert pra(message) == (expected[1] if expected else None)


def test_check_senderid_prefers_spf2_records(dns_server: ZoneServer) -> None:
    zone = dns_server.zone
    zone.add_txt("example.com", "v=spf1 -all")
    zone.add_txt("example.com", "spf2.0/pra ip4:192.0.2.0/24 -all")
    zone.add_txt("legacy.example.com", "v=spf1 ip4:192.0.2.0/24 -all")
    zone.add_txt("mfrom.example.com", "spf2.0/mfrom +all")
    zone.add_txt("mfrom.example.com", "v=spf1 +all")
    resolver = resolver_for(dns_server)

    def check(address: str | None) -> SpfResult:
        verdict = asyncio.run(check_senderid("192.0.2.7", address, resolver, helo="mx.test"))
        assert verdict.identity == PRA
        return verdict.result

    assert check("joe@example.com") is SpfResult.PASS
    assert check("joe@legacy.example.com") is SpfResult.PASS  # v=spf1 read as spf2.0/mfrom,pra
    assert check("joe@mfrom.example.com") is SpfResult.NONE  # spf2.0 exists, not for pra
    assert check(None) is SpfResult.PERMERROR  # RFC 4407 §2 step 6


def test_sender_id_resinfo(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt("example.com", "spf2.0/pra -all")
    message = parse_message(headers("Sender: bob@example.com", "From: a@example.org"))
    found = pra_field(message)
    assert found is not None
    field, address = found
    resolver = resolver_for(dns_server)
    verdict = asyncio.run(check_senderid("192.0.2.7", address, resolver))
    assert authres.senderid_method(verdict, field) == (
        "sender-id=fail (domain of bob@example.com does not designate 192.0.2.7 as permitted "
        "sender) header.sender=bob@example.com"
    )
