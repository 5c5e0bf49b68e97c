"""The SMTP server protocol as a sans-I/O state machine (see `session`)."""

from quailmail.core.reply import Reply
from quailmail.smtp.config import SessionConfig
from quailmail.smtp.events import (
    NEED_DATA,
    PAUSED,
    AuthRequest,
    Connected,
    ConnectionClosed,
    DataReady,
    Event,
    Helo,
    MailFrom,
    MessageReceived,
    MessageRefused,
    Quit,
    RcptTo,
    Reset,
    Signal,
    StartTls,
)
from quailmail.smtp.paths import Path, PathError, parse_path
from quailmail.smtp.received import address_literal, received_header, with_protocol
from quailmail.smtp.session import RCPT_LIMIT_REACHED, ProtocolError, Session, State

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "RCPT_LIMIT_REACHED",
    "AuthRequest",
    "Connected",
    "ConnectionClosed",
    "DataReady",
    "Event",
    "Helo",
    "MailFrom",
    "MessageReceived",
    "MessageRefused",
    "Path",
    "PathError",
    "ProtocolError",
    "Quit",
    "RcptTo",
    "Reply",
    "Reset",
    "Session",
    "SessionConfig",
    "Signal",
    "StartTls",
    "State",
    "address_literal",
    "parse_path",
    "received_header",
    "with_protocol",
]
