"""The server side of SASL PLAIN (RFC 4616) and LOGIN inside AUTH (RFC 4954).

The session runs the exchange and the base64; the driver only sees the
decoded credentials (`AuthRequest`) and answers 235 or 535.
"""

from __future__ import annotations

import base64
import binascii

from quailmail.core.reply import Reply
from quailmail.smtp import replies
from quailmail.smtp.events import AuthRequest

MECHANISMS = ("PLAIN", "LOGIN")
_USERNAME = Reply(334, None, "VXNlcm5hbWU6")  # "Username:", as every LOGIN server says
_PASSWORD = Reply(334, None, "UGFzc3dvcmQ6")  # "Password:"
_EMPTY = Reply(334, None, "")  # PLAIN without initial response (RFC 4954 §4)


def auth_refusal(
    words: list[str],
    mechanisms: list[str],
    *,
    extended: bool,
    authenticated: bool,
    in_transaction: bool,
) -> Reply | None:
    """Why ``AUTH <words>`` cannot start now (RFC 4954 §4), or None."""
    if not mechanisms:
        return replies.AUTH_UNAVAILABLE
    if not extended:
        return replies.AUTH_NEEDS_EHLO
    if authenticated:
        return replies.AUTH_ALREADY
    if in_transaction:
        return replies.AUTH_IN_TRANSACTION
    if not 1 <= len(words) <= 2:
        return replies.AUTH_SYNTAX
    if words[0].upper() not in mechanisms:
        return replies.AUTH_MECHANISM
    return None


def _decode(text: str) -> bytes | Reply:
    if text == "*":
        return replies.AUTH_CANCELLED
    if text == "=":  # an empty initial response (RFC 4954 §4)
        return b""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return replies.AUTH_BAD_BASE64


def _utf8(raw: bytes) -> str | Reply:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return replies.AUTH_BAD_BASE64


class SaslExchange:
    """One AUTH exchange.  ``start`` and ``respond`` return the next 334
    challenge, a refusal (which ends the exchange), or the credentials."""

    __slots__ = ("_username", "mechanism")

    def __init__(self, mechanism: str) -> None:
        self.mechanism = mechanism
        self._username: str | None = None

    def start(self, initial: str | None) -> Reply | AuthRequest:
        if initial is None:
            return _EMPTY if self.mechanism == "PLAIN" else _USERNAME
        return self.respond(initial, initial=True)

    def respond(self, text: str, *, initial: bool = False) -> Reply | AuthRequest:
        if text == "=" and not initial:
            text = ""  # "=" is only the empty *initial* response; later "" is empty
        raw = _decode(text)
        if isinstance(raw, Reply):
            return raw
        if self.mechanism == "PLAIN":
            # message = [authzid] NUL authcid NUL passwd (RFC 4616 §2)
            parts = raw.split(b"\x00")
            if len(parts) != 3 or not parts[1]:
                return replies.AUTH_BAD_BASE64
            fields = [_utf8(p) for p in parts]
            for f in fields:
                if isinstance(f, Reply):
                    return f
            authzid, user, password = (str(f) for f in fields)
            return AuthRequest("PLAIN", user, password, authzid)
        value = _utf8(raw)
        if isinstance(value, Reply):
            return value
        if self._username is None:
            self._username = value
            return _PASSWORD
        return AuthRequest("LOGIN", self._username, value)
