"""The receiver under hostile or careless clients: silence, early talk, many
idle connections, and a server killed with SIGKILL while it takes mail."""

from __future__ import annotations

import random
import re
import resource
import signal
import smtplib
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from quailmail.queue import QueueSet

from serverfixtures import QUAIL, Running, _wait_ready, start_server

MESSAGE = b"From: a@example.com\r\nSubject: %d\r\n\r\nbody %d\r\n"


def _compile_rules(root: Path, text: str) -> None:
    rules = root / "control" / "tcp.smtp"
    rules.write_text(text)
    subprocess.run(
        [QUAIL, "tcprules", f"{rules}.cdb", f"{rules}.tmp"], input=text.encode(), check=True
    )


def test_silent_client_is_timed_out(server_factory: Callable[..., Running]) -> None:
    server = server_factory(lambda root: (root / "control" / "timeoutsmtpd").write_text("1\n"))
    with socket.create_connection(("127.0.0.1", server.smtp), timeout=10) as sock:
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data.startswith(b"220 ")
    assert b"\r\n421 " in data


def test_early_talker_is_refused(server_factory: Callable[..., Running]) -> None:
    server = server_factory(
        lambda root: _compile_rules(root, '127.0.0.1:allow,GREETDELAY="3"\n:allow\n')
    )
    with socket.create_connection(("127.0.0.1", server.smtp), timeout=10) as sock:
        sock.sendall(b"EHLO impatient.example\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data.startswith(b"554 5.5.0")
    with smtplib.SMTP("::1", server.smtp, timeout=10) as client:  # no delay for ::1
        assert client.ehlo("patient.example")[0] == 250


def test_a_thousand_idle_connections_do_not_stop_a_new_client(
    server_factory: Callable[..., Running],
) -> None:
    # concurrencyincoming is split among the workers; give room to spare so
    # an uneven SO_REUSEPORT spread cannot refuse the newcomer.
    server = server_factory(
        lambda root: (root / "control" / "concurrencyincoming").write_text("8000\n")
    )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"file descriptor limit {hard} is below 1,200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    idle: list[socket.socket] = []
    try:
        for _ in range(1000):
            sock = socket.create_connection(("127.0.0.1", server.smtp), timeout=10)
            idle.append(sock)
        for sock in idle[::100]:
            assert sock.recv(100).startswith(b"220 ")
        with smtplib.SMTP("127.0.0.1", server.smtp, timeout=10) as client:
            refused = client.sendmail("a@example.com", ["postmaster@mx.test"], MESSAGE % (0, 0))
            assert refused == {}
    finally:
        for sock in idle:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


_QUEUED = re.compile(rb"ok ([0-9a-z]+)")


def test_sigkill_loses_no_acknowledged_message(tmp_path: Path) -> None:
    """Clients send as fast as they can; the server is killed with SIGKILL at
    a random moment; every message that got its 250 is in the queue after a
    restart, intact.  Bounded: three rounds of at most a second of load."""
    rng = random.Random(20261121)
    root = tmp_path / "root"
    server = start_server(root)
    acknowledged: dict[str, int] = {}
    progress = threading.Condition()
    try:
        for round_number in range(3):
            stop = threading.Event()

            def client(
                worker: int,
                port: int = server.smtp,
                stop: threading.Event = stop,
                round_number: int = round_number,
            ) -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    tag = worker * 1_000_000 + round_number * 100_000 + n
                    try:
                        with smtplib.SMTP("127.0.0.1", port, timeout=5) as c:
                            c.ehlo("crash.example")
                            c.mail("a@example.com")
                            c.rcpt("postmaster@mx.test")
                            code, text = c.data(MESSAGE % (tag, tag))
                    except (OSError, smtplib.SMTPException):
                        return
                    match = _QUEUED.search(text)
                    if code == 250 and match:
                        with progress:
                            acknowledged[match.group(1).decode()] = tag
                            progress.notify_all()

            threads = [threading.Thread(target=client, args=(w,)) for w in range(4)]
            for thread in threads:
                thread.start()
            # Kill after a random number of acknowledgements this round, so
            # the kill lands mid-stream (the timeout only bounds a stuck run).
            target = len(acknowledged) + rng.randint(3, 40)
            with progress:
                progress.wait_for(lambda target=target: len(acknowledged) >= target, timeout=30)
            server.process.send_signal(signal.SIGKILL)
            server.process.wait()
            stop.set()
            for thread in threads:
                thread.join(timeout=10)
            queue = QueueSet(root / "queue")
            present = {m.id: queue.read_sync(m.id) for m in queue.messages()}
            for qid, tag in acknowledged.items():
                assert qid in present, f"round {round_number}: {qid} acknowledged but lost"
                assert present[qid].endswith(b"body %d\r\n" % tag), f"{qid} is corrupt"
            server = _restart(server)
        assert len(acknowledged) > 10
    finally:
        server.stop()


def _restart(old: Running) -> Running:
    log_path = old.log_path
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [QUAIL, "serve", "--root", str(old.root), "--receive-only"],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    running = Running(old.root, old.smtp, old.smtps, old.submission, process, log_path)
    _wait_ready(old.smtp, process)
    return running


def test_oversized_message_is_refused(server_factory: Callable[..., Running]) -> None:
    server = server_factory(lambda root: (root / "control" / "databytes").write_text("2000\n"))
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=10) as client:
        client.ehlo("big.example")
        assert client.esmtp_features["size"] == "2000"
        with pytest.raises(smtplib.SMTPSenderRefused) as early:  # smtplib sends SIZE=
            client.sendmail("a@example.com", ["postmaster@mx.test"], b"x" * 5000 + b"\r\n")
        assert early.value.smtp_code == 552
        client.mail("a@example.com")  # no SIZE= announced: refused after DATA
        client.rcpt("postmaster@mx.test")
        code, text = client.data(b"x" * 5000 + b"\r\n")
        assert (code, text[:5]) == (552, b"5.3.4")
        # the session goes on: a small message after the big one is taken
        assert client.sendmail("a@example.com", ["postmaster@mx.test"], MESSAGE % (1, 1)) == {}


