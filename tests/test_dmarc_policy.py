"""DMARC at DATA: always reported in Authentication-Results, enforced with
`control/dmarcbehavior` 1 (p=reject refused, p=quarantine filed in .Junk).
DNS (the DMARC, SPF and DKIM records) from the loopback DNS server."""

from __future__ import annotations

import asyncio
import json
import re
import smtplib
from collections.abc import Callable
from pathlib import Path
from typing import AnyStr

import pytest

from quailmail.auth.dkim import DkimResult, DkimSignatureResult, DkimStatus, sign_dkim
from quailmail.auth.dmarc import DmarcResult
from quailmail.auth.keys import generate, record_value
from quailmail.auth.message import parse_message
from quailmail.auth.results import Result
from quailmail.auth.spf.result import SpfResult, SpfVerdict
from quailmail.config.control import Control
from quailmail.config.tcprules import compile_rules
from quailmail.config.users import add_user
from quailmail.deliver.junk import is_spam
from quailmail.dns.zoneserver import ZoneServer
from quailmail.policy import dmarc
from quailmail.policy.base import Client, Message
from quailmail.policy.evidence import evidence_or_compute

from dnsfixtures import resolver_for
from serverfixtures import Running, maildir, wait_for


def mail(author: str, subject: str) -> bytes:
    return (
        f"From: Someone <someone@{author}>\r\nTo: joe@example.com\r\nSubject: {subject}\r\n"
        f"Date: Sat, 21 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@{author}>\r\n\r\n"
        "Your account needs attention.\r\n"
    ).encode()


@pytest.fixture
def zone(dns_server: ZoneServer) -> ZoneServer:
    z = dns_server.zone
    z.add_txt("_dmarc.bank.test", "v=DMARC1; p=reject")
    z.add_txt("_dmarc.shop.test", "v=DMARC1; p=quarantine; rua=mailto:d@shop.test")
    z.add_txt("_dmarc.news.test", "v=DMARC1; p=none")
    z.add_txt("_dmarc.good.test", "v=DMARC1; p=reject; aspf=s")
    z.add_txt("good.test", "v=spf1 ip4:127.0.0.1 ip6:::1 -all")
    z.add_txt("_dmarc.signed.test", "v=DMARC1; p=reject")
    return dns_server


