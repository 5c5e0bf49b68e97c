"""Helpers for the connection checks' end-to-end tests: rules, clients from
chosen loopback addresses or behind a PROXY header, and their replies."""

from __future__ import annotations

import re
import socket
from pathlib import Path

from quailmail.config.tcprules import compile_rules
from quailmail.net.proxy import v1_header, v2_header

_FINAL = re.compile(r"^(\d{3}) (.*)$", re.MULTILINE)

# A client's session up to a recipient, then QUIT.
SESSION = (
    b"EHLO client.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<postmaster@mx.test>\r\nQUIT\r\n"
)


def write_rules(root: Path, text: str, name: str = "tcp.smtp") -> None:
    """`control/NAME` and its cdb, as `quail tcprules` writes them."""
    control = root / "control"
    (control / name).write_text(text)
    (control / f"{name}.cdb").write_bytes(compile_rules(text))


def talk(
    port: int,
    script: bytes = SESSION,
    *,
    host: str = "127.0.0.1",
    source: str | None = None,
    proxied: str | None = None,
) -> str:
    """Send `script` (after a PROXY header naming `proxied` as the client,
    when given) from `source`, and read every reply until the server closes."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    chunks = []
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(15)
        if source is not None:
            sock.bind((source, 0))
        sock.connect((host, port))
        if proxied is not None:
            # v2 carries IPv6 clients (over any connection), v1 IPv4 ones.
            if ":" in proxied:
                script = v2_header(proxied, 40000, "::1", port) + script
            else:
                script = v1_header(proxied, 40000, "127.0.0.1", port) + script
        sock.sendall(script)
        sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def finals(transcript: str) -> list[str]:
    """The final line of every reply (`250 2.1.0 sender ok`)."""
    return [f"{m.group(1)} {m.group(2)}" for m in _FINAL.finditer(transcript.replace("\r", ""))]