def test_databytes_from_the_rules_wins(server_factory: Callable[..., Running]) -> None:
    def setup(root: Path) -> None:
        (root / "control" / "databytes").write_text("2000\n")
        _compile_rules(root, '127.0.0.1:allow,RELAYCLIENT="",DATABYTES="100"\n')

    server = server_factory(setup)
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=10) as client:
        client.ehlo("big.example")
        assert client.esmtp_features["size"] == "100"  # qmail-smtpd: DATABYTES
        client.mail("a@example.com")
        client.rcpt("postmaster@mx.test")
        code, text = client.data(b"x" * 500 + b"\r\n")
        assert (code, text[:5]) == (552, b"5.3.4")


def test_full_disk_answers_451_and_keeps_nothing_half_written(
    server_factory: Callable[..., Running],
) -> None:
    """The queue on a 1 MiB tmpfs: a message that does not fit gets 451 4.3.1,
    the queue holds only whole messages, and a small one still goes in."""
    mounted: list[Path] = []

    def small_disk(root: Path) -> None:
        queue = root / "queue"
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(queue)],
            capture_output=True,
            check=False,
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.decode().strip()}")
        mounted.append(queue)

    try:
        server = server_factory(small_disk)
        with smtplib.SMTP("127.0.0.1", server.smtp, timeout=10) as client:
            assert client.sendmail("a@example.com", ["postmaster@mx.test"], MESSAGE % (1, 1)) == {}
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.sendmail("a@example.com", ["postmaster@mx.test"], b"y" * 3_000_000)
            assert refused.value.smtp_code == 451
            assert refused.value.smtp_error.startswith(b"4.3.1")
            assert client.sendmail("a@example.com", ["postmaster@mx.test"], MESSAGE % (2, 2)) == {}
        server.stop()
        queue = QueueSet(server.root / "queue")
        bodies = [queue.read_sync(m.id) for m in queue.messages()]
        assert len(bodies) == 2
        assert bodies[0].endswith(b"body 1\r\n") and bodies[1].endswith(b"body 2\r\n")
    finally:
        for queue in mounted:
            subprocess.run(["umount", "-l", str(queue)], check=False)
