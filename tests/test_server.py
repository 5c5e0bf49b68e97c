"""The receiver end to end: `quail serve` on 127.0.0.1 and ::1, real clients."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from quailmail.dns.zoneserver import ZoneServer
from quailmail.net.proxy import v1_header, v2_header
from quailmail.queue import QueueSet

from serverfixtures import QUAIL, Running

MESSAGE = b"From: a@example.com\r\nTo: postmaster@mx.test\r\nSubject: hi\r\n\r\nhello\r\n"


def no_verify() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def queued(server: Running) -> list[bytes]:
    queue = QueueSet(server.root / "queue")
    return [queue.read_sync(m.id) for m in queue.messages()]


def stats(server: Running) -> dict[str, int]:
    proc = server.quail("queue", "stats", "--json")
    assert proc.returncode == 0, proc.stderr
    data: dict[str, int] = json.loads(proc.stdout)
    return data


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_plain_smtp_on_both_families(server: Running, host: str) -> None:
    with smtplib.SMTP(host, server.smtp, timeout=10) as client:
        code, banner = client.ehlo("client.example")
        assert code == 250 and b"PIPELINING" in banner and b"STARTTLS" in banner
        refused = client.sendmail("a@example.com", ["postmaster@mx.test"], MESSAGE)
        assert refused == {}
    messages = queued(server)
    assert len(messages) == 1
    received = messages[0].split(b"\r\n")[0]
    literal = b"[IPv6:::1]" if host == "::1" else b"[127.0.0.1]"
    assert received.startswith(b"Received: from client.example (") and literal in received
    assert messages[0].endswith(MESSAGE)


def test_starttls_and_implicit_tls(server: Running) -> None:
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=10) as client:
        client.starttls(context=no_verify())
        client.ehlo("client.example")
        client.sendmail("a@example.com", ["postmaster@mx.test"], MESSAGE)
    with smtplib.SMTP_SSL("::1", server.smtps, timeout=10, context=no_verify()) as client:
        client.sendmail("a@example.com", ["postmaster@mx.test"], MESSAGE)
    messages = queued(server)
    assert len(messages) == 2
    assert all(b"(using TLSv1." in m.split(b"\r\n\r\n")[0] for m in messages)
    assert all(b"with ESMTPS" in m for m in messages)
    # A TLS client that ends its input with close_notify (as Postfix does):
    # taken without asyncio's "returning true from eof_received()" warning.
    raw = socket.create_connection(("127.0.0.1", server.smtps), timeout=10)
    with no_verify().wrap_socket(raw, server_hostname="mx.test") as tls:
        assert tls.recv(512).startswith(b"220 ")
        tls.sendall(b"NOOP\r\n")
        assert tls.recv(512).startswith(b"250 ")
        with contextlib.suppress(OSError):
            tls.unwrap()  # close_notify, then the server's close
    server.stop()
    assert "eof_received" not in server.log_path.read_text()


def test_relay_is_refused_unless_authenticated(server: Running) -> None:
    added = server.quail("user", "add", "joe@example.net", "--password-stdin", stdin=b"s3cret\n")
    assert added.returncode == 0, added.stderr
    with smtplib.SMTP("127.0.0.1", server.submission, timeout=10) as client:
        client.starttls(context=no_verify())
        client.ehlo("client.example")
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.sendmail("joe@example.net", ["friend@elsewhere.example"], MESSAGE)
        code, text = refused.value.recipients["friend@elsewhere.example"]
        assert code == 553 and text.startswith(b"5.7.1")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("joe@example.net", "wrong")
        client.login("joe@example.net", "s3cret")
        assert client.sendmail("joe@example.net", ["friend@elsewhere.example"], MESSAGE) == {}
    message = queued(server)[0]
    assert b"(authenticated user joe@example.net)" in message
    assert b"with ESMTPSA" in message


def test_auth_is_not_offered_without_tls(server: Running) -> None:
    with smtplib.SMTP("127.0.0.1", server.submission, timeout=10) as client:
        client.ehlo("client.example")
        assert not client.has_extn("auth")


def _talk(port: int, data: bytes, *, host: str = "127.0.0.1") -> bytes:
    """Send a whole script, read every reply until the server closes (a
    connection dropped by a deny rule reads as nothing)."""
    chunks = []
    with socket.create_connection((host, port), timeout=10) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except OSError:
            pass  # a deny rule may close (reset, EPIPE, ENOTCONN) before the script is written
    return b"".join(chunks)


def test_pipelining_and_bdat(server: Running) -> None:
    body = b"Subject: bdat\r\n\r\nbinary-safe body\r\n"
    script = (
        b"EHLO client.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<postmaster@mx.test>\r\n"
        + b"BDAT %d LAST\r\n" % len(body) + body
        + b"MAIL FROM:<>\r\nRCPT TO:<root@localhost>\r\nDATA\r\n"
        + b"Subject: two\r\n\r\n..dot\r\n.\r\nQUIT\r\n"
    )  # fmt: skip
    reply = _talk(server.smtp, script).decode()
    finals = [line[:3] for line in reply.splitlines() if line[3:4] == " "]
    assert finals == ["220", "250", "250", "250", "250", "250", "250", "354", "250", "221"]
    messages = queued(server)
    assert messages[0].endswith(body)
    assert messages[1].endswith(b"\r\n.dot\r\n")


def test_smuggling_vector_is_refused_and_nothing_smuggled(server: Running) -> None:
    script = (
        b"EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<postmaster@mx.test>\r\nDATA\r\n"
        b"Subject: a\r\n\r\nbody\n.\nMAIL FROM:<evil@example.com>\r\n\r\n.\r\nQUIT\r\n"
    )
    reply = _talk(server.smtp, script).decode()
    assert "550 5.6.0" in reply
    assert stats(server)["messages"] == 0


@pytest.mark.parametrize(
    ("client", "make"),
    [("192.0.2.9", v1_header), ("2001:db8::9", v2_header)],
)
def test_proxy_protocol_presents_the_client(
    server_factory: Callable[..., Running], client: str, make: Callable[..., bytes]
) -> None:
    def trust_loopback(root: Path) -> None:
        (root / "control" / "proxyfrom").write_text("127.0.0.1\n::1\n")

    server = server_factory(trust_loopback)
    script = make(client, 5555, "127.0.0.1", server.smtp) + (
        b"EHLO proxied.example\r\nMAIL FROM:<a@example.com>\r\n"
        b"RCPT TO:<friend@elsewhere.example>\r\nRCPT TO:<postmaster@mx.test>\r\n"
        b"DATA\r\nSubject: p\r\n\r\nx\r\n.\r\nQUIT\r\n"
    )
    reply = _talk(server.smtp, script).decode()
    assert "553 5.7.1" in reply  # not loopback any more: no RELAYCLIENT
    message = queued(server)[0]
    literal = f"[IPv6:{client}]" if ":" in client else f"[{client}]"
    # Our Received: line (policy checks may put their fields above it).
    received = next(line for line in message.split(b"\r\n") if line.startswith(b"Received:"))
    assert literal.encode() in received


def test_tcprules_deny_and_recompile_without_restart(server: Running) -> None:
    rules = server.root / "control" / "tcp.smtp"
    rules.write_text("127.0.0.1:deny\n:allow\n")
    proc = subprocess.run(
        [QUAIL, "tcprules", str(rules) + ".cdb", str(rules) + ".tmp"],
        input=rules.read_bytes(),
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert _talk(server.smtp, b"QUIT\r\n") == b""  # dropped without a word
    assert _talk(server.smtp, b"QUIT\r\n", host="::1").startswith(b"220 ")


def test_the_run_scripts_variables_count_and_a_rule_overrides_them(
    server_factory: Callable[..., Running],
) -> None:
    # A run script's `RBLSMTPD="-go away" exec tcpserver ... qmail-smtpd`:
    # every client gets it, unless its rule sets the variable itself.
    def setup(root: Path) -> None:
        rules = root / "control" / "tcp.smtp"
        rules.write_text('127.0.0.1:allow,RELAYCLIENT=""\n::1:allow,RELAYCLIENT="",RBLSMTPD=""\n')
        proc = subprocess.run([QUAIL, "tcprules", f"{rules}.cdb", f"{rules}.tmp"],
                              input=rules.read_bytes(), check=False)  # fmt: skip
        assert proc.returncode == 0

    running = server_factory(setup, env={"RBLSMTPD": "-go away"})
    for host, refused in (("127.0.0.1", True), ("::1", False)):
        with smtplib.SMTP(host, running.smtp, timeout=10) as client:
            client.ehlo("client.test")
            assert client.docmd("MAIL FROM:<a@example.com>")[0] == 250
            code, text = client.docmd("RCPT TO:<postmaster@mx.test>")
            assert (code, text) == ((553, b"5.7.1 go away") if refused else (250, text)), host


def test_rules_by_absolute_path(server_factory: Callable[..., Running], tmp_path: Path) -> None:
    # /etc/tcprules.d/tcp.smtp.cdb on a QmailToaster: the listener names it.
    rules = tmp_path / "tcprules.d" / "tcp.smtp"
    rules.parent.mkdir()
    rules.write_text("127.0.0.1:deny\n:allow\n")
    proc = subprocess.run(
        [QUAIL, "tcprules", f"{rules}.cdb", f"{rules}.tmp"], input=rules.read_bytes(), check=False
    )
    assert proc.returncode == 0

    def setup(root: Path) -> None:
        listeners = root / "control" / "listeners"
        lines = []
        for line in listeners.read_text().splitlines():
            plain_smtp = line.split()[3:] == ["smtp"]  # NAME ADDRESS PORT smtp
            lines.append(f"{line} {rules}.cdb" if plain_smtp else line)
        listeners.write_text("\n".join(lines) + "\n")

    running = server_factory(setup)
    assert _talk(running.smtp, b"QUIT\r\n") == b""  # denied by the file outside control/
    assert _talk(running.smtp, b"QUIT\r\n", host="::1").startswith(b"220 ")


@pytest.mark.parametrize("content", [b"", b"not a cdb at all", b"\xff" * 4096])
def test_an_unreadable_rules_file_gets_a_421_until_it_is_mended(
    server: Running, content: bytes
) -> None:
    # Written in place by hand, truncated, or corrupt: the client is told to
    # come back (tcpserver would drop it), the reason is logged in one line,
    # and the next connection reads the file again.
    cdb = server.root / "control" / "tcp.smtp.cdb"
    good = cdb.read_bytes()
    cdb.write_bytes(content)
    answer = _talk(server.smtp, b"")  # nothing unread when it closes: no reset
    assert answer.startswith(b"421 4.3.0 ") and answer.count(b"\r\n") == 1, answer
    cdb.write_bytes(good)
    assert _talk(server.smtp, b"QUIT\r\n").startswith(b"220 ")
    server.stop()
    log = server.log_path.read_text()
    assert "tcp.smtp.cdb unreadable: " in log
    assert "Traceback" not in log


def test_swaks(server: Running) -> None:
    swaks = shutil.which("swaks")
    if swaks is None:
        pytest.skip("swaks is not installed (Debian package swaks)")
    proc = subprocess.run(
        [
            swaks,
            "--server",
            "::1",
            "--port",
            str(server.smtp),
            "--to",
            "postmaster@mx.test",
            "--from",
            "a@example.com",
            "--tls",
            "--pipeline",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout.decode(errors="replace")
    assert stats(server)["messages"] == 1


def test_sigterm_stops_cleanly(server: Running) -> None:
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=10) as client:
        client.sendmail("a@example.com", ["postmaster@mx.test"], MESSAGE)
    assert server.stop() == 0
    assert len(queued(server)) == 1


def test_log_lines_keep_their_format(server: Running) -> None:
    # "date time,ms logger[worker]: text", one a line, the time as logging's
    # default renders it (the server formats the seconds once a second).
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=10) as client:
        client.sendmail("a@example.com", ["postmaster@mx.test"], MESSAGE)
    server.stop()
    lines = server.log_path.read_text().splitlines()
    shape = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} quailmail[\w.]*\[\d+\]: \S")
    assert lines and all(shape.match(line) for line in lines), lines
    assert any(": queued " in line for line in lines), lines


def test_host_rules_use_the_verified_reverse_name(
    server_factory: Callable[..., Running], dns_server: ZoneServer
) -> None:
    """`=host` rules: the client's PTR name counts once it resolves back."""
    dns_server.zone.add_ptr("127.0.0.1", "trusted.test")
    dns_server.zone.add_a("trusted.test", "127.0.0.1")
    dns_server.zone.add_ptr("::1", "liar.test")  # no AAAA back: not verified

    def setup(root: Path) -> None:
        (root / "control" / "dnsservers").write_text(dns_server.spec + "\n")
        rules = '=trusted.test:allow,RELAYCLIENT="",FROMHOST="yes"\n=liar.test:deny\n:allow\n'
        (root / "control" / "tcp.smtp").write_text(rules)
        subprocess.run(
            [
                QUAIL,
                "tcprules",
                str(root / "control" / "tcp.smtp.cdb"),
                str(root / "control" / "tcp.smtp.tmp"),
            ],
            input=rules.encode(),
            check=True,
        )

    server = server_factory(setup)
    relayed = _talk(
        server.smtp,
        b"EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<friend@elsewhere.example>\r\nQUIT\r\n",
    )
    assert b"250 2.1.5" in relayed  # RELAYCLIENT from =trusted.test
    unverified = _talk(
        server.smtp,
        b"EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<friend@elsewhere.example>\r\nQUIT\r\n",
        host="::1",
    )
    assert unverified.startswith(b"220 ")  # =liar.test did not match: allowed, no relay
    assert b"553 5.7.1" in unverified


