"""A fake driver for the SMTP session: feeds bytes, answers events as a
simple policy would, and records everything.  No sockets."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable

from quailmail.core.reply import Reply
from quailmail.smtp import (
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
    RcptTo,
    Session,
    SessionConfig,
    Signal,
    StartTls,
)

_FINAL = re.compile(r"(\d{3}) (?:([245]\.\d{1,3}\.\d{1,3})\b)?")
HOST = "mx.example.org"
CONFIG = SessionConfig(HOST, max_message_size=100_000, max_errors=10)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def answer(event: Event) -> Reply | None:
    """A plain policy: accepts everything but recipients named ``bad…``
    and passwords other than ``secret``."""
    if isinstance(event, Connected):
        return Reply(220, None, f"{HOST} ESMTP")
    if isinstance(event, Helo):
        return Reply(250, None, HOST)
    if isinstance(event, MailFrom):
        return Reply(250, "2.1.0", "sender ok")
    if isinstance(event, RcptTo):
        if event.path.local.startswith("bad"):
            return Reply(550, "5.1.1", "no such user")
        return Reply(250, "2.1.5", "recipient ok")
    if isinstance(event, DataReady):
        return Reply(354, None, "go ahead")
    if isinstance(event, MessageReceived):
        return Reply(250, "2.0.0", "queued")
    if isinstance(event, AuthRequest):
        if event.password == "secret":
            return Reply(235, "2.7.0", "ok")
        return Reply(535, "5.7.8", "bad credentials")
    if isinstance(event, StartTls):
        return Reply(220, "2.0.0", "go ahead")
    return None


class Driver:
    def __init__(
        self,
        config: SessionConfig = CONFIG,
        policy: Callable[[Event], Reply | None] = answer,
        *,
        greet: bool = True,
    ) -> None:
        self.session = Session(config)
        self.policy = policy
        self.events: list[Event] = []
        self.paused = False
        if greet:
            self.pump()
            self.output()

    def pump(self) -> None:
        s = self.session
        while True:
            event = s.next_event()
            if event is NEED_DATA:
                return
            if event is PAUSED:
                self.paused = True
                return
            assert not isinstance(event, Signal)
            self.events.append(event)
            if isinstance(event, ConnectionClosed):
                return
            if event.needs_reply:
                reply = self.policy(event)
                assert reply is not None
                s.reply(reply)

    def output(self) -> str:
        return self.session.data_to_send().decode()

    def send(self, data: bytes | str) -> str:
        if isinstance(data, str):
            data = data.encode()
        self.session.receive(data)
        self.pump()
        return self.output()

    def codes(self, data: bytes | str) -> list[str]:
        """The final lines' codes (with enhanced code) of the replies to ``data``."""
        finals = [m for line in self.send(data).splitlines() if (m := _FINAL.match(line))]
        return [" ".join(filter(None, m.groups())) for m in finals]

    def of(self, kind: type) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]

    def messages(self) -> list[bytes]:
        return [b"".join(e.chunks) for e in self.events if isinstance(e, MessageReceived)]

    def closed(self) -> bool:
        return bool(self.events) and isinstance(self.events[-1], ConnectionClosed)


def transaction(body: bytes, *, rcpt: str = "rcpt@example.org") -> bytes:
    """EHLO, MAIL, RCPT, DATA and the dot-stuffed-by-the-caller ``body``."""
    return (
        b"EHLO client.example.net\r\nMAIL FROM:<sender@example.net>\r\n"
        + f"RCPT TO:<{rcpt}>\r\n".encode()
        + b"DATA\r\n"
        + body
    )
