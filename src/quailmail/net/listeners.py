"""Listener definitions: `control/listeners`, one listener a line.

    # name        address     port  mode        rules (in control/)
    smtp          127.0.0.1   2525  smtp        tcp.smtp.cdb
    smtp          ::1         2525  smtp        tcp.smtp.cdb
    smtps         127.0.0.1   2465  smtps
    submission    ::1         2587  submission

Modes, as tcpserver and sslserver ran qmail-smtpd (../shared/seeds/000_*):
`smtp` is plain with STARTTLS offered; `smtps` is TLS from the first byte
(implicit TLS, RFC 8314); `submission` offers STARTTLS and requires AUTH to
relay.  The rules file defaults to tcp.smtp.cdb (tcp.submission.cdb for
submission) and is read on every connection: a name in control/, or an
absolute path (QmailToaster's `/etc/tcprules.d/tcp.smtp.cdb`, which its
`qmailctl cdb` rebuilds in place).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

MODES = ("smtp", "smtps", "submission")
DEFAULT_RULES = {
    "smtp": "tcp.smtp.cdb",
    "smtps": "tcp.smtp.cdb",
    "submission": "tcp.submission.cdb",
}


class ListenerError(ValueError):
    """A bad line in control/listeners; the text names it."""


@dataclass(frozen=True, slots=True)
class Listener:
    name: str
    address: str
    port: int
    mode: str
    rules: str  # file name in control/

    @property
    def implicit_tls(self) -> bool:
        return self.mode == "smtps"

    @property
    def submission(self) -> bool:
        return self.mode == "submission"

    @property
    def ipv6(self) -> bool:
        return ":" in self.address

    def __str__(self) -> str:
        host = f"[{self.address}]" if self.ipv6 else self.address
        return f"{self.name} {host}:{self.port} ({self.mode})"


def parse_listeners(text: str) -> list[Listener]:
    listeners: list[Listener] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) not in (4, 5):
            raise ListenerError(f"listeners line {number}: want NAME ADDRESS PORT MODE [RULES]")
        name, address, port_text, mode = fields[:4]
        try:
            address = str(ipaddress.ip_address(address.strip("[]")))
        except ValueError:
            raise ListenerError(f"listeners line {number}: {address!r} is not an address") from None
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ListenerError(f"listeners line {number}: bad port {port_text!r}")
        if mode not in MODES:
            raise ListenerError(f"listeners line {number}: mode is one of {', '.join(MODES)}")
        rules = fields[4] if len(fields) == 5 else DEFAULT_RULES[mode]
        if "/" in rules and not rules.startswith("/"):
            raise ListenerError(
                f"listeners line {number}: rules is a file name in control/ or an absolute path"
            )
        listeners.append(Listener(name, address, int(port_text), mode, rules))
    return listeners


def read_listeners(root: Path) -> list[Listener]:
    path = root / "control" / "listeners"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ListenerError(f"cannot read {path}: {exc.strerror or exc}") from None
    listeners = parse_listeners(text)
    if not listeners:
        raise ListenerError(f"{path} defines no listener")
    return listeners


def default_listeners(smtp: int, smtps: int, submission: int) -> str:
    """The control/listeners `quail init` writes: every port on 127.0.0.1 and ::1."""
    lines = ["# name       address    port   mode        [rules file in control/]"]
    for name, port in (("smtp", smtp), ("smtps", smtps), ("submission", submission)):
        for address in ("127.0.0.1", "::1"):
            lines.append(f"{name:<12} {address:<10} {port:<6} {name}")
    return "\n".join(lines) + "\n"
