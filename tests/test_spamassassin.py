"""SpamAssassin at DATA, end to end: `quail serve` asks Debian's spamd.

GTUBE is tagged `X-Spam-Status: Yes` and delivered to the user's `.Junk`
folder; `control/spamreject` refuses it; spamd down accepts unscanned (or
defers with `spamdfailclosed`); trusted clients are not scanned unless the
rules say `SPAMSCAN="1"`.
"""

from __future__ import annotations

import json
import smtplib
from collections.abc import Callable
from pathlib import Path

import pytest

from quailmail.config.tcprules import compile_rules
from quailmail.config.users import add_user
from quailmail.core.files import write_atomic
from quailmail.dns.zoneserver import ZoneServer

from serverfixtures import Running, free_port, maildir, wait_for
from spamdfixtures import GTUBE, Spamd

pytestmark = pytest.mark.peer

MESSAGE = (
    "From: Ann <ann@example.org>\r\nTo: joe@example.com\r\nSubject: {subject}\r\n"
    "Date: Sat, 21 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@example.org>\r\n\r\n"
    "{body}\r\n"
)
CLEAN = "Shall we meet at noon at the usual place?"


def message(subject: str, body: str = CLEAN) -> bytes:
    return MESSAGE.format(subject=subject, body=body).encode()


def outside(root: Path) -> None:
    """Rules that make the loopback test client an outsider (no RELAYCLIENT)."""
    (root / "control" / "tcp.smtp.cdb").write_bytes(compile_rules(":allow\n"))


def setup_for(spec: str, dns: ZoneServer, **files: str) -> Callable[[Path], None]:
    """A server asking spamd at SPEC; DNS (DMARC's, SPF's) from the loopback
    server, never the machine's."""

    def setup(root: Path) -> None:
        outside(root)
        (root / "control" / "dnsservers").write_text(dns.spec + "\n")
        add_user(root, "joe@example.com", "secret")
        (root / "control" / "rcpthosts").write_text("mx.test\nexample.com\n")
        (root / "control" / "spamd").write_text(spec + "\n")
        for name, text in files.items():
            (root / "control" / name).write_text(text + "\n")

    return setup


def send(server: Running, data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=120) as client:
        client.ehlo("client.example.org")
        assert client.sendmail("ann@example.org", ["joe@example.com"], data) == {}


def refused(server: Running, data: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=120) as client:
        client.ehlo("client.example.org")
        with pytest.raises(smtplib.SMTPDataError) as caught:
            client.sendmail("ann@example.org", ["joe@example.com"], data)
    return caught.value.smtp_code, caught.value.smtp_error


