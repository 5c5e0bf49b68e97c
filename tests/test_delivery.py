"""The scheduler end to end: real `quail serve` processes deliver what they
queued to Maildirs and to each other over loopback (smtproutes), sign what
leaves, bounce what fails, retry what is deferred."""

from __future__ import annotations

import email
import email.policy
import json
import os
import smtplib
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from quailmail.auth.keys import generate, private_key_pem, record_value
from quailmail.config.users import add_user
from quailmail.dns.zoneserver import ZoneServer

from dnsfixtures import has_ipv6_loopback
from serverfixtures import QUAIL, Running, _wait_ready, maildir, wait_for

MESSAGE = (
    b"From: Joe <joe@sender.test>\r\nTo: someone\r\nSubject: %s\r\n"
    b"Date: Sat, 21 Nov 2026 10:00:00 +0000\r\nMessage-ID: <%s@sender.test>\r\n\r\n"
    b"body line one\r\n.leading dot\r\nlast line %s\r\n"
)


def message(tag: str) -> bytes:
    t = tag.encode()
    return MESSAGE % (t, t, t)


def queue_ids(server: Running) -> list[str]:
    done = server.quail("queue", "list", "--json")
    assert done.returncode == 0, done.stderr
    return [json.loads(line)["id"] for line in done.stdout.decode().splitlines()]


def send(
    server: Running, sender: str, rcpts: list[str], data: bytes, host: str = "127.0.0.1"
) -> None:
    with smtplib.SMTP(host, server.smtp, timeout=10) as client:
        client.ehlo("client.test")
        assert client.sendmail(sender, rcpts, data) == {}


def log_of(server: Running) -> str:
    return server.log_path.read_text(errors="replace")


def restart(old: Running) -> Running:
    """The same root served again (ports and all), delivering."""
    with old.log_path.open("ab") as log:
        process = subprocess.Popen(
            [QUAIL, "serve", "--root", str(old.root)], stdout=subprocess.DEVNULL, stderr=log
        )
    running = Running(old.root, old.smtp, old.smtps, old.submission, process, old.log_path)
    _wait_ready(old.smtp, process)
    return running


def flush(server: Running) -> None:
    done = server.quail("queue", "flush")
    assert done.returncode == 0, done.stderr


# -- local delivery ------------------------------------------------------------


def test_local_alias_delivery(server_factory: Callable[..., Running]) -> None:
    server = server_factory(deliver=True)
    send(server, "a@example.org", ["postmaster@mx.test"], message("alias"))
    box = server.root / "alias" / "Maildir"
    wait_for(lambda: maildir(box), what="delivery to the alias Maildir")
    (got,) = maildir(box)
    assert got.startswith(b"Return-Path: <a@example.org>\nDelivered-To: postmaster@mx.test\n")
    assert b"\r\n" not in got  # Maildir files have LF line ends
    assert got.endswith(b"body line one\n.leading dot\nlast line alias\n")
    wait_for(lambda: not queue_ids(server), what="the queue to empty")
    # qmail-send's log says where it went, once: "<qid> 0 <rcpt>: delivered: <file>".
    line = next(x for x in log_of(server).splitlines() if "<postmaster@mx.test>: delivered" in x)
    assert line.count("delivered:") == 1, line
    (file,) = (box / "new").iterdir()  # the file the message was written to
    assert line.endswith(f": delivered: {file}"), line


def test_virtual_user_and_junk_folder(server_factory: Callable[..., Running]) -> None:
    def setup(root: Path) -> None:
        add_user(root, "joe@example.com", "secret")
        (root / "control" / "rcpthosts").write_text("mx.test\nexample.com\n")

    server = server_factory(setup, deliver=True)
    send(server, "a@example.org", ["joe@example.com"], message("clean"))
    spam = b"X-Spam-Status: Yes, score=9.1 required=5.0\r\n" + message("spam")
    send(server, "a@example.org", ["joe@example.com"], spam)
    home = server.root / "domains" / "example.com" / "joe" / "Maildir"
    wait_for(lambda: maildir(home) and maildir(home / ".Junk"), what="inbox and Junk")
    (inbox,) = maildir(home)
    (junk,) = maildir(home / ".Junk")
    assert b"Subject: clean" in inbox
    assert b"Subject: spam" in junk
    assert b"Delivered-To: joe@example.com\n" in junk


