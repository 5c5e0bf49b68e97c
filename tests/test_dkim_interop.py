"""quailmail against the independent DKIM implementations, both ways.

What `quail sign` writes must pass in Mail::DKIM, OpenDKIM, dkimpy and libdkim;
what they sign must pass in `quail verify`; one altered byte fails everywhere.
Keys are served by the loopback DNS server: quailmail, Mail::DKIM and OpenDKIM
ask it over the wire; dkimpy and libdkim are handed the same table.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from quailmail.auth import keys
from quailmail.auth.dkim import VerifyOptions, sign_dkim, verify_dkim
from quailmail.auth.message import parse_message
from quailmail.dns.resolver import DnsResolver
from quailmail.dns.zoneserver import Zone, ZoneServer

import peers
from peers import skip_missing

pytestmark = pytest.mark.peer

QUAIL = str(Path(sys.executable).with_name("quail"))
DOMAIN = "example.com"
MESSAGE = (
    b"Received: from client (unknown [198.51.100.7]) by mx.example.net\r\n"
    b"From: Joe SixPack <joe@example.com>\r\n"
    b"To: Suzie Q <suzie@example.net>,\r\n"
    b"\tteam@example.net\r\n"
    b"Subject:   Is  dinner\tready?  \r\n"
    b"Date: Fri, 11 Jul 2003 21:00:37 -0700\r\n"
    b"Message-ID: <20030712040037.46341.5F8J@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hi.  \r\n"
    b"\r\n"
    b"We lost the game.\t Are you hungry yet?\r\n"
    b"Caf\xc3\xa9 later?\r\n"
    b"\r\n"
    b"Joe.\r\n"
    b"\r\n"
)
CANONS = ["simple/simple", "relaxed/relaxed", "relaxed/simple", "simple/relaxed"]
# OpenDKIM's test mode (-t) rewrites "Subject:   Is  dinner" as "Subject: Is
# dinner" before hashing, so with simple header canonicalization it fails any
# correct signature of such a field -- and its own signature of it fails in
# Mail::DKIM, dkimpy, libdkim and quailmail alike (test below).  It is fed the
# message with one space after each colon when the header canon is simple.
TIDY = MESSAGE.replace(b"Subject:   Is", b"Subject: Is")


class Keys:
    def __init__(self, directory: Path) -> None:
        self.rsa = keys.generate("rsa", 2048)
        self.ed = keys.generate("ed25519")
        self.rsa_path = directory / "rsa"
        self.ed_path = directory / "ed"
        self.rsa_path.write_bytes(keys.private_key_pem(self.rsa))
        self.ed_path.write_bytes(keys.private_key_pem(self.ed))
        self.table = {
            f"rsa._domainkey.{DOMAIN}": keys.record_value(self.rsa),
            f"ed._domainkey.{DOMAIN}": keys.record_value(self.ed),
        }


@pytest.fixture(scope="module")
def k(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def server(k: Keys) -> Iterator[ZoneServer]:
    zone = Zone()
    for name, value in k.table.items():
        zone.add_txt(name, value)
    with ZoneServer(zone) as started:
        yield started


def quail_verify(message: bytes, server: ZoneServer) -> list[str]:
    resolver = DnsResolver(server.addresses, timeout=2.0)
    result = asyncio.run(verify_dkim(parse_message(message), resolver, options=VerifyOptions()))
    return [s.result.value for s in result.signatures]


def quail_sign(
    message: bytes, k: Keys, *, ed: bool = False, canon: str = "relaxed/relaxed"
) -> bytes:
    key, selector = (k.ed, "ed") if ed else (k.rsa, "rsa")
    field = sign_dkim(parse_message(message), key, selector=selector, domain=DOMAIN, canon=canon)
    return field + message


def alter(signed: bytes) -> bytes:
    return signed.replace(b"hungry", b"hungrY")


# --- quailmail signs, they verify ----------------------------------------------------


@pytest.mark.parametrize("canon", CANONS)
def test_quail_rsa_signatures_pass_in_every_peer(canon: str, k: Keys, server: ZoneServer) -> None:
    signed = quail_sign(MESSAGE, k, canon=canon)
    with skip_missing():
        assert peers.mail_dkim_verify(signed, dns_port=server.port).words == ["pass"]
    with skip_missing():
        tidy = quail_sign(TIDY, k, canon=canon) if canon.startswith("simple") else signed
        assert peers.opendkim_verify(tidy, dns_port=server.port).words == ["pass"]
    with skip_missing():
        assert peers.dkimpy_verify(signed, k.table).words == ["pass"]
    with skip_missing():
        assert peers.libdkim_verify(signed, k.table)[1] == ["A"]
    broken = alter(signed)
    with skip_missing():
        assert peers.mail_dkim_verify(broken, dns_port=server.port).words == ["fail"]
    with skip_missing():
        assert peers.opendkim_verify(broken, dns_port=server.port).words == ["fail"]
    with skip_missing():
        assert peers.dkimpy_verify(broken, k.table).words == ["fail"]
    with skip_missing():
        assert peers.libdkim_verify(broken, k.table)[1] == ["P"]
    assert quail_verify(broken, server) == ["fail"]


def test_opendkim_test_mode_mangles_simple_headers(k: Keys, server: ZoneServer) -> None:
    """The quirk TIDY works around, shown: OpenDKIM's own c=simple signature of
    MESSAGE is refused by every other implementation, quailmail included."""
    with skip_missing():
        signed = peers.opendkim_sign(MESSAGE, k.rsa_path, "rsa", DOMAIN, canon="simple/simple")
    assert quail_verify(signed, server) == ["fail"]
    with skip_missing():
        assert peers.dkimpy_verify(signed, k.table).words == ["fail"]
    with skip_missing():
        assert peers.libdkim_verify(signed, k.table)[1] == ["D"]
    with skip_missing():
        tidy = peers.opendkim_sign(TIDY, k.rsa_path, "rsa", DOMAIN, canon="simple/simple")
    assert quail_verify(tidy, server) == ["pass"]


def test_quail_ed25519_passes_where_ed25519_is_known(k: Keys, server: ZoneServer) -> None:
    """Debian's Mail::DKIM and libdkim predate RFC 8463; OpenDKIM and dkimpy know it."""
    signed = quail_sign(MESSAGE, k, ed=True)
    with skip_missing():
        assert peers.opendkim_verify(signed, dns_port=server.port).words == ["pass"]
    with skip_missing():
        assert peers.dkimpy_verify(signed, k.table).words == ["pass"]
    with skip_missing():
        assert peers.opendkim_verify(alter(signed), dns_port=server.port).words == ["fail"]
    with skip_missing():
        assert peers.dkimpy_verify(alter(signed), k.table).words == ["fail"]


