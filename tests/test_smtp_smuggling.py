"""SMTP smuggling (SEC Consult, December 2023): every published end-of-data
variant is data, never an end; a message carrying one is refused once the real
CRLF.CRLF arrives, and nothing after the fake end is read as a command.

The vectors are SEC Consult's and those of the public checkers built on their
work (e.g. suuhm/smtp_smuggling_checker.py's eleven strings)."""

from __future__ import annotations

import dataclasses
import random

import pytest

from quailmail.smtp import DataReady, MailFrom, MessageReceived, MessageRefused, RcptTo

from smtpdriver import CONFIG, Driver, transaction

SMUGGLED = (
    b"MAIL FROM:<admin@bank.example>\r\n"
    b"RCPT TO:<victim@example.org>\r\n"
    b"DATA\r\n"
    b"From: admin@bank.example\r\n\r\nsmuggled\r\n"
)
HEAD = b"From: attacker@example.net\r\n\r\nhello"

# Each contains a CR or LF outside a CRLF pair: refused as bare line ends.
BARE_VECTORS = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r\n.\n",
    b"\r.\n",
    b"\n\n.\r\n",
    b"\r\n\x00.\r",
    b"\r\n\x00.\n",
    b"\r\r\n.\r\r\n",
    b"\r\n.\r\r\n",
]
# No bare CR/LF, but a NUL next to the dot: an end of data for a server that
# drops NULs.  Refused with refuse_nul (the default).
NUL_VECTORS = [b"\r\n\x00.\r\n", b"\r\n.\x00\r\n"]


def stream(vector: bytes) -> bytes:
    return transaction(HEAD + vector + SMUGGLED + b".\r\n") + b"NOOP\r\n"


def feed(d: Driver, data: bytes, how: str, seed: int = 0) -> list[str]:
    if how == "whole":
        return d.codes(data)
    rng = random.Random(seed)
    codes: list[str] = []
    i = 0
    while i < len(data):
        n = 1 if how == "bytes" else rng.randint(1, 9)
        codes += d.codes(data[i : i + n])
        i += n
    return codes


def assert_nothing_smuggled(d: Driver, *, data: int = 1) -> None:
    assert len(d.of(MailFrom)) == 1
    assert len(d.of(RcptTo)) == 1
    assert len(d.of(DataReady)) == data


@pytest.mark.parametrize("how", ["whole", "bytes", "random"])
@pytest.mark.parametrize("vector", BARE_VECTORS, ids=repr)
def test_bare_line_end_vectors_are_refused(vector: bytes, how: str) -> None:
    d = Driver()
    codes = feed(d, stream(vector), how, seed=len(vector))
    assert codes == ["250", "250 2.1.0", "250 2.1.5", "354", "550 5.6.0", "250 2.0.0"]
    assert_nothing_smuggled(d)
    assert not d.of(MessageReceived)
    refused = d.of(MessageRefused)
    assert len(refused) == 1 and isinstance(refused[0], MessageRefused)
    assert refused[0].reply.text == "message refused: bare CR or LF received"


@pytest.mark.parametrize("how", ["whole", "bytes", "random"])
@pytest.mark.parametrize("vector", NUL_VECTORS, ids=repr)
def test_nul_vectors_are_refused(vector: bytes, how: str) -> None:
    d = Driver()
    codes = feed(d, stream(vector), how)
    assert codes == ["250", "250 2.1.0", "250 2.1.5", "354", "550 5.6.0", "250 2.0.0"]
    assert_nothing_smuggled(d)
    assert not d.of(MessageReceived)


@pytest.mark.parametrize("vector", NUL_VECTORS, ids=repr)
def test_nul_vectors_without_refuse_nul_stay_one_message(vector: bytes) -> None:
    d = Driver(dataclasses.replace(CONFIG, refuse_nul=False))
    codes = d.codes(stream(vector))
    assert codes == ["250", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0", "250 2.0.0"]
    assert_nothing_smuggled(d)
    [message] = d.messages()
    assert SMUGGLED in message


def test_lone_dot_without_line_end_is_a_dot_stuffed_line() -> None:
    """``\\r\\n.`` followed by text is a line starting with a dot: one message."""
    d = Driver()
    codes = d.codes(stream(b"\r\n."))
    assert codes == ["250", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0", "250 2.0.0"]
    assert_nothing_smuggled(d)
    assert d.messages() == [HEAD + b"\r\n" + SMUGGLED]


@pytest.mark.parametrize("vector", BARE_VECTORS + NUL_VECTORS, ids=repr)
def test_vectors_in_bdat_are_refused(vector: bytes) -> None:
    chunk = HEAD + vector + SMUGGLED
    d = Driver()
    d.send(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<r@x.example>\r\n")
    codes = d.codes(b"BDAT %d LAST\r\n" % len(chunk) + chunk + b"NOOP\r\n")
    assert codes == ["550 5.6.0", "250 2.0.0"]
    assert_nothing_smuggled(d, data=0)


def test_session_continues_after_refusal() -> None:
    d = Driver()
    d.send(stream(b"\n.\n"))
    d.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<r@x.example>\r\nDATA\r\nclean\r\n.\r\n")
    assert d.messages() == [b"clean\r\n"]


def test_unterminated_smuggling_never_ends_the_message() -> None:
    """Without the real CRLF.CRLF the session keeps reading message data."""
    d = Driver()
    codes = d.codes(transaction(HEAD + b"\n.\n" + SMUGGLED + b"\r.\r\nQUIT\r\n"))
    assert codes == ["250", "250 2.1.0", "250 2.1.5", "354"]
    assert_nothing_smuggled(d)
    d.send(b"")
    assert d.closed() and not d.of(MessageReceived) and not d.of(MessageRefused)