def test_unknown_local_recipient_is_refused(server: Running) -> None:
    reply = _talk(
        server.smtp,
        b"EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<zz9-plural-z-alpha@mx.test>\r\nQUIT\r\n",
        host="::1",
    )
    assert b"550 5.1.1" in reply


OPEN_RELAY_TRICKS = [
    "friend@elsewhere.example",
    "friend%elsewhere.example@mx.test",
    "elsewhere.example!friend@mx.test",
    "@mx.test:friend@elsewhere.example",
    '"friend@elsewhere.example"@mx.test',
    "friend@[192.0.2.77]",
    "friend@[IPv6:2001:db8::77]",
    "FRIEND@ELSEWHERE.EXAMPLE",
    "friend@elsewhere.example.",
]


def test_open_relay_tricks_are_refused_for_an_outside_client(
    server_factory: Callable[..., Running],
) -> None:
    def trust_loopback(root: Path) -> None:
        (root / "control" / "proxyfrom").write_text("127.0.0.1\n")

    server = server_factory(trust_loopback)
    script = v1_header("198.51.100.20", 4000, "127.0.0.1", server.smtp)
    script += b"EHLO outside.example\r\nMAIL FROM:<spammer@example.com>\r\n"
    for address in OPEN_RELAY_TRICKS:
        script += f"RCPT TO:<{address}>\r\n".encode()
    script += b"RCPT TO:<POSTMASTER@MX.TEST>\r\nQUIT\r\n"
    lines = _talk(server.smtp, script).decode().splitlines()
    finals = [line for line in lines if line[3:4] == " "]  # last line of each reply
    # greeting, EHLO, MAIL, one per RCPT, QUIT
    assert len(finals) == 3 + len(OPEN_RELAY_TRICKS) + 1 + 1, lines
    rcpt_replies = finals[3:-1]
    for address, reply in zip(OPEN_RELAY_TRICKS, rcpt_replies, strict=False):
        assert reply[0] == "5", f"{address}: {reply}"
    assert rcpt_replies[-1].startswith("250 2.1.5")  # our own domain, any case


def test_auth_login_over_starttls(server: Running) -> None:
    added = server.quail("user", "add", "ann@example.net", "--password-stdin", stdin=b"pw-9\n")
    assert added.returncode == 0, added.stderr
    with smtplib.SMTP("::1", server.submission, timeout=10) as client:
        client.starttls(context=no_verify())
        client.ehlo("client.example")
        client.user, client.password = "ann@example.net", "pw-9"
        code, _ = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
        assert code == 235
