"""The ``Received:`` trace field we prepend (RFC 5321 §4.4), and the ``with``
protocol keyword (RFC 3848; RFC 6531 §3.7.3 for SMTPUTF8).

Every value the client chose (HELO name, AUTH user) goes into a comment with
``(``, ``)`` and ``\\`` escaped (RFC 5322 §3.2.2) and control characters
dropped, so no client can end the field or forge a line of its own.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from email.utils import format_datetime

# A HELO argument we can write as the From-domain: a domain or an address
# literal (RFC 5321 §4.4, Extended-Domain).  Anything else goes in a comment.
_HELO_DOMAIN = re.compile(r"(?:[A-Za-z0-9\u0080-\U0010ffff-]+\.?)+\Z|\[[!-Z^-~]+\]\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ATOM_UNSAFE = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]")


def with_protocol(*, extended: bool, tls: bool, auth: bool, utf8: bool = False) -> str:
    """SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA (RFC 3848) or UTF8SMTP… (RFC 6531)."""
    if not extended:
        return "SMTP"
    base = "UTF8SMTP" if utf8 else "ESMTP"
    suffix = ("S" if tls else "") + ("A" if auth else "")
    return base + suffix


def address_literal(ip: str) -> str:
    """``[192.0.2.1]``, ``[IPv6:2001:db8::1]`` (RFC 5321 §4.1.3); an
    IPv4-mapped IPv6 address (a dual-stack socket's view of an IPv4 client)
    is written as the IPv4 address it is."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return f"[{addr.ipv4_mapped}]"
        return f"[IPv6:{addr.compressed}]"
    return f"[{addr}]"


def _comment(text: str) -> str:
    text = _CONTROL.sub("", text)
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def received_header(
    *,
    helo: str | None,
    client_ip: str,
    client_host: str | None,
    server_name: str,
    with_protocol: str,
    date: datetime,
    tls_version: str | None = None,
    tls_cipher: str | None = None,
    auth_user: str | None = None,
    queue_id: str | None = None,
    recipient: str | None = None,
) -> str:
    """The whole field, folded, ending in CRLF.  ``recipient`` only when the
    message has exactly one (RFC 5321 §7.2: ``for`` with several recipients
    would disclose the others); ``client_host`` is the verified reverse name,
    or None."""
    literal = address_literal(client_ip)
    host = _comment(client_host) if client_host else None
    tcp_info = f"{host} {literal}" if host else literal
    lines = []
    if helo and _HELO_DOMAIN.match(helo):
        lines.append(f"Received: from {helo} ({tcp_info})")
    else:
        lines.append(f"Received: from {literal} ({tcp_info})")
        lines.append(f"(HELO {_comment(helo)})" if helo else "(no HELO)")
    if tls_version:
        cipher = f" with cipher {_comment(tls_cipher)}" if tls_cipher else ""
        lines.append(f"(using {_comment(tls_version)}{cipher})")
    if auth_user is not None:
        lines.append(f"(authenticated user {_comment(auth_user)})")
    by = f"by {server_name} (quailmail) with {with_protocol}"
    if queue_id:
        by += f" id {_ATOM_UNSAFE.sub('', queue_id)}"
    lines.append(by)
    stamp = format_datetime(date)
    if recipient is not None and not _CONTROL.search(recipient):
        lines.append(f"for <{recipient}>; {stamp}")
    else:
        lines[-1] += f"; {stamp}"
    return "\r\n\t".join(lines) + "\r\n"
