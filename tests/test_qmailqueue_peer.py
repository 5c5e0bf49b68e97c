"""`quail-qmail-queue` and `quail-dkverify` run by an independent qmail-queue
caller: Debian's mailfront (Bruce Guenter's SMTP front end), whose qmail
back end runs `$QMAILQUEUE` as qmail-smtpd runs qmail-queue (LF message on
fd 0, envelope on fd 1, exit codes 11 to 40 permanent).  This is quail's
half of a real qmail installation: the programs a qmail-smtpd would call."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from quailmail.auth.dkim import sign_dkim
from quailmail.auth.keys import generate, record_value
from quailmail.auth.message import parse_message
from quailmail.dns.zoneserver import ZoneServer
from quailmail.queue import QueueSet

from serverfixtures import QUAIL

pytestmark = [
    pytest.mark.peer,
    pytest.mark.skipif(
        shutil.which("mailfront", path="/usr/sbin:/usr/bin") is None,
        reason="Debian's mailfront is not installed",
    ),
]

BIN = Path(sys.executable).parent
KEY = generate("rsa", 1024)
MESSAGE = (
    b"From: Joe <joe@example.com>\r\nTo: Suzie <suzie@example.org>\r\nSubject: via mailfront\r\n"
    b"Date: Fri, 11 Jul 2003 21:00:37 -0700\r\nMessage-ID: <mf@example.com>\r\n\r\nHi.\r\n"
)


def signed() -> bytes:
    return sign_dkim(parse_message(MESSAGE), KEY, selector="default") + MESSAGE


def mailfront(root: Path, queue_program: str, message: bytes, **env: str) -> str:
    """One SMTP transaction through `mailfront smtp qmail accept` on
    stdin/stdout (as tcpserver would run it); the replies."""
    script = (
        b"EHLO client.test\r\nMAIL FROM:<joe@example.com>\r\nRCPT TO:<suzie@example.org>\r\n"
        b"DATA\r\n" + message.replace(b"\r\n.", b"\r\n..") + b".\r\nQUIT\r\n"
    )
    environ = {k: v for k, v in os.environ.items() if k not in ("DKIM", "DKQUEUE")}
    environ.update(
        TCPREMOTEIP="127.0.0.1",
        TCPLOCALIP="127.0.0.1",
        QMAILQUEUE=queue_program,
        QMAILHOME=str(root),
        QUAIL_ROOT=str(root),
        PATH=f"{BIN}{os.pathsep}{environ.get('PATH', os.defpath)}",
        **env,
    )
    done = subprocess.run(
        ["/usr/sbin/mailfront", "smtp", "qmail", "accept"],
        input=script, capture_output=True, env=environ, cwd=root, check=False, timeout=60,
    )  # fmt: skip
    assert b"Traceback" not in done.stderr, done.stderr.decode()
    return done.stdout.decode()


@pytest.fixture
def root(tmp_path: Path, dns_server: ZoneServer) -> Path:
    path = tmp_path / "root"
    subprocess.run([QUAIL, "init", str(path), "--hostname", "mx.test"], check=True,
                   capture_output=True)  # fmt: skip
    (path / "control" / "dnsservers").write_text(dns_server.spec + "\n")
    dns_server.zone.add_txt("default._domainkey.example.com", record_value(KEY))
    return path


def queued(root: Path) -> list[tuple[str, list[str], bytes]]:
    queue = QueueSet(root / "queue")
    return [(m.sender, list(m.recipients), queue.read_sync(m.id)) for m in queue.messages()]


def test_mailfront_queues_through_quail_qmail_queue(root: Path) -> None:
    replies = mailfront(root, str(BIN / "quail-qmail-queue"), MESSAGE)
    assert "250 2.6.0 Accepted message qp" in replies
    [(sender, rcpts, data)] = queued(root)
    assert (sender, rcpts) == ("joe@example.com", ["suzie@example.org"])
    assert data.endswith(MESSAGE)  # LF from mailfront, CRLF again in the queue


def test_mailfront_runs_quail_dkverify_then_our_queue(root: Path) -> None:
    replies = mailfront(root, str(BIN / "quail-dkverify"), signed())
    assert "250 2.6.0 Accepted message" in replies
    replies = mailfront(root, str(BIN / "quail-dkverify"), signed().replace(b"Hi.", b"Ho."))
    assert "250 2.6.0 Accepted message" in replies  # annotate only, without DKIM="+"
    first, second = (data for _, _, data in queued(root))
    assert first.startswith(b"X-Authentication-Results: joe@example.com dkim=pass mx.test\r\n")
    assert first.endswith(signed())
    assert second.startswith(
        b"X-Authentication-Results: joe@example.com dkim=fail (body hash did not verify) mx.test"
    )


def test_mailfront_hears_the_refusal_of_dkim_plus(root: Path) -> None:
    replies = mailfront(
        root, str(BIN / "quail-dkverify"), signed().replace(b"Hi.", b"Ho."), DKIM="+"
    )
    # mailfront answers permanent exit codes (11 to 40) with a 5xx.
    final = [line for line in replies.splitlines() if not line.startswith(("220", "221", "250-"))]
    assert any(line.startswith("554 ") for line in final), replies
    assert queued(root) == []


def test_mailfront_without_a_root_is_a_temporary_failure(tmp_path: Path, root: Path) -> None:
    elsewhere = tmp_path / "not-a-root"
    elsewhere.mkdir()
    replies = mailfront(elsewhere, str(BIN / "quail-qmail-queue"), MESSAGE)
    assert any(line.startswith("451 ") for line in replies.splitlines()), replies
