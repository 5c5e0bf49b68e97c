"""QMAILQUEUE's custom error (the "qmail-queue-custom-error" patch, simscan's
--enable-custom-smtp-reject): a program writes `D` or `Z` and its text on
descriptor 4 and exits 82; the client gets `554` or `451` with that text."""

from __future__ import annotations

import pytest

from quailmail.core.reply import Reply
from quailmail.queue.qmailqueue import custom_reply, reply_for_exit

SPAM = b"DYour email is considered spam (12.3 hits)"
TEMPORARY = b"ZVirus scanner unavailable, try again later"


# -- the answer to exit 82 (pure) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reply"),
    [
        (SPAM, Reply(554, "5.3.0", "Your email is considered spam (12.3 hits)")),
        (TEMPORARY, Reply(451, "4.3.0", "Virus scanner unavailable, try again later")),
        (b"Dbanned attachment (#5.7.1)", Reply(554, "5.7.1", "banned attachment (#5.7.1)")),
        (b"Zgreylisted (#4.7.1)\n", Reply(451, "4.7.1", "greylisted (#4.7.1)")),
        # An enhanced code of the other class is not taken (RFC 3463 §2).
        (b"Dodd (#4.7.1)", Reply(554, "5.3.0", "odd (#4.7.1)")),
        (b"Dnot at the end (#5.7.1) here", Reply(554, "5.3.0", "not at the end (#5.7.1) here")),
        # qmail-smtpd: 554 for D, 451 for anything else.
        (b"Xsomething", Reply(451, "4.3.0", "something")),
        (b"Dfirst line\r\nsecond line", Reply(554, "5.3.0", "first line")),
        (b"Dtab\there \x00\x1b[31m\xc3\xa4", Reply(554, "5.3.0", "tab?here ??[31m??")),
        (b"Dok", Reply(554, "5.3.0", "ok")),
    ],
)
def test_custom_reply(data: bytes, reply: Reply) -> None:
    assert custom_reply(data) == reply
    assert reply_for_exit(82, custom=data) == reply


@pytest.mark.parametrize("data", [b"", b"D", b"Dx", b"D\n", b"D   \nhidden", b"\r\nZ"])
def test_no_usable_custom_text_is_the_temporary_problem(data: bytes) -> None:
    assert custom_reply(data) is None
    assert reply_for_exit(82, custom=data) == Reply(451, "4.3.0", "qq temporary problem")


def test_a_long_custom_text_fits_one_reply_line() -> None:
    reply = custom_reply(b"D" + b"x" * 2000)
    assert reply is not None
    # RFC 5321 §4.5.3.1.5: 512 octets with CRLF, even with the longest code.
    assert len(reply.render()) <= 512
    assert len(Reply(554, "5.999.999", reply.text).render()) == 512


def test_custom_text_counts_only_with_exit_82() -> None:
    for code in (0, 31, 71, 81, 111):
        assert reply_for_exit(code, custom=SPAM) == reply_for_exit(code)
