"""Helpers for the inbound-policy tests: a real SMTP client that can present
any client address through the PROXY protocol (the server trusts loopback
as a load balancer), tcprules compiled with `quail tcprules`, control files
replaced by rename (a new inode, seen at once by the stat-keyed cache), and
the queue read back."""

from __future__ import annotations

import os
import smtplib
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from quailmail.net.proxy import v1_header, v2_header
from quailmail.queue import QueueSet

from serverfixtures import QUAIL


def put(path: Path, text: str) -> None:
    """Write a control file by rename (what an admin's editor or make does)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


def compile_rules(root: Path, text: str, name: str = "tcp.smtp") -> None:
    rules = root / "control" / name
    rules.write_text(text)
    proc = subprocess.run(
        [QUAIL, "tcprules", f"{rules}.cdb", f"{rules}.tmp"],
        input=rules.read_bytes(),
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def trust_proxy(root: Path) -> None:
    (root / "control" / "proxyfrom").write_text("127.0.0.1\n::1\n")


def proxied(port: int, client_ip: str, *, host: str = "127.0.0.1") -> smtplib.SMTP:
    """An smtplib client whose connection starts with a PROXY header naming
    `client_ip` (v2 for IPv6), greeting read."""
    client = smtplib.SMTP(timeout=20)
    sock = socket.create_connection((host, port), timeout=20)
    make = v2_header if ":" in client_ip else v1_header
    sock.sendall(make(client_ip, 40000, host, port))
    client.sock = sock
    client.file = None
    code, _ = client.getreply()
    assert code == 220
    return client


@dataclass
class Outcome:
    """The replies of one transaction: MAIL, each RCPT, DATA's final."""

    mail: tuple[int, str]
    rcpt: list[tuple[int, str]] = field(default_factory=list)
    data: tuple[int, str] | None = None

    @property
    def accepted(self) -> bool:
        return self.data is not None and self.data[0] == 250


def transaction(
    client: smtplib.SMTP,
    sender: str,
    recipients: list[str],
    message: bytes,
    *,
    helo: str = "client.example",
) -> Outcome:
    """EHLO (once), MAIL, RCPT..., DATA as a client does them one by one;
    stops at the first refusal of MAIL or of every RCPT."""
    if client.ehlo_resp is None:
        client.ehlo(helo)
    code, text = client.mail(sender)
    out = Outcome((code, text.decode(errors="replace")))
    if code != 250:
        return out
    for recipient in recipients:
        code, text = client.rcpt(recipient)
        out.rcpt.append((code, text.decode(errors="replace")))
    if not any(code == 250 for code, _ in out.rcpt):
        client.rset()
        return out
    code, text = client.data(message)
    out.data = (code, text.decode(errors="replace"))
    return out


def queued(root: Path) -> list[bytes]:
    queue = QueueSet(root / "queue")
    return [queue.read_sync(m.id) for m in queue.messages()]


def header_of(message: bytes) -> bytes:
    return message.split(b"\r\n\r\n", 1)[0]


def fields(message: bytes, name: bytes) -> list[bytes]:
    """The unfolded values of every `name` field of the header, in order."""
    out: list[bytes] = []
    matched = False
    for line in header_of(message).split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if matched:
                out[-1] += b" " + line.strip()
            continue
        key, colon, value = line.partition(b":")
        matched = bool(colon) and key.strip().lower() == name.lower()
        if matched:
            out.append(value.strip())
    return out


def by_subject(messages: list[bytes]) -> dict[str, bytes]:
    out = {}
    for message in messages:
        for value in fields(message, b"Subject"):
            out[value.decode()] = message
    return out


def results_without_dmarc(message: bytes) -> list[bytes]:
    """The Authentication-Results fields with the `dmarc=` entry (which the
    DMARC check adds to every outside message) left out; a field that
    carried nothing else is dropped."""
    out = []
    for value in fields(message, b"Authentication-Results"):
        parts = [p for p in value.split(b"; ") if not p.startswith(b"dmarc=")]
        if len(parts) > 1:
            out.append(b"; ".join(parts))
    return out
