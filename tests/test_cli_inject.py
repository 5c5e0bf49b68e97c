"""`quail inject`: sendmail-compatible submission into the durable queue,
beside a running server."""

from __future__ import annotations

import subprocess
from pathlib import Path

from quailmail.queue import QueueSet

from serverfixtures import QUAIL, Running


def inject(root: Path, *args: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [QUAIL, "inject", "--root", str(root), *args], input=stdin, capture_output=True, check=False
    )


def messages(root: Path) -> list[tuple[str, list[str], bytes]]:
    queue = QueueSet(root / "queue")
    return [(m.sender, list(m.recipients), queue.read_sync(m.id)) for m in queue.messages()]


def test_sendmail_t_i_beside_a_running_server(server: Running) -> None:
    text = (
        b"To: Ann <ann@example.org>, bob@example.net\n"
        b"Bcc: hidden@example.com\n"
        b"Subject: from a web app\n"
        b"\n"
        b"line one\n.\nstill here with -i\n"
    )
    proc = inject(server.root, "-t", "-i", "-f", "app@mx.test", stdin=text)
    assert proc.returncode == 0, proc.stderr
    [(sender, recipients, data)] = messages(server.root)
    assert sender == "app@mx.test"
    assert recipients == ["ann@example.org", "bob@example.net", "hidden@example.com"]
    assert b"Bcc:" not in data and b"hidden@" not in data
    assert b"\r\nstill here with -i\r\n" in data
    for field in (b"From: app@mx.test\r\n", b"Date: ", b"Message-ID: <"):
        assert field in data


def test_dot_ends_the_message_without_i(server: Running) -> None:
    proc = inject(server.root, "joe@example.org", stdin=b"Subject: x\n\nkept\n.\ndropped\n")
    assert proc.returncode == 0, proc.stderr
    [(_, recipients, data)] = messages(server.root)
    assert recipients == ["joe@example.org"]
    assert data.endswith(b"kept\r\n") and b"dropped" not in data


def test_no_recipient_is_permanent(tmp_path: Path) -> None:
    (tmp_path / "control").mkdir()
    proc = inject(tmp_path, stdin=b"Subject: nobody\n\nx\n")
    assert proc.returncode == 100
    assert proc.stderr.count(b"\n") == 1 and b"no recipients" in proc.stderr