def test_quail_sign_command_output_passes_in_the_peers(
    k: Keys, server: ZoneServer, tmp_path: Path
) -> None:
    """The command, not only the library, and an LF message file as admins keep them."""
    lf = MESSAGE.replace(b"\r\n", b"\n")
    proc = subprocess.run(
        [QUAIL, "sign", "--key", str(k.rsa_path)], input=lf, capture_output=True, check=True
    )
    signed = proc.stdout
    assert b"\r" not in signed and signed.endswith(lf)
    with skip_missing():
        assert peers.mail_dkim_verify(signed, dns_port=server.port).words == ["pass"]
    with skip_missing():
        assert peers.opendkim_verify(signed, dns_port=server.port).words == ["pass"]
    with skip_missing():
        assert peers.dkimpy_verify(signed, k.table).words == ["pass"]


# --- they sign, quailmail verifies ---------------------------------------------------


def _peer_sign(peer: str, message: bytes, k: Keys, *, ed: bool = False) -> bytes:
    path, selector = (k.ed_path, "ed") if ed else (k.rsa_path, "rsa")
    algorithm = "ed25519-sha256" if ed else "rsa-sha256"
    return peers.sign_with(peer, message, path, selector, DOMAIN, algorithm=algorithm)


@pytest.mark.parametrize("peer", ["mail_dkim", "opendkim", "dkimpy", "libdkim"])
def test_peer_rsa_signatures_pass_in_quail(peer: str, k: Keys, server: ZoneServer) -> None:
    with skip_missing():
        signed = _peer_sign(peer, MESSAGE, k)
    assert quail_verify(signed, server) == ["pass"]
    assert quail_verify(alter(signed), server) == ["fail"]


@pytest.mark.parametrize("peer", ["opendkim", "dkimpy"])
def test_peer_ed25519_signatures_pass_in_quail(peer: str, k: Keys, server: ZoneServer) -> None:
    with skip_missing():
        signed = _peer_sign(peer, MESSAGE, k, ed=True)
    assert quail_verify(signed, server) == ["pass"]
    assert quail_verify(alter(signed), server) == ["fail"]


def test_mail_dkim_relaxed_simple_and_l_tag_pass_in_quail(k: Keys, server: ZoneServer) -> None:
    with skip_missing():
        signed = peers.mail_dkim_sign(MESSAGE, k.rsa_path, "rsa", DOMAIN, method="relaxed")
    assert b"c=relaxed;" in signed  # relaxed header, simple body (RFC 6376 §3.5)
    assert quail_verify(signed, server) == ["pass"]


def test_quail_verify_command_judges_peer_output(
    k: Keys, server: ZoneServer, tmp_path: Path
) -> None:
    files = []
    for peer in ("mail_dkim", "opendkim", "dkimpy", "libdkim"):
        with skip_missing():
            signed = _peer_sign(peer, MESSAGE, k)
            path = tmp_path / f"{peer}.eml"
            path.write_bytes(signed)
            files.append(path)
    proc = subprocess.run(
        [QUAIL, "verify", "--json", "--dns", server.spec, *map(str, files)],
        capture_output=True,
        check=True,
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [row["dkim"]["code"] for row in rows] == ["A"] * len(files)