def test_inject_unknown_local_bounces_to_sender(server_factory: Callable[..., Running]) -> None:
    server = server_factory(deliver=True)
    done = server.quail(
        "inject", "-f", "postmaster@mx.test", "nobody@mx.test", stdin=message("lost")
    )
    assert done.returncode == 0, done.stderr
    box = server.root / "alias" / "Maildir"
    wait_for(lambda: maildir(box), what="the bounce")
    (bounce,) = maildir(box)
    assert bounce.startswith(b"Return-Path: <>\n")
    report = email.message_from_bytes(bounce, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    status = [p for p in report.walk() if p.get_content_type() == "message/delivery-status"]
    assert status, "no message/delivery-status part"
    text = status[0].as_string()
    assert "Final-Recipient: rfc822; nobody@mx.test" in text
    assert "Action: failed" in text
    assert "Status: 5.1.1" in text
    headers = [p for p in report.walk() if p.get_content_type() == "text/rfc822-headers"]
    assert b"Subject: lost" in headers[0].as_bytes()


# -- two servers: remote delivery through smtproutes -------------------------


def _destination(root: Path) -> None:
    add_user(root, "ann@dest.test", "pw")
    (root / "control" / "rcpthosts").write_text("mx.test\ndest.test\n")


def _published_key(root: Path, dns: ZoneServer) -> None:
    key = generate("rsa", 2048)
    path = root / "control" / "domainkeys" / "sender.test"
    path.mkdir(parents=True)
    (path / "default").write_bytes(private_key_pem(key))
    (root / "control" / "dksign").write_text(
        str(root / "control" / "domainkeys" / "%" / "default") + "\n"
    )
    dns.zone.add_txt("default._domainkey.sender.test", record_value(key))
    dns.zone.add_txt("_domainkey.sender.test", "o=-")


@pytest.mark.parametrize("family", ["127.0.0.1", "::1"])
def test_two_servers_signed_relay(
    server_factory: Callable[..., Running], dns_server: ZoneServer, family: str
) -> None:
    if family == "::1" and not has_ipv6_loopback():
        pytest.skip("no ::1 here")
    dest = server_factory(_destination, name="dest", deliver=True)
    relay = f"[{family}]" if ":" in family else family

    def setup(root: Path) -> None:
        (root / "control" / "smtproutes").write_text(f"dest.test:{relay}:{dest.smtp}\n")
        (root / "control" / "dnsservers").write_text(dns_server.spec + "\n")
        _published_key(root, dns_server)

    source = server_factory(setup, name="source", deliver=True)
    send(source, "joe@sender.test", ["ann@dest.test"], message("relayed"))
    box = dest.root / "domains" / "dest.test" / "ann" / "Maildir"
    wait_for(lambda: maildir(box), what="delivery at the destination")
    (got,) = maildir(box)
    # The destination's Received on top, then the signatures the source added.
    assert got.index(b"Received:") < got.index(b"DomainKey-Signature:")
    assert got.index(b"Received:") < got.index(b"DKIM-Signature:")
    assert b"(using TLS" in got  # STARTTLS between the two
    path = box / "new" / next(iter(sorted((box / "new").iterdir()))).name
    done = subprocess.run(
        [QUAIL, "verify", "--json", "--dns", dns_server.spec, str(path)],
        capture_output=True,
        check=False,
    )
    verdict = json.loads(done.stdout)
    assert verdict["dkim"]["result"] == "pass", verdict
    assert verdict["domainkeys"]["result"] == "pass", verdict
    try:
        from peers._base import PeerMissing
        from peers.mail_dkim import mail_dkim_verify

        verdict_peer = mail_dkim_verify(got.replace(b"\n", b"\r\n"), dns_port=dns_server.port)
    except PeerMissing as exc:
        pytest.skip(f"Mail::DKIM: {exc}")
    assert verdict_peer.word == "pass", verdict_peer
    wait_for(lambda: not queue_ids(source), what="the source queue to empty")
    assert f"[{family}]" in log_of(source) or family in log_of(source)


SIGNCONF = """<dkimsign>
  <sender.test domain="sender.test" method="relaxed">
    <types id="dkim" keyfile="keys/%/rsa" selector="rsa" />
    <types id="dkim" keyfile="keys/%/ed" selector="ed" />
    <types id="domainkey" keyfile="keys/%/rsa" selector="rsa" method="nofws" />
  </sender.test>
</dkimsign>
"""


def test_signconf_rsa_and_ed25519_through_the_queue(
    server_factory: Callable[..., Running], dns_server: ZoneServer
) -> None:
    """control/dkim/signconf.xml: RSA and Ed25519 DKIM plus DomainKeys on
    one message, made at delivery and verified where it arrives."""
    dest = server_factory(_destination, name="dest", deliver=True)

    def setup(root: Path) -> None:
        control = root / "control"
        (control / "smtproutes").write_text(f"dest.test:127.0.0.1:{dest.smtp}\n")
        (control / "dkim").mkdir()
        (control / "dkim" / "signconf.xml").write_text(SIGNCONF)
        (control / "keys" / "sender.test").mkdir(parents=True)
        for name, kind in (("rsa", "rsa"), ("ed", "ed25519")):
            key = generate(kind) if kind == "ed25519" else generate(kind, 2048)
            (control / "keys" / "sender.test" / name).write_bytes(private_key_pem(key))
            dns_server.zone.add_txt(f"{name}._domainkey.sender.test", record_value(key))

    source = server_factory(setup, name="source", deliver=True)
    send(source, "joe@sender.test", ["ann@dest.test"], message("both"))
    box = dest.root / "domains" / "dest.test" / "ann" / "Maildir"
    wait_for(lambda: maildir(box), what="delivery at the destination")
    (path,) = sorted((box / "new").iterdir())
    done = subprocess.run(
        [QUAIL, "verify", "--json", "--dns", dns_server.spec, str(path)],
        capture_output=True,
        check=False,
    )
    verdict = json.loads(done.stdout)
    signatures = {
        (s["selector"], s["algorithm"], s["result"]) for s in verdict["dkim"]["signatures"]
    }
    assert signatures == {("rsa", "rsa-sha256", "pass"), ("ed", "ed25519-sha256", "pass")}
    assert verdict["domainkeys"]["result"] == "pass", verdict


def test_sendmail_command_of_web_applications(server_factory: Callable[..., Running]) -> None:
    """`quail-sendmail -t -i` (linked as /usr/sbin/sendmail) on $QUAIL_ROOT:
    injected, picked up by worker 0, delivered."""
    server = server_factory(deliver=True)
    sendmail = str(Path(QUAIL).with_name("quail-sendmail"))
    data = b"To: postmaster@mx.test\nSubject: from php\n\nhello\n.\nstill here\n"
    done = subprocess.run(
        [sendmail, "-t", "-i", "-odi", "-oem", "-fwww-data@mx.test"],
        input=data,
        capture_output=True,
        check=False,
        env={**os.environ, "QUAIL_ROOT": str(server.root)},
    )
    assert done.returncode == 0, done.stderr
    box = server.root / "alias" / "Maildir"
    wait_for(lambda: maildir(box), what="the injected message")
    (got,) = maildir(box)
    assert got.startswith(b"Return-Path: <www-data@mx.test>\n")
    assert got.endswith(b"hello\n.\nstill here\n")  # -i: the lone dot is text


def test_sendmail_argv() -> None:
    from quailmail.cli.main import sendmail_argv

    os.environ.pop("QUAIL_ROOT", None)
    assert sendmail_argv(["-t", "-i", "-odi", "-f", "a@b", "-Fjoe", "x@y"]) == [
        "inject", "-t", "-i", "-f", "a@b", "-F", "joe", "x@y", "--root", "/var/qmail",
    ]  # fmt: skip
    assert sendmail_argv(["-ra@b", "-bm", "--", "-x@y"])[:5] == [
        "inject",
        "-f",
        "a@b",
        "--",
        "-x@y",
    ]
