"""What the session tells its driver.

Events with ``needs_reply`` wait for ``Session.reply()``; ``ok_codes`` are the
positive codes the driver may answer with (any 4xx or 5xx is always allowed).
The others are information: the session has already queued its reply.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import ClassVar, Final

from quailmail.core.reply import Reply
from quailmail.smtp.paths import Path

Params = dict[str, str | None]


class Signal(enum.Enum):
    NEED_DATA = "need data"
    """Feed ``Session.receive()`` (after writing ``data_to_send()``)."""
    PAUSED = "paused"
    """STARTTLS accepted: hand the socket to TLS, then ``tls_started()``."""


NEED_DATA: Final = Signal.NEED_DATA
PAUSED: Final = Signal.PAUSED


@dataclass(frozen=True, slots=True)
class _Event:
    needs_reply: ClassVar[bool] = True
    ok_codes: ClassVar[frozenset[int]] = frozenset()


@dataclass(frozen=True, slots=True)
class Connected(_Event):
    """Decide on the greeting: 220 (after GREETDELAY, if any), or 554 (the
    session then answers 503 to all but QUIT, RFC 5321 §3.1), or 421."""

    ok_codes: ClassVar[frozenset[int]] = frozenset({220})


@dataclass(frozen=True, slots=True)
class Helo(_Event):
    """HELO or EHLO.  Answer 250 with the first line's text; the session adds
    the EHLO keywords and drops any enhanced code (RFC 2034 §3)."""

    name: str
    extended: bool
    ok_codes: ClassVar[frozenset[int]] = frozenset({250})


@dataclass(frozen=True, slots=True)
class MailFrom(_Event):
    """Parameters are upper-cased keys; values as sent (None when absent).
    SIZE, BODY, SMTPUTF8 and AUTH have been checked already."""

    path: Path
    params: Params
    ok_codes: ClassVar[frozenset[int]] = frozenset({250})


@dataclass(frozen=True, slots=True)
class RcptTo(_Event):
    path: Path
    params: Params
    ok_codes: ClassVar[frozenset[int]] = frozenset({250, 251, 252})


@dataclass(frozen=True, slots=True)
class DataReady(_Event):
    """DATA with at least one accepted recipient: 354 to read the message."""

    ok_codes: ClassVar[frozenset[int]] = frozenset({354})


@dataclass(frozen=True, slots=True)
class MessageReceived(_Event):
    """The whole message, dot-unstuffed, CRLF line ends, without the final
    ``.``: blocks in order, not joined.  Reply 250 only once it is durable."""

    chunks: list[bytes] = field(compare=False)
    size: int
    bdat: bool = False
    ok_codes: ClassVar[frozenset[int]] = frozenset({250})


@dataclass(frozen=True, slots=True)
class AuthRequest(_Event):
    """Credentials from AUTH PLAIN or LOGIN, decoded.  235, or 535 5.7.8,
    or 454 4.7.0 when the checker is unavailable (RFC 4954 §6)."""

    mechanism: str
    username: str
    password: str = field(repr=False)
    authzid: str = ""
    ok_codes: ClassVar[frozenset[int]] = frozenset({235})


@dataclass(frozen=True, slots=True)
class StartTls(_Event):
    """220 to go ahead (then write ``data_to_send()``, hand the socket to TLS
    and call ``tls_started()``), or 454 4.7.0."""

    ok_codes: ClassVar[frozenset[int]] = frozenset({220})


@dataclass(frozen=True, slots=True)
class Reset(_Event):
    """RSET: the transaction was dropped (the session answered 250)."""

    needs_reply: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class MessageRefused(_Event):
    """The session refused a message it read to the end (bare CR/LF, NUL,
    size); ``reply`` is what it answered.  For the log."""

    reply: Reply
    needs_reply: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class Quit(_Event):
    """QUIT; the session answered 221.  ``ConnectionClosed`` follows."""

    needs_reply: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class ConnectionClosed(_Event):
    """Write ``data_to_send()`` and close.  Returned from then on."""

    reason: str
    needs_reply: ClassVar[bool] = False


Event = (
    Connected
    | Helo
    | MailFrom
    | RcptTo
    | DataReady
    | MessageReceived
    | AuthRequest
    | StartTls
    | Reset
    | MessageRefused
    | Quit
    | ConnectionClosed
)
