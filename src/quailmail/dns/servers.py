"""Which DNS servers to ask: `--dns HOST[:PORT]` and `control/dnsservers`.

Servers are IP literals, never host names: looking up the name of the DNS
server would need a DNS server.  An IPv6 address takes a port only inside
brackets (`[::1]:5353`), as in URLs (RFC 3986 §3.2.2), because `::1:53` is
itself a valid IPv6 address.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import NamedTuple

DNS_PORT = 53  # RFC 1035 §4.2


class DnsServer(NamedTuple):
    """One server to query: an IP literal and a port (53 unless told)."""

    host: str
    port: int = DNS_PORT

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def parse_server(text: str) -> DnsServer:
    """Parse `1.2.3.4`, `1.2.3.4:5353`, `::1`, `[::1]` or `[::1]:5353`.

    Raises ValueError with a message fit for one line on stderr.
    """
    spec = text.strip()
    if not spec:
        raise ValueError("empty DNS server address")
    port = DNS_PORT
    if spec.startswith("["):
        close = spec.find("]")
        if close < 0:
            raise ValueError(f"DNS server {text!r}: missing ']'")
        host, rest = spec[1:close], spec[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"DNS server {text!r}: expected ':PORT' after ']'")
            port = _parse_port(text, rest[1:])
        if _ip_version(text, host) != 6:
            raise ValueError(f"DNS server {text!r}: brackets are only for IPv6 addresses")
        return DnsServer(host, port)
    if spec.count(":") == 1:
        host, port_text = spec.split(":")
        port = _parse_port(text, port_text)
        if _ip_version(text, host) != 4:
            raise ValueError(f"DNS server {text!r}: not an IPv4 address")
        return DnsServer(host, port)
    # No colon (IPv4) or several (IPv6, port only in brackets).
    _ip_version(text, spec)
    return DnsServer(spec, port)


def _ip_version(text: str, host: str) -> int:
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        raise ValueError(
            f"DNS server {text!r}: {host!r} is not an IP address (use HOST[:PORT] or [IPV6]:PORT)"
        ) from None


def _parse_port(text: str, port_text: str) -> int:
    if not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"DNS server {text!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"DNS server {text!r}: port {port} is out of range 1-65535")
    return port


def servers_from_control(root: Path) -> list[DnsServer] | None:
    """Read `ROOT/control/dnsservers`: one HOST[:PORT] a line.

    `#` starts a comment line; blank lines are ignored.  Returns None when the
    file is absent, so the caller falls back to the system's resolv.conf; an
    existing file without servers gives [] (qmail reads an empty control file
    as "use the default", and so does `make_resolver`).
    """
    path = root / "control" / "dnsservers"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        # One error type for "the configuration is unusable": the CLI prints it.
        raise ValueError(f"{path}: cannot read: {error}") from None
    servers = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            servers.append(parse_server(line))
        except ValueError as error:
            raise ValueError(f"{path} line {number}: {error}") from None
    return servers
