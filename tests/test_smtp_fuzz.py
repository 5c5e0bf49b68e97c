"""Hostile input against the SMTP session (hypothesis): no exception escapes,
every command gets exactly one final reply, every stream ends in a reply or a
close, and the message comes out the same whatever the read boundaries."""

from __future__ import annotations

import random
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from quailmail.core.reply import Reply
from quailmail.smtp import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Event,
    MessageReceived,
    PathError,
    Session,
    SessionConfig,
    Signal,
    parse_path,
)
from quailmail.smtp.data import DotReader

CONFIG = SessionConfig(
    "mx.example.org",
    max_message_size=2000,
    max_errors=25,
    tls_available=True,
    auth_mechanisms=("PLAIN", "LOGIN"),
    auth_requires_tls=False,
    max_recipients=3,
)
REPLY_LINE = re.compile(rb"[2-5]\d\d[ -][^\r\n]*\r\n")

PIECES = [
    b"EHLO x\r\n",
    b"HELO x\r\n",
    b"MAIL FROM:<a@b.example>\r\n",
    b"MAIL FROM:<> BODY=BINARYMIME\r\n",
    b"RCPT TO:<d@e.example>\r\n",
    b"RCPT TO:<@r.example:d@[IPv6:::1]>\r\n",
    b"DATA\r\n",
    b"\r\n.\r\n",
    b".\r\n",
    b"..\r\n",
    b"BDAT 5\r\n",
    b"BDAT 3 LAST\r\n",
    b"BDAT 0 LAST\r\n",
    b"BDAT 99999999999\r\n",
    b"STARTTLS\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH LOGIN\r\n",
    b"AUTH PLAIN AGpvZQBzZWNyZXQ=\r\n",
    b"*\r\n",
    b"=\r\n",
    b"QUIT\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"\n",
    b"\r",
    b".",
    b"\x00",
    b"x" * 1100,
]
stream_parts = st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(PIECES)), max_size=40)


def random_reply(rng: random.Random, event: Event) -> Reply:
    code = rng.choice([*sorted(event.ok_codes), 421, 450, 451, 550, 554])
    enhanced = None if code in (220, 354) else f"{str(code)[0]}.0.0"
    return Reply(code, enhanced, rng.choice(["ok", "", "two\nlines"]))


def drive(s: Session, rng: random.Random, *, close_ok: bool = True) -> Event | object:
    """Answer every event; returns the signal or event the session stopped at."""
    while True:
        event = s.next_event()
        if event is NEED_DATA:
            return event
        if event is PAUSED:
            s.tls_started("TLSv1.3", "TLS_AES_128_GCM_SHA256")
            continue
        assert not isinstance(event, Signal)
        if isinstance(event, ConnectionClosed):
            return event
        if event.needs_reply:
            reply = random_reply(rng, event)
            while not close_ok and reply.code == 421:
                reply = random_reply(rng, event)
            s.reply(reply)


def split(data: bytes, rng: random.Random) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        n = rng.choice([1, 2, 3, 7, 64, 4096])
        out.append(data[i : i + n])
        i += n
    return out


@settings(max_examples=300, deadline=None)
@given(parts=stream_parts, seed=st.integers(0, 2**32), eof=st.booleans())
def test_arbitrary_streams_end_in_a_reply_or_close(
    parts: list[bytes], seed: int, eof: bool
) -> None:
    rng = random.Random(seed)
    s = Session(CONFIG)
    out = bytearray()
    drive(s, rng)
    for block in split(b"".join(parts), rng):
        s.receive(block)
        last = drive(s, rng)
        out += s.data_to_send()
        assert last is NEED_DATA or isinstance(last, ConnectionClosed)
    if eof:
        s.receive(b"")
    else:
        s.timed_out()
    assert isinstance(drive(s, rng), ConnectionClosed) and s.closed
    out += s.data_to_send()
    # every byte written is a well-formed reply line
    assert REPLY_LINE.sub(b"", bytes(out)) == b""
    assert out.endswith(b"\r\n")
    s.receive(b"more after close")
    assert isinstance(s.next_event(), ConnectionClosed) and s.data_to_send() == b""


