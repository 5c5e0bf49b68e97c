"""Reverse- and forward-paths of MAIL and RCPT (RFC 5321 §4.1.2, RFC 6531 §3.3).

The parser exposes what was written, faithfully, so that the relay decision
(made by policy, not here) sees every open-relay trick for what it is: the
percent hack and ``!`` paths stay in ``local`` (they are atext), a quoted local
part is unquoted into ``local`` with ``quoted`` set (``"a@b"@c`` has local
``a@b``), a source route is kept in ``route`` (§3.6.1 says to ignore it; policy
decides), an address literal is recognized as such (``is_ip_literal``, ``ip``),
and the domain keeps its case (``domain``) beside a normalized form
(``normalized_domain``) for comparisons.

Non-ASCII is part of the syntax only under SMTPUTF8 (RFC 6531 §3.3); the
parser accepts it and ``Path.utf8`` tells the caller to answer 553 5.6.7 when
the MAIL command carried no SMTPUTF8 parameter.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# RFC 5321 §4.1.2 with RFC 6531 §3.3's UTF8-non-ascii added to atext, qtext
# and sub-domains.  Labels are matched loosely (1*(let-dig / "-")) and their
# ends checked in Python: a linear regex on hostile input.
_NONASCII = "\u0080-\U0010ffff"
_LABEL = rf"[A-Za-z0-9{_NONASCII}-]+"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*"
_ATOM = rf"[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~{_NONASCII}-]+"
_DOT_STRING = rf"{_ATOM}(?:\.{_ATOM})*"
# qtextSMTP = %d32-33 / %d35-91 / %d93-126; quoted-pairSMTP = "\" %d32-126.
_QUOTED = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_NONASCII}]|\\[\x20-\x7e])*"'
_LITERAL = r"\[[\x21-\x5a\x5e-\x7e]*\]"
_PATH = re.compile(
    rf"<(?:(?P<route>@{_DOMAIN}(?:,@{_DOMAIN})*):)?"
    rf"(?P<local>{_DOT_STRING}|{_QUOTED})@(?P<domain>{_DOMAIN}|{_LITERAL})>"
)
_DOT_STRING_FULL = re.compile(rf"{_DOT_STRING}\Z")
_QUOTED_PAIR = re.compile(r"\\(.)")


class PathError(ValueError):
    """A path that is not RFC 5321 syntax; ``str()`` is the reason."""


@dataclass(frozen=True, slots=True)
class Path:
    """A parsed path.  ``str(path)`` is the canonical mailbox: ``""`` for the
    null path, the local part re-quoted only when it must be, no route."""

    local: str
    domain: str
    route: tuple[str, ...] = ()
    quoted: bool = False
    ip: IPAddress | None = None

    @property
    def null(self) -> bool:
        return not self.local and not self.domain

    @property
    def is_ip_literal(self) -> bool:
        return self.domain.startswith("[")

    @property
    def utf8(self) -> bool:
        return not (self.local.isascii() and self.domain.isascii())

    @property
    def normalized_domain(self) -> str:
        """The domain for comparisons: lower case; an address literal in
        canonical form (``[IPv6:2001:db8::1]``, compressed, lower case)."""
        if self.ip is not None:
            if self.ip.version == 6:
                return f"[IPv6:{self.ip.compressed}]"
            return f"[{self.ip}]"
        return self.domain.lower()

    @property
    def looks_routed(self) -> bool:
        """A hint for relay policy: a source route, or a local part carrying a
        routing character (``%`` hack, ``!`` path, ``@`` inside quotes)."""
        return bool(self.route) or any(c in self.local for c in "%!@")

    def __str__(self) -> str:
        if self.null:
            return ""
        local = self.local
        if not _DOT_STRING_FULL.match(local):
            local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{local}@{self.domain}" if self.domain else local


NULL_PATH = Path("", "")


def _check_domain(domain: str) -> None:
    if len(domain) > 255:  # RFC 5321 §4.5.3.1.2
        raise PathError("domain longer than 255 octets")
    for label in domain.split("."):
        if label[0] == "-" or label[-1] == "-":
            raise PathError(f"bad domain label {label!r}")
        if len(label.encode()) > 63:  # RFC 1035 §2.3.4
            raise PathError("domain label longer than 63 octets")


def _literal(text: str) -> IPAddress:
    """``[192.0.2.1]`` or ``[IPv6:2001:db8::1]`` (RFC 5321 §4.1.3).  General
    address literals (``[tag:content]``) are refused: no other tag is
    registered, so nothing could deliver to one."""
    inner = text[1:-1]
    try:
        if inner[:5].lower() == "ipv6:":
            return ipaddress.IPv6Address(inner[5:])
        # ipaddress refuses leading zeros, the octal ambiguity of "010".
        return ipaddress.IPv4Address(inner)
    except ValueError:
        raise PathError(f"bad address literal {text}") from None


def parse_path(text: str, *, null_ok: bool, postmaster_ok: bool) -> tuple[Path, str]:
    """Parse the ``<…>`` at the start of ``text``; return the path and what
    follows it (the parameters, still unparsed).  ``null_ok`` for MAIL
    (``<>``), ``postmaster_ok`` for RCPT (``<Postmaster>`` without a domain,
    RFC 5321 §4.1.1.3)."""
    if text.startswith("<>"):
        if not null_ok:
            raise PathError("null path not allowed here")
        return NULL_PATH, text[2:]
    if postmaster_ok and text[:12].lower() == "<postmaster>":
        return Path(text[1:11], ""), text[12:]
    m = _PATH.match(text)
    if m is None:
        raise PathError("syntax error in path")
    route: tuple[str, ...] = ()
    if m["route"]:
        route = tuple(r[1:] for r in m["route"].split(","))
        for r in route:
            _check_domain(r)
    local = m["local"]
    quoted = local.startswith('"')
    if quoted:
        local = _QUOTED_PAIR.sub(r"\1", local[1:-1])
    domain = m["domain"]
    ip: IPAddress | None = None
    if domain.startswith("["):
        ip = _literal(domain)
    else:
        _check_domain(domain)
    return Path(local, domain, route, quoted, ip), text[m.end() :]
