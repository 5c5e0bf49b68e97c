"""The seeds' tcp.smtp ("Final Thoughts" of shared/seeds/003_*, copied in
tests/data/tcprules/seed003.tcp.smtp) compiled with `quail tcprules` and
used by a running server.

Adapted, and only so: /var/qmail is the test root, and the "external web
box" 69.36.226.12 is 127.0.0.2 (a loopback address the client binds).  So
127.0.0.1 relays and signs (the `127.` line), 127.0.0.2 relays and signs
(the web box line), and ::1 is "everyone else" (DKVERIFY="DEGIJKfh",
qmail-dk's form: DomainKeys letters only).

The `127.` and default lines set QMAILQUEUE=ROOT/bin/simscan (and
DKQUEUE=ROOT/bin/qmail-queue.orig, which only qmail-dk and dkverify read).
simscan is not packaged in Debian: ROOT/bin/simscan here is a stand-in that
hands the message on unscanned, as simscan does with nothing to find, to
`quail-qmail-queue`, which queues it in the inject shard.
"""

from __future__ import annotations

import json
import smtplib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from quailmail.auth.dkim import sign_dkim
from quailmail.auth.domainkeys import sign_domainkeys
from quailmail.auth.keys import PrivateKey, generate, private_key_pem, record_value
from quailmail.auth.message import parse_message
from quailmail.dns.zoneserver import ZoneServer

from policysmtp import by_subject, compile_rules, fields, queued, transaction
from serverfixtures import Running

SEED = Path(__file__).parent / "data" / "tcprules" / "seed003.tcp.smtp"
OUTSIDE = "friend@elsewhere.example"
LOCAL = "postmaster@mx.test"


def seed_rules(root: Path) -> str:
    text = SEED.read_text()
    assert "/var/qmail/" in text and "69.36.226.12:" in text
    return text.replace("/var/qmail", str(root)).replace("69.36.226.12:", "127.0.0.2:")


@dataclass
class Seed:
    server: Running
    dns: ZoneServer
    key: PrivateKey


@pytest.fixture
def seed(server_factory: Callable[..., Running], dns_server: ZoneServer) -> Seed:
    key = generate("rsa", 1024)
    # The seed's DNS has the selector 'default' for sample.com; ours holds our key.
    dns_server.zone.add_txt("default._domainkey.sample.com", record_value(key, dkim=False))
    dns_server.zone.add_txt("_domainkey.sample.com", "o=-;")

    def setup(root: Path) -> None:
        control = root / "control"
        (control / "dnsservers").write_text(dns_server.spec + "\n")
        keys = control / "domainkeys" / "sample.com"
        keys.mkdir(parents=True)
        (keys / "default").write_bytes(private_key_pem(key))
        compile_rules(root, seed_rules(root))
        (root / "bin").mkdir()
        simscan = root / "bin" / "simscan"
        simscan.write_text(
            "#!/bin/sh\n# simscan with nothing to find: hand the message on\n"
            "exec quail-qmail-queue\n"
        )
        simscan.chmod(0o755)

    return Seed(server_factory(setup), dns_server, key)


def message(subject: str, sender: str = "joe@sample.com", to: str = OUTSIDE) -> bytes:
    return (
        f"From: Joe <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nfrom the web box\r\n"
    ).encode()


def verify(seed: Seed, data: bytes) -> dict[str, dict[str, str]]:
    path = seed.server.root.parent / "verify.eml"
    path.write_bytes(data)
    proc = seed.server.quail("verify", "--json", "--dns", seed.dns.spec, str(path))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_localhost_and_the_web_box_relay_signed(seed: Seed) -> None:
    server = seed.server
    for source, subject in (("127.0.0.1", "localhost"), ("127.0.0.2", "web box")):
        with smtplib.SMTP("127.0.0.1", server.smtp, source_address=(source, 0)) as client:
            assert transaction(client, "joe@sample.com", [OUTSIDE], message(subject)).accepted
    messages = by_subject(queued(server.root))
    for subject in ("localhost", "web box"):
        data = messages[subject]
        assert b"d=sample.com; s=default;" in fields(data, b"DKIM-Signature")[0]
        dk = fields(data, b"DomainKey-Signature")[0]
        assert b"c=nofws;" in dk and b"d=sample.com;" in dk and b"s=default;" in dk
        # relay clients are not verified (DKVERIFY on the 127. line notwithstanding)
        assert fields(data, b"Authentication-Results") == []
        verdict = verify(seed, data)
        assert verdict["domainkeys"]["code"] == "A", verdict
        assert verdict["dkim"]["code"] == "A", verdict


def _signed(seed: Seed, subject: str, selector: str = "default") -> bytes:
    raw = message(subject, to=LOCAL)
    parsed = parse_message(raw)
    dkim = sign_dkim(parsed, seed.key, selector=selector, domain="sample.com")
    dk = sign_domainkeys(parsed, seed.key, selector=selector, domain="sample.com")
    return dkim + dk + raw


def test_everyone_else_gets_dkverify_degijkfh(seed: Seed) -> None:
    server = seed.server
    with smtplib.SMTP("::1", server.smtp) as client:
        good = _signed(seed, "good")
        assert transaction(client, "joe@sample.com", [LOCAL], good).accepted
        bad = _signed(seed, "bad").replace(b"from the web box", b"from elsewhere")
        assert transaction(client, "joe@sample.com", [LOCAL], bad).accepted  # B: not listed
        assert transaction(client, "joe@sample.com", [LOCAL], message("none", to=LOCAL)).accepted
        nokey = _signed(seed, "no key", selector="gone")  # D: listed upper case
        out = transaction(client, "joe@sample.com", [LOCAL], nokey)
        assert out.data is not None and out.data[0] == 554
        assert out.data[1].startswith("5.7.0 DomainKeys DK_STAT_NOKEY (no key):")
    messages = by_subject(queued(server.root))
    assert "no key" not in messages
    (good_ar,) = fields(messages["good"], b"Authentication-Results")
    # the seeds' "Authentication-Results: bltweb.net; domainkeys=pass (ok); dkim=pass (ok)"
    assert good_ar.startswith(b"mx.test; domainkeys=pass (ok) header.d=sample.com")
    assert b"; dkim=pass (ok) header.d=sample.com" in good_ar
    (bad_ar,) = fields(messages["bad"], b"Authentication-Results")
    assert bad_ar.startswith(b"mx.test; domainkeys=fail") and b"; dkim=fail" in bad_ar
    (none_ar,) = fields(messages["none"], b"Authentication-Results")
    assert none_ar.startswith(b"mx.test; domainkeys=none") and b"; dkim=none" in none_ar
    # and qmail-dk's own field, its "message tag" (the seed's table)
    for subject, tag in (("good", b"good"), ("bad", b"bad"), ("none", b"no signature")):
        assert fields(messages[subject], b"DomainKey-Status") == [tag], subject
    # DKSIGN is on this line too, but without RELAYCLIENT qmail-dk verifies, not signs
    assert fields(messages["none"], b"DKIM-Signature") == []
