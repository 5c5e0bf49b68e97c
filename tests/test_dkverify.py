"""`quail dkverify` (s/qmail's qmail-dkverify, ../shared/seeds/004_*): as a
standalone qmail-queue filter in front of a recording program, the way a
real qmail would run it, and inside `quail serve` as its QMAILQUEUE."""

from __future__ import annotations

import os
import smtplib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from quailmail.auth.dkim import sign_dkim
from quailmail.auth.keys import generate, record_value
from quailmail.auth.message import parse_message
from quailmail.config.tcprules import compile_rules
from quailmail.dns.zone import Fault
from quailmail.dns.zoneserver import ZoneServer
from quailmail.queue import QueueSet
from quailmail.queue.qmailqueue import encode_envelope

from serverfixtures import Running

DATA = Path(__file__).parent / "data" / "qmailqueue"
DKVERIFY = str(Path(sys.executable).with_name("quail-dkverify"))
KEY = generate("rsa", 1024)
MESSAGE = (
    b"From: Joe <joe@example.com>\r\n"
    b"To: Suzie <suzie@mx.test>\r\n"
    b"Subject: dinner\r\n"
    b"Date: Fri, 11 Jul 2003 21:00:37 -0700\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"\r\n"
    b"Hi.\r\n"
)


def signed(message: bytes = MESSAGE) -> bytes:
    return sign_dkim(parse_message(message), KEY, selector="default") + message


@pytest.fixture
def keyed(dns_server: ZoneServer) -> ZoneServer:
    dns_server.zone.add_txt("default._domainkey.example.com", record_value(KEY))
    return dns_server


def lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def dkverify(
    tmp_path: Path, message: bytes, dns: ZoneServer, *, sender: str = "joe@example.com",
    env: dict[str, str] | None = None,
) -> tuple[subprocess.CompletedProcess[bytes], Path]:  # fmt: skip
    """quail-dkverify as a real qmail-smtpd runs a QMAILQUEUE program: LF
    message on fd 0, envelope pipe on fd 1, cwd the qmail home; DKQUEUE the
    recording program."""
    home = tmp_path / "var-qmail"
    (home / "control").mkdir(parents=True, exist_ok=True)
    (home / "control" / "me").write_text("mx.test\n")
    record = tmp_path / "record"
    record.mkdir(exist_ok=True)
    environ = {k: v for k, v in os.environ.items() if k not in ("QUAIL_ROOT", "DKIM")}
    environ.update({"DKQUEUE": str(DATA / "record"), "RECORD_DIR": str(record)})
    environ.update(env or {})
    read_end, write_end = os.pipe()
    with subprocess.Popen(
        [DKVERIFY, "--dns", dns.spec],
        stdin=subprocess.PIPE, stdout=read_end, stderr=subprocess.PIPE, env=environ, cwd=home,
    ) as proc:  # fmt: skip
        os.close(read_end)
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(encode_envelope(sender, ["suzie@mx.test"]))
        _, stderr = proc.communicate(lf(message))
    assert b"Traceback" not in stderr, stderr.decode()
    return subprocess.CompletedProcess(proc.args, proc.returncode, b"", stderr), record


def test_good_signature_gets_pass_and_is_handed_on(tmp_path: Path, keyed: ZoneServer) -> None:
    done, record = dkverify(tmp_path, signed(), keyed)
    assert done.returncode == 0, done.stderr
    message = (record / "message").read_bytes()
    first, rest = message.split(b"\n", 1)
    assert first == b"X-Authentication-Results: joe@example.com dkim=pass mx.test"
    assert rest == lf(signed())  # the message itself untouched, still LF
    assert (record / "envelope").read_bytes() == b"Fjoe@example.com\0Tsuzie@mx.test\0\0"


def test_bad_signature_is_annotated_with_the_reason(tmp_path: Path, keyed: ZoneServer) -> None:
    forged = signed().replace(b"Hi.", b"Ho.")
    done, record = dkverify(tmp_path, forged, keyed, sender="")
    assert done.returncode == 0, done.stderr
    first = (record / "message").read_bytes().split(b"\n", 1)[0]
    assert first == b"X-Authentication-Results: <> dkim=fail (body hash did not verify) mx.test"


