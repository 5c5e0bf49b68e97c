"""qmail-dk's DKSIGN at acceptance, end to end: relay clients' mail queued
signed (checked with `quail verify` and dkimpy), the `%` rules, error 32."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from quailmail.auth.keys import generate, private_key_pem, record_value
from quailmail.dns.zoneserver import ZoneServer

from peers._base import write_keytable
from peers.dkimpy_peer import dkimpy_verify
from policysmtp import (
    Outcome,
    by_subject,
    compile_rules,
    fields,
    proxied,
    queued,
    transaction,
    trust_proxy,
)
from serverfixtures import Running

RCPT = "friend@elsewhere.example"  # relay clients may send anywhere


def rules(root: Path) -> str:
    keys = root / "control" / "domainkeys"
    return (
        f'192.0.2.1:allow,RELAYCLIENT="",DKSIGN="{keys}/%/private"\n'
        f'192.0.2.2:allow,RELAYCLIENT="",DKSIGN="{keys}/missing"\n'
        f'192.0.2.3:allow,RELAYCLIENT=""\n'  # neither DKSIGN nor DKVERIFY: qmail-dk's default
        f'192.0.2.4:allow,RELAYCLIENT="",DKVERIFY=""\n'  # DKVERIFY set: no default DKSIGN
        f'192.0.2.5:allow,RELAYCLIENT="",DKSIGN="control/domainkeys/broken.test/private"\n'
        f'192.0.2.6:allow,DKSIGN="{keys}/%/private"\n'  # not a relay client: not signed
        f'192.0.2.7:allow,RELAYCLIENT="",DKSIGN="{keys}/signer.test/private"\n'
        ":allow\n"
    )


@dataclass
class Setup:
    server: Running
    dns: ZoneServer
    record: str  # the published key record


@pytest.fixture
def setup(server_factory: Callable[..., Running], dns_server: ZoneServer) -> Setup:
    key = generate("rsa", 1024)
    record = record_value(key)
    dns_server.zone.add_txt("private._domainkey.signer.test", record)

    def setup(root: Path) -> None:
        trust_proxy(root)
        control = root / "control"
        (control / "dnsservers").write_text(dns_server.spec + "\n")
        for domain, data in (("signer.test", private_key_pem(key)), ("broken.test", b"junk")):
            (control / "domainkeys" / domain).mkdir(parents=True)
            (control / "domainkeys" / domain / "private").write_bytes(data)
        compile_rules(root, rules(root))

    return Setup(server_factory(setup), dns_server, record)


def message(subject: str, sender: str = "joe@signer.test") -> bytes:
    return (
        f"From: Joe <{sender}>\r\nTo: {RCPT}\r\nSubject: {subject}\r\n"
        "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nSigned at the door.\r\n"
    ).encode()


def send(
    server: Running,
    client_ip: str,
    subject: str,
    sender: str = "joe@signer.test",
    recipient: str = RCPT,
) -> Outcome:
    with proxied(server.smtp, client_ip) as client:
        return transaction(client, sender, [recipient], message(subject, sender))


def verify(server: Running, dns: ZoneServer, data: bytes) -> dict[str, dict[str, str]]:
    path = server.root.parent / "check.eml"
    path.write_bytes(data)
    proc = server.quail("verify", "--json", "--dns", dns.spec, str(path))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_relay_clients_mail_is_queued_signed(setup: Setup) -> None:
    server = setup.server
    assert send(server, "192.0.2.1", "percent").accepted
    assert send(server, "192.0.2.3", "default").accepted
    assert send(server, "192.0.2.7", "fixed").accepted
    messages = by_subject(queued(server.root))
    for subject in ("percent", "default", "fixed"):
        data = messages[subject]
        assert data.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;"), subject
        dkim = fields(data, b"DKIM-Signature")[0]
        assert b"d=signer.test; s=private;" in dkim
        assert fields(data, b"DomainKey-Signature")[0].startswith(b"a=rsa-sha1;")
        verdict = verify(server, setup.dns, data)
        assert verdict["dkim"]["code"] == "A" and verdict["dkim"]["result"] == "pass", verdict
        assert verdict["domainkeys"]["code"] == "A", verdict
        # independent verifiers agree: dkimpy on the DKIM signature, Mail::DKIM
        # on the DomainKeys one (alone: its verdict would otherwise be DKIM's)
        table = {"private._domainkey.signer.test": setup.record}
        peer = dkimpy_verify(data, table)
        assert peer.words == ["pass"], peer
        assert mail_dkim_dk(data, table, server.root.parent) == "pass", subject


def mail_dkim_dk(data: bytes, table: dict[str, str], where: Path) -> str:
    """Mail::DKIM's (Debian libmail-dkim-perl) verdict on the DomainKey-Signature."""
    keys = write_keytable(table, where / "keys.dns")
    dkim_field, rest = data.split(b"\r\nDomainKey-Signature:", 1)
    assert dkim_field.startswith(b"DKIM-Signature:")
    script = Path(__file__).parent / "peers" / "dk_verify.pl"
    done = subprocess.run(
        ["perl", str(script), str(keys)],
        input=b"DomainKey-Signature:" + rest,
        capture_output=True,
        check=True,
        timeout=60,
    )
    return done.stdout.decode().splitlines()[0]


def test_percent_without_a_key_file_accepts_unsigned(setup: Setup) -> None:
    server = setup.server
    assert send(server, "192.0.2.1", "nokey", sender="joe@nokey.test").accepted
    assert send(server, "192.0.2.4", "dkverify set").accepted
    assert send(server, "192.0.2.6", "not relay", recipient="postmaster@mx.test").accepted
    # A From: domain too long for a file name has no key either (it was a
    # traceback and 451 when the lookup's OSError escaped), with DKSIGN's
    # `%` and with qmail-dk's default.
    long_from = "joe@" + "a" * 250 + ".example"
    for client_ip, subject in (("192.0.2.1", "long"), ("192.0.2.3", "long default")):
        with proxied(server.smtp, client_ip) as client:
            out = transaction(client, "joe@signer.test", [RCPT], message(subject, long_from))
        assert out.accepted, out
    assert "Traceback" not in server.log_path.read_text()
    messages = by_subject(queued(server.root))
    for subject in ("nokey", "dkverify set", "not relay", "long", "long default"):
        assert fields(messages[subject], b"DKIM-Signature") == [], subject
        assert fields(messages[subject], b"DomainKey-Signature") == [], subject


def test_no_percent_and_no_file_is_error_32(setup: Setup) -> None:
    server = setup.server
    out = send(server, "192.0.2.2", "error 32")
    assert out.data == (554, "5.3.5 signing key not found (qmail-dk error 32)")
    out = send(server, "192.0.2.5", "broken key")
    assert out.data is not None and out.data[:1] == (451,)
    assert out.data[1].startswith("4.3.0 unable to read private key")
    assert queued(server.root) == []