SIMPLE = st.sampled_from(
    [
        "EHLO x",
        "HELO x",
        "MAIL FROM:<a@b.example>",
        "MAIL FROM:<a@b.example> SIZE=5000",
        "mail from:<>",
        "RCPT TO:<d@e.example>",
        'RCPT TO:<"q@x"@e.example> NOTIFY=NEVER',
        "RCPT TO:<jö@e.example>",
        "RSET",
        "NOOP",
        "VRFY x",
        "EXPN x",
        "HELP",
        "",
        "STARTTLS x",
    ]
)
GARBAGE = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60).filter(
    lambda t: (
        t.split(" ")[0].upper()
        not in {
            "DATA",
            "BDAT",
            "AUTH",
            "STARTTLS",
            "QUIT",
            "GET",
            "POST",
            "HEAD",
            "PUT",
            "CONNECT",
            "OPTIONS",
        }
    )
)


@settings(max_examples=200, deadline=None)
@given(commands=st.lists(st.one_of(SIMPLE, GARBAGE), max_size=30), seed=st.integers(0, 2**32))
def test_every_command_gets_exactly_one_reply(commands: list[str], seed: int) -> None:
    rng = random.Random(seed)
    s = Session(SessionConfig("mx.example.org", max_errors=10**6))
    drive(s, rng, close_ok=False)
    s.data_to_send()
    for block in split("".join(c + "\r\n" for c in commands).encode(), rng):
        s.receive(block)
        drive(s, rng, close_ok=False)
    finals = [line for line in s.data_to_send().split(b"\r\n") if line[3:4] == b" "]
    assert len(finals) == len(commands)


lines = st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")))


def stuff(message_lines: list[bytes]) -> bytes:
    return b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in message_lines)


@settings(max_examples=300, deadline=None)
@given(message=lines, seed=st.integers(0, 2**32))
def test_dot_reader_is_independent_of_read_boundaries(message: list[bytes], seed: int) -> None:
    rng = random.Random(seed)
    wire = stuff(message) + b".\r\nNEXT"
    reader = DotReader(refuse_nul=False)
    used = -1
    consumed = 0
    for block in split(wire, rng):
        used = reader.feed(block)
        if used >= 0:
            consumed += used
            break
        consumed += len(block)
    assert used >= 0 and wire[consumed:] == b"NEXT"
    assert b"".join(reader.chunks) == b"".join(ln + b"\r\n" for ln in message)
    assert reader.size == sum(len(ln) + 2 for ln in message) and not reader.refused


@settings(max_examples=150, deadline=None)
@given(message=lines, seed=st.integers(0, 2**32), binary=st.booleans())
def test_message_through_session_in_random_splits(
    message: list[bytes], seed: int, binary: bool
) -> None:
    rng = random.Random(seed)
    body = b"".join(ln + b"\r\n" for ln in message)
    head = b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<d@e.example>\r\n"
    if binary:  # the same message in random BDAT chunks
        wire = head
        chunks = split(body, rng) or [b""]
        for i, chunk in enumerate(chunks):
            last = b" LAST" if i == len(chunks) - 1 else b""
            wire += b"BDAT %d%s\r\n" % (len(chunk), last) + chunk
    else:
        wire = head + b"DATA\r\n" + stuff(message) + b".\r\n"
    s = Session(SessionConfig("mx.example.org", refuse_nul=False))
    got: list[bytes] = []
    for block in [b"", *split(wire, rng)]:
        if block:
            s.receive(block)
        while True:
            event = s.next_event()
            if event is NEED_DATA:
                break
            assert not isinstance(event, Signal | ConnectionClosed)
            if isinstance(event, MessageReceived):
                got.append(b"".join(event.chunks))
            if event.needs_reply:
                s.reply(
                    Reply(
                        min(event.ok_codes), None if min(event.ok_codes) in (220, 354) else "2.0.0"
                    )
                )
    assert got == [body]


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=80), null_ok=st.booleans())
def test_path_parser_raises_only_path_error(text: str, null_ok: bool) -> None:
    try:
        path, rest = parse_path("<" + text, null_ok=null_ok, postmaster_ok=not null_ok)
    except PathError:
        return
    assert ("<" + text).endswith(rest)
    str(path)