def test_unsigned_message_passes_without_a_field(tmp_path: Path, keyed: ZoneServer) -> None:
    done, record = dkverify(tmp_path, MESSAGE, keyed, env={"DKIM": "+"})
    assert done.returncode == 0, done.stderr
    assert (record / "message").read_bytes() == lf(MESSAGE)


def test_dkim_plus_refuses_a_failing_signature(tmp_path: Path, keyed: ZoneServer) -> None:
    forged = signed().replace(b"Hi.", b"Ho.")
    done, record = dkverify(tmp_path, forged, keyed, env={"DKIM": "+"})
    assert done.returncode == 31  # qmail-smtpd: 554 mail server permanently rejected message
    assert b"Reject::DKIM::Signature" in done.stderr and b"body hash" in done.stderr
    assert not (record / "message").exists()  # never handed on
    done, record = dkverify(tmp_path, signed(), keyed, env={"DKIM": "+"})
    assert done.returncode == 0
    assert (record / "message").read_bytes().startswith(b"X-Authentication-Results: joe@")


def test_dkim_plus_with_a_key_lookup_failure_is_temporary(
    tmp_path: Path, dns_server: ZoneServer
) -> None:
    dns_server.zone.set_fault("default._domainkey.example.com", Fault.SERVFAIL)
    done, record = dkverify(tmp_path, signed(), dns_server, env={"DKIM": "+"})
    assert done.returncode == 71  # qmail-smtpd: 451, tried again later
    assert not (record / "message").exists()


def test_a_missing_next_program_is_unable_to_exec(tmp_path: Path, keyed: ZoneServer) -> None:
    missing = {"DKQUEUE": "/var/qmail/bin/qmail-queue.orig"}  # the seeds' value, no qmail here
    done, _ = dkverify(tmp_path, signed(), keyed, env=missing)
    assert done.returncode == 120
    assert b"cannot run /var/qmail/bin/qmail-queue.orig" in done.stderr


# -- inside quail serve -----------------------------------------------------------------------


def serving(dns: ZoneServer, extra: str = "") -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        (root / "control" / "dnsservers").write_text(dns.spec + "\n")
        text = f'127.:allow,RELAYCLIENT="",QMAILQUEUE="quail-dkverify"{extra}\n:allow\n'
        (root / "control" / "tcp.smtp").write_text(text)
        (root / "control" / "tcp.smtp.cdb").write_bytes(compile_rules(text))

    return setup


def queued(server: Running) -> list[bytes]:
    queue = QueueSet(server.root / "queue")
    return [queue.read_sync(m.id) for m in queue.messages()]


def test_inside_quail_serve_the_field_reaches_the_queue(
    server_factory: Callable[..., Running], keyed: ZoneServer
) -> None:
    server = server_factory(serving(keyed))
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30) as client:
        client.ehlo("client.test")
        assert client.sendmail("joe@example.com", ["postmaster@mx.test"], signed()) == {}
        assert client.sendmail("", ["postmaster@mx.test"], signed().replace(b"Hi.", b"Ho.")) == {}
    first, second = queued(server)  # in the inject shard, read beside the running server
    assert first.startswith(b"X-Authentication-Results: joe@example.com dkim=pass mx.test\r\n"
                            b"Received: from client.test (")  # fmt: skip
    assert first.endswith(signed())
    assert second.startswith(
        b"X-Authentication-Results: <> dkim=fail (body hash did not verify) mx.test\r\n"
    )


def test_inside_quail_serve_dkim_plus_refuses(
    server_factory: Callable[..., Running], keyed: ZoneServer
) -> None:
    server = server_factory(serving(keyed, ',DKIM="+"'))
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30) as client:
        client.ehlo("client.test")
        client.mail("joe@example.com")
        client.rcpt("postmaster@mx.test")
        code, text = client.data(signed().replace(b"Hi.", b"Ho."))
        assert (code, text) == (554, b"5.3.0 mail server permanently rejected message")
        assert client.sendmail("joe@example.com", ["postmaster@mx.test"], signed()) == {}
    [kept] = queued(server)
    assert kept.startswith(b"X-Authentication-Results: joe@example.com dkim=pass")
    log = server.log_path.read_text(errors="replace")
    assert "Reject::DKIM::Signature" in log