def queued_headers(server: Running) -> dict[str, str]:
    """Subject → header block of each message in the queue."""
    listed = server.quail("queue", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    out = {}
    for line in listed.stdout.decode().splitlines():
        shown = server.quail("queue", "show", json.loads(line)["id"])
        assert shown.returncode == 0, shown.stderr
        text = shown.stdout.decode()
        subject = text.split("Subject: ", 1)[1].split("\n", 1)[0].strip()
        out[subject] = text
    return out


def test_gtube_goes_to_junk_clean_to_inbox(
    server_factory: Callable[..., Running], spamd: Spamd, dns_server: ZoneServer
) -> None:
    server = server_factory(setup_for(spamd.spec, dns_server), deliver=True)
    send(server, message("clean"))
    send(server, message("gtube", GTUBE))
    home = server.root / "domains" / "example.com" / "joe" / "Maildir"
    wait_for(lambda: maildir(home) and maildir(home / ".Junk"), timeout=60, what="inbox and Junk")
    (inbox,) = maildir(home)
    (junk,) = maildir(home / ".Junk")
    assert b"Subject: clean" in inbox and b"Subject: gtube" in junk
    assert b"\nX-Spam-Status: No, score=" in inbox
    assert b"\nX-Spam-Status: Yes, score=" in junk and b"GTUBE," in junk
    score = junk.split(b"\nX-Spam-Score: ", 1)[1].split(b"\n", 1)[0]
    assert float(score) >= 900  # GTUBE's 1000, give or take the other rules
    # Our fields sit above our Received: line, as a filter's would.
    assert junk.index(b"X-Spam-Status:") < junk.index(b"Received: from client.example.org")


def test_spamreject_refuses_over_the_score(
    server_factory: Callable[..., Running], spamd: Spamd, dns_server: ZoneServer
) -> None:
    # Through spamd's unix socket this time.
    server = server_factory(setup_for(str(spamd.socket_path), dns_server, spamreject="15"))
    code, text = refused(server, message("gtube", GTUBE))
    assert code == 554 and text.startswith(b"5.7.1 message refused as spam")
    assert b"limit 15" in text
    send(server, message("clean"))
    headers = queued_headers(server)
    assert list(headers) == ["clean"]
    assert "X-Spam-Status: No, score=" in headers["clean"]


def test_the_clients_spam_fields_go_and_a_bad_spamreject_is_said(
    server_factory: Callable[..., Running], spamd: Spamd, dns_server: ZoneServer
) -> None:
    server = server_factory(setup_for(spamd.spec, dns_server, spamreject="abc"))
    forged = (
        b"X-Spam-Status: No, score=-50.0 required=5.0\r\n\ttests=NONE\r\n"
        b"X-Spam-Score: -50.0\r\nX-Spam-Flag: NO\r\n"
    ) + message("forged", GTUBE)
    send(server, forged)  # a bad spamreject refuses nothing
    send(server, message("second", GTUBE))
    headers = queued_headers(server)
    text = headers["forged"]
    assert text.count("X-Spam-Status:") == 1 and "X-Spam-Status: Yes, score=" in text
    assert text.count("X-Spam-Score:") == 1 and "-50" not in text
    assert "X-Spam-Flag" not in text and "tests=NONE" not in text
    assert "Subject: forged" in text and "Message-ID: <forged@example.org>" in text
    log = server.log_path.read_text()
    assert "removed 3 X-Spam- field(s) the client wrote" in log
    # once per version of the file, in each of the two workers that took a message
    assert log.count("control/spamreject ignored: 'abc' is not a score") in (1, 2)


def test_spamd_down_accepts_unscanned_or_defers(
    server_factory: Callable[..., Running], dns_server: ZoneServer
) -> None:
    server = server_factory(setup_for(f"127.0.0.1:{free_port()}", dns_server))
    send(server, message("unscanned", GTUBE))
    headers = queued_headers(server)
    assert "X-Spam-Status" not in headers["unscanned"]
    assert "accepted unscanned: spamd 127.0.0.1:" in server.log_path.read_text()
    (server.root / "control" / "spamdfailclosed").write_text("1\n")
    code, text = refused(server, message("deferred", GTUBE))
    assert (code, text) == (451, b"4.7.1 spam scanner unavailable; try again later")
    assert list(queued_headers(server)) == ["unscanned"]


def test_trusted_clients_are_scanned_only_when_asked(
    server_factory: Callable[..., Running], spamd: Spamd, dns_server: ZoneServer
) -> None:
    server = server_factory(setup_for(spamd.spec, dns_server))
    cdb = server.root / "control" / "tcp.smtp.cdb"
    # Replaced by rename, as `quail tcprules` does, while the server runs.
    write_atomic(cdb, compile_rules('127.:allow,RELAYCLIENT=""\n'))
    send(server, message("relayed", GTUBE))
    write_atomic(cdb, compile_rules('127.:allow,RELAYCLIENT="",SPAMSCAN="1"\n'))
    send(server, message("asked", GTUBE))
    write_atomic(cdb, compile_rules(':allow,SPAMSCAN="0"\n'))
    send(server, message("excluded", GTUBE))
    headers = queued_headers(server)
    assert "X-Spam-Status" not in headers["relayed"]
    assert "X-Spam-Status: Yes" in headers["asked"]
    assert "X-Spam-Status" not in headers["excluded"]


def test_messages_over_spamdmaxsize_are_not_scanned(
    server_factory: Callable[..., Running], spamd: Spamd, dns_server: ZoneServer
) -> None:
    server = server_factory(setup_for(spamd.spec, dns_server, spamdmaxsize="2000"))
    send(server, message("small", GTUBE))
    send(server, message("large", GTUBE + "\r\n" + "x" * 70 + ("\r\n" + "y" * 70) * 40))
    headers = queued_headers(server)
    assert "X-Spam-Status: Yes" in headers["small"]
    assert "X-Spam-Status" not in headers["large"]
    assert "not scanned:" in server.log_path.read_text()
