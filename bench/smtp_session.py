"""The SMTP protocol engine's ceiling: messages per second through
`quailmail.smtp.Session` alone — no sockets, no policy, no queue.

    .venv/bin/python bench/smtp_session.py

Cases: a whole connection (greeting, EHLO, MAIL, RCPT, DATA with a 4 KiB
message, QUIT) pipelined in one read, one session per message; the same
transaction repeated in one session; the 4 KiB message sent with BDAT; and
DATA throughput for a 1 MiB message in 64 KiB reads.  The driver answers
every event with a constant reply.
"""

from __future__ import annotations

import time

from quailmail.core.reply import Reply
from quailmail.smtp import NEED_DATA, ConnectionClosed, Session, SessionConfig

CONFIG = SessionConfig("mx.example.org", max_message_size=10 * 2**20)
OK = {
    "Connected": Reply(220, None, "mx.example.org ESMTP"),
    "Helo": Reply(250, None, "mx.example.org"),
    "MailFrom": Reply(250, "2.1.0", "ok"),
    "RcptTo": Reply(250, "2.1.5", "ok"),
    "DataReady": Reply(354, None, "go ahead"),
    "MessageReceived": Reply(250, "2.0.0", "queued"),
}


def body(size: int) -> bytes:
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n"
    text = b"Subject: bench\r\nFrom: a@example.net\r\n\r\n" + line * (size // len(line))
    return text + b".dot-stuffed line\r\n"


BODY = body(4096)
HEAD = b"MAIL FROM:<sender@example.net>\r\nRCPT TO:<rcpt@example.org>\r\n"
CONNECTION = b"EHLO client.example.net\r\n" + HEAD + b"DATA\r\n" + BODY + b".\r\nQUIT\r\n"
BDAT = b"EHLO client.example.net\r\n" + HEAD + b"BDAT %d LAST\r\n" % len(BODY) + BODY + b"QUIT\r\n"


def run(s: Session, data: list[bytes]) -> int:
    messages = 0
    for block in data:
        s.receive(block)
        while True:
            event = s.next_event()
            if event is NEED_DATA or isinstance(event, ConnectionClosed):
                break
            name = type(event).__name__
            if name == "MessageReceived":
                messages += 1
            if event.needs_reply:
                s.reply(OK[name])
        s.data_to_send()
    return messages


def per_connection(wire: bytes, seconds: float = 2.0) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(200):
            s = Session(CONFIG)
            run(s, [wire])
            n += 1
    return n / (time.perf_counter() - start)


def one_session(seconds: float = 2.0) -> float:
    s = Session(CONFIG)
    run(s, [b"EHLO client.example.net\r\n"])
    wire = HEAD + b"DATA\r\n" + BODY + b".\r\n"
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(200):
            n += run(s, [wire])
    return n / (time.perf_counter() - start)


def big_message(size: int = 2**20, read: int = 65536, rounds: int = 30) -> float:
    wire = b"EHLO c\r\n" + HEAD + b"DATA\r\n" + body(size) + b".\r\n"
    blocks = [wire[i : i + read] for i in range(0, len(wire), read)]
    start = time.perf_counter()
    for _ in range(rounds):
        assert run(Session(CONFIG), blocks) == 1
    return size * rounds / (time.perf_counter() - start) / 2**20


def main() -> None:
    s = Session(CONFIG)
    assert run(s, [CONNECTION]) == 1
    print(
        f"4 KiB, one connection per message, pipelined:  {per_connection(CONNECTION):9,.0f} msg/s"
    )
    print(f"4 KiB, BDAT, one connection per message:       {per_connection(BDAT):9,.0f} msg/s")
    print(f"4 KiB, transactions in one session:            {one_session():9,.0f} msg/s")
    print(f"1 MiB DATA in 64 KiB reads:                    {big_message():9,.0f} MiB/s")


if __name__ == "__main__":
    main()