def setup_for(dns: ZoneServer, **files: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        # The loopback client as an outsider: no RELAYCLIENT.
        (root / "control" / "tcp.smtp.cdb").write_bytes(compile_rules(":allow\n"))
        (root / "control" / "dnsservers").write_text(dns.spec + "\n")
        (root / "control" / "rcpthosts").write_text("mx.test\nexample.com\n")
        add_user(root, "joe@example.com", "secret")
        for name, text in files.items():
            (root / "control" / name).write_text(text + "\n")

    return setup


def send(server: Running, sender: str, data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=60) as client:
        client.ehlo("client.example.org")
        assert client.sendmail(sender, ["joe@example.com"], data) == {}


def queued(server: Running) -> list[str]:
    listed = server.quail("queue", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    out = []
    for line in listed.stdout.decode().splitlines():
        shown = server.quail("queue", "show", json.loads(line)["id"])
        out.append(shown.stdout.decode())
    return out


def test_reject_is_refused_when_enforced(
    server_factory: Callable[..., Running], zone: ZoneServer
) -> None:
    server = server_factory(setup_for(zone, dmarcbehavior="1"))
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=60) as client:
        client.ehlo("client.example.org")
        with pytest.raises(smtplib.SMTPDataError) as caught:
            client.sendmail("spoof@elsewhere.test", ["joe@example.com"], mail("bank.test", "r"))
    assert caught.value.smtp_code == 550
    text = caught.value.smtp_error.decode()
    assert text.startswith("5.7.1 message refused: the DMARC policy of bank.test is reject")
    assert "no DKIM signature" in text
    assert queued(server) == []


def unfold(text: AnyStr) -> AnyStr:
    """RFC 5322 §2.2.3: header fields unfolded (our Authentication-Results
    folds when it is longer than a line)."""
    if isinstance(text, bytes):
        return re.sub(rb"\r?\n([ \t])", rb"\1", text)
    return re.sub(r"\r?\n([ \t])", r"\1", text)


def test_quarantine_is_delivered_to_junk(
    server_factory: Callable[..., Running], zone: ZoneServer
) -> None:
    server = server_factory(setup_for(zone, dmarcbehavior="1"), deliver=True)
    send(server, "spoof@elsewhere.test", mail("shop.test", "quarantined"))
    send(server, "someone@news.test", mail("news.test", "reported"))
    home = server.root / "domains" / "example.com" / "joe" / "Maildir"
    wait_for(lambda: maildir(home) and maildir(home / ".Junk"), timeout=60, what="inbox and Junk")
    (junk,) = (unfold(m) for m in maildir(home / ".Junk"))
    (inbox,) = (unfold(m) for m in maildir(home))
    assert b"Subject: quarantined" in junk
    assert b"\nX-Quail-Quarantine: dmarc (the DMARC policy of shop.test is quarantine)\n" in junk
    assert (
        b"\nAuthentication-Results: mx.test; dmarc=fail (p=quarantine dis=quarantine) "
        b"header.from=shop.test\n" in junk
    )
    # p=none: delivered to the inbox, reported.
    assert b"Subject: reported" in inbox
    assert b"; dmarc=fail (p=none dis=none) header.from=news.test\n" in inbox


def test_not_enforced_by_default_but_reported(
    server_factory: Callable[..., Running], zone: ZoneServer
) -> None:
    server = server_factory(setup_for(zone))
    send(server, "spoof@elsewhere.test", mail("bank.test", "spoofed"))
    send(server, "spoof@elsewhere.test", mail("nodmarc.test", "plain"))
    (spoofed, plain) = sorted((unfold(h) for h in queued(server)), key=lambda h: "plain" in h)
    assert "dmarc=fail (p=reject dis=reject) header.from=bank.test" in spoofed
    assert "dmarc=none (no DMARC record at _dmarc.nodmarc.test) header.from=nodmarc.test" in plain
    assert "X-Quail-Quarantine" not in spoofed
    assert "not enforced (dmarcbehavior is not 1)" in server.log_path.read_text()
    # A value that is neither 0 nor 1 enforces nothing, and says so.
    (server.root / "control" / "dmarcbehavior").write_text("x\n")
    send(server, "spoof@elsewhere.test", mail("bank.test", "typo"))
    log = server.log_path.read_text()
    assert "control/dmarcbehavior ignored: 'x' is neither 0 nor 1 (DMARC not enforced)" in log


def test_aligned_spf_or_dkim_passes(
    server_factory: Callable[..., Running], zone: ZoneServer
) -> None:
    key = generate("ed25519")
    zone.zone.add_txt("sel._domainkey.signed.test", record_value(key))
    server = server_factory(setup_for(zone, dmarcbehavior="1"), deliver=True)
    send(server, "someone@good.test", mail("good.test", "spf-aligned"))
    unsigned = mail("signed.test", "dkim-aligned")
    signed = sign_dkim(parse_message(unsigned), key, selector="sel", domain="signed.test")
    send(server, "bounces@elsewhere.test", signed + unsigned)
    home = server.root / "domains" / "example.com" / "joe" / "Maildir"
    wait_for(lambda: len(maildir(home)) == 2, timeout=60, what="two deliveries")
    got = b"\n".join(maildir(home))
    assert b"dmarc=pass (p=reject dis=none) header.from=good.test" in got
    assert b"dmarc=pass (p=reject dis=none) header.from=signed.test" in got
    assert not (home / ".Junk").exists()


# -- the check itself: evidence from earlier checks, or computed -------------------


def _client(tmp_path: Path, dns: ZoneServer, env: dict[str, str] | None = None) -> Client:
    (tmp_path / "control").mkdir(exist_ok=True)
    return Client(
        root=tmp_path,
        control=Control(tmp_path),
        resolver=resolver_for(dns),
        hostname="mx.test",
        ip="192.0.2.7",
        env=env or {},
        helo="client.example.org",
    )


def _message(data: bytes, sender: str) -> Message:
    # As the server hands it over: our Received: field first, then the client's.
    received = b"Received: from client.test by mx.test; Sun, 22 Nov 2026 00:00:00 +0000\r\n"
    return Message(sender, ["joe@example.com"], [received, data], len(received) + len(data))


def test_evidence_of_earlier_checks_is_used(tmp_path: Path, zone: ZoneServer) -> None:
    client = _client(tmp_path, zone)
    # What the SPF check would have left: a pass for bank.test's MAIL FROM.
    client.evidence["spf"] = SpfVerdict(SpfResult.PASS, "bank.test", "a@bank.test", "192.0.2.7")
    message = _message(mail("bank.test", "e"), "a@bank.test")
    assert asyncio.run(dmarc.check(client, message)) is None
    assert message.auth_results == ["dmarc=pass (p=reject dis=none) header.from=bank.test"]
    # And a DKIM pass left by the verifier for a message with no signature at all.
    client = _client(tmp_path, zone)
    passed = DkimSignatureResult(DkimStatus.OK, Result.PASS, "ok", domain="bank.test")
    message = _message(mail("bank.test", "f"), "x@elsewhere.test")
    message.evidence["dkim"] = DkimResult(DkimStatus.OK, Result.PASS, "ok", (passed,))
    assert asyncio.run(dmarc.check(client, message)) is None
    result = message.evidence["dmarc"]
    assert isinstance(result, DmarcResult) and result.dkim_domain == "bank.test"


def test_missing_evidence_is_computed_and_left(tmp_path: Path, zone: ZoneServer) -> None:
    client = _client(tmp_path, zone)
    message = _message(mail("bank.test", "g"), "a@good.test")
    asyncio.run(dmarc.check(client, message))
    assert isinstance(client.evidence["spf"], SpfVerdict)
    assert client.evidence["spf"].result is SpfResult.FAIL  # 192.0.2.7 is not good.test's
    dkim = message.evidence["dkim"]
    assert isinstance(dkim, DkimResult) and dkim.status is DkimStatus.NO_SIG
    assert message.auth_results == ["dmarc=fail (p=reject dis=reject) header.from=bank.test"]


def test_trusted_clients_and_bad_from(tmp_path: Path, zone: ZoneServer) -> None:
    trusted = _client(tmp_path, zone, {"RELAYCLIENT": ""})
    message = _message(mail("bank.test", "h"), "a@x.test")
    assert asyncio.run(dmarc.check(trusted, message)) is None
    assert message.auth_results == []
    two = b"From: a@one.test, b@two.test\r\nSubject: x\r\n\r\nbody\r\n"
    message = _message(two, "a@one.test")
    asyncio.run(dmarc.check(_client(tmp_path, zone), message))
    assert message.auth_results == ["dmarc=permerror (From names 2 domains: one.test, two.test)"]


def test_evidence_or_compute() -> None:
    calls: list[int] = []

    async def compute() -> int:
        calls.append(1)
        return 7

    evidence: dict[str, object] = {"n": "not an int"}
    assert asyncio.run(evidence_or_compute(evidence, "n", int, compute)) == 7
    assert asyncio.run(evidence_or_compute(evidence, "n", int, compute)) == 7
    assert calls == [1] and evidence["n"] == 7


def test_junk_honours_the_quarantine_field() -> None:
    assert is_spam(b"X-Quail-Quarantine: dmarc (p=quarantine)\nSubject: x\n\nbody\n")
    assert not is_spam(b"Subject: x\n\nX-Quail-Quarantine: in the body\n")
