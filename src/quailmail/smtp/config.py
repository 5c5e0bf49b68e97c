"""What one SMTP session is allowed to do: limits and advertised extensions.

The driver builds one per listener from the control directory and the
connection's tcprules environment; the session never reads a file.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SessionConfig:
    hostname: str
    """Our name: greeting, 221, Received (``control/me``, ``control/smtpgreeting``)."""

    max_line_length: int = 1000
    """A command line with its CRLF (RFC 5321 §4.5.3.1.4); longer → 500 5.5.6."""
    max_auth_line_length: int = 12288
    """AUTH lines and SASL responses (RFC 4954 §4)."""
    max_message_size: int = 0
    """``control/databytes``: octets after dot-unstuffing; 0 means no limit."""
    max_recipients: int = 100
    """Per message; RFC 5321 §4.5.3.1.8 asks for at least 100.  Past it: 452 4.5.3."""
    max_errors: int = 20
    """Error replies (code 5xx) per session before 421 and close."""
    timeout: float = 1200.0
    """``control/timeoutsmtpd`` (qmail's default 1200 s); the driver runs the
    timer and calls ``Session.timed_out()``."""

    pipelining: bool = True
    size: bool = True
    eightbitmime: bool = True
    smtputf8: bool = True
    enhancedstatuscodes: bool = True
    chunking: bool = True
    binarymime: bool = True
    """Advertised only with CHUNKING (RFC 3030 §3: BINARYMIME needs BDAT)."""
    tls_available: bool = False
    """A certificate is loaded: STARTTLS is offered until TLS is active."""
    auth_mechanisms: tuple[str, ...] = ()
    """Any of "PLAIN", "LOGIN"; empty: no AUTH."""
    auth_requires_tls: bool = True
    """Offer AUTH only over TLS (RFC 4954 §4, plain-text passwords)."""
    refuse_nul: bool = True
    """Refuse NUL in DATA (and in BDAT unless BODY=BINARYMIME): RFC 5321
    §4.5.2 text has none, and NUL next to a dot is one of the published
    smuggling vectors (``\\r\\n\\x00.\\r\\n``) against servers that drop NULs."""
