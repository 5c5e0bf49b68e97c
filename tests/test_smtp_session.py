"""The SMTP session state machine: transactions, pipelining, BDAT, STARTTLS,
AUTH, limits and errors — bytes in, replies out, no sockets."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime

import pytest

from quailmail.core.reply import Reply
from quailmail.smtp import (
    NEED_DATA,
    PAUSED,
    AuthRequest,
    ConnectionClosed,
    Event,
    Helo,
    MailFrom,
    MessageReceived,
    MessageRefused,
    Path,
    ProtocolError,
    Quit,
    RcptTo,
    Reset,
    Session,
    SessionConfig,
    StartTls,
    State,
    address_literal,
    received_header,
    with_protocol,
)

from smtpdriver import CONFIG, HOST, Driver, b64, transaction

Expected = tuple[str, str, tuple[str, ...], bool, str | None] | None
JOE_SECRET = b64(b"\x00joe\x00secret")
TLS = dataclasses.replace(CONFIG, tls_available=True, auth_mechanisms=("PLAIN", "LOGIN"))


def ehlo_lines(text: str) -> list[str]:
    return [line[4:] for line in text.splitlines()]


# -- greeting, EHLO --------------------------------------------------------------


def test_greeting_and_ehlo_keywords() -> None:
    d = Driver(greet=False)
    d.pump()
    assert d.output() == f"220 {HOST} ESMTP\r\n"
    out = d.send("EHLO client.example.net\r\n")
    assert out.startswith(f"250-{HOST}\r\n") and out.endswith("\r\n")
    assert ehlo_lines(out)[1:] == [
        "PIPELINING",
        "SIZE 100000",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "BINARYMIME",
    ]
    assert d.session.helo == "client.example.net" and d.session.extended


def test_ehlo_offers_starttls_then_auth_after_tls() -> None:
    d = Driver(TLS)
    words = ehlo_lines(d.send("EHLO c\r\n"))
    assert "STARTTLS" in words and not any(w.startswith("AUTH") for w in words)
    d.send("STARTTLS\r\n")
    d.session.tls_started("TLSv1.3", "TLS_AES_256_GCM_SHA384")
    d.pump()
    words = ehlo_lines(d.send("EHLO c\r\n"))
    assert "STARTTLS" not in words and "AUTH PLAIN LOGIN" in words


def test_helo_is_not_extended_and_refuses_parameters() -> None:
    d = Driver()
    assert d.send("HELO client\r\n") == f"250 {HOST}\r\n"
    assert d.codes("MAIL FROM:<a@b.example> SIZE=10\r\n") == ["555 5.5.4"]
    assert d.codes("MAIL FROM:<a@b.example>\r\n") == ["250 2.1.0"]
    assert d.session.with_protocol == "SMTP"


def test_greeting_refused_allows_only_quit() -> None:
    def policy(event: Event) -> Reply:
        return Reply(554, "5.7.1", "go away")

    d = Driver(policy=policy)
    assert d.session.state is State.REJECTED
    assert d.codes("EHLO c\r\nMAIL FROM:<a@b.c>\r\nQUIT\r\n") == [
        "503 5.5.1",
        "503 5.5.1",
        "221 2.0.0",
    ]
    assert d.closed()


def test_early_talker_is_refused_and_closed() -> None:
    s = Session(CONFIG)
    s.receive(b"EHLO eager\r\n")  # arrived during GREETDELAY
    s.early_talker()
    assert s.data_to_send() == b"554 5.5.0 SMTP protocol violation: talked before the greeting\r\n"
    assert s.next_event() == ConnectionClosed("early talker")
    with pytest.raises(ProtocolError):
        s.early_talker()


def test_timeout_closes_with_421() -> None:
    d = Driver()
    d.session.timed_out()
    assert d.output().startswith("421 4.4.2 ")
    d.pump()
    assert d.closed()


# -- transactions ---------------------------------------------------------------


def test_full_transaction_pipelined_in_one_read() -> None:
    d = Driver()
    body = b"Subject: hi\r\n\r\nline one\r\n..leading dot\r\n.\r\n"
    codes = d.codes(transaction(body) + b"QUIT\r\n")
    assert codes == ["250", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0", "221 2.0.0"]
    assert d.messages() == [b"Subject: hi\r\n\r\nline one\r\n.leading dot\r\n"]
    msg = d.of(MessageReceived)[0]
    assert isinstance(msg, MessageReceived) and msg.size == len(d.messages()[0])
    assert [type(e) for e in d.events[-2:]] == [Quit, ConnectionClosed]
    assert d.session.closed


def test_empty_message_right_after_354() -> None:
    d = Driver()
    d.send(transaction(b".\r\n"))
    assert d.messages() == [b""]


def test_first_line_dot_stuffed() -> None:
    d = Driver()
    d.send(transaction(b"..\r\n.x\r\n.\r\n"))
    assert d.messages() == [b".\r\nx\r\n"]


def test_two_messages_in_one_session() -> None:
    d = Driver()
    d.send(transaction(b"one\r\n.\r\n"))
    d.send(b"MAIL FROM:<>\r\nRCPT TO:<x@y.example>\r\nDATA\r\ntwo\r\n.\r\n")
    assert d.messages() == [b"one\r\n", b"two\r\n"]
    mail = d.of(MailFrom)[1]
    assert isinstance(mail, MailFrom) and mail.path.null and str(mail.path) == ""


@pytest.mark.parametrize("seed", range(20))
def test_data_in_random_splits_gives_the_same_message(seed: int) -> None:
    rng = random.Random(seed)
    lines = [
        rng.choice([b"", b".", b"..", b"...x", b"text", b"a.b", b"\x80\xff"]) for _ in range(50)
    ]
    body = b"".join(b"." + ln + b"\r\n" if ln.startswith(b".") else ln + b"\r\n" for ln in lines)
    expected = b"".join(ln + b"\r\n" for ln in lines)
    stream = transaction(body + b".\r\n") + b"NOOP\r\n"
    d = Driver()
    i = 0
    while i < len(stream):
        n = 1 if seed % 2 else rng.randint(1, 12)
        d.send(stream[i : i + n])
        i += n
    assert d.messages() == [expected]
    d2 = Driver()
    d2.send(stream)
    assert d2.messages() == [expected]


def test_message_is_kept_as_blocks() -> None:
    d = Driver()
    d.send(transaction(b""))
    for _ in range(5):
        d.send(b"x" * 1000 + b"\r\n")
    d.send(b".\r\n")
    msg = d.of(MessageReceived)[0]
    assert isinstance(msg, MessageReceived) and len(msg.chunks) >= 5
    assert b"".join(msg.chunks) == (b"x" * 1000 + b"\r\n") * 5


def test_message_over_size_limit_is_read_to_the_end_then_refused() -> None:
    d = Driver(dataclasses.replace(CONFIG, max_message_size=100))
    codes = d.codes(transaction(b"x" * 200 + b"\r\nMAIL FROM:<no@smuggle>\r\n.\r\nNOOP\r\n"))
    assert codes == ["250", "250 2.1.0", "250 2.1.5", "354", "552 5.3.4", "250 2.0.0"]
    assert d.messages() == [] and len(d.of(MailFrom)) == 1
    assert d.session.mail_from is None  # the transaction is over


def test_message_exactly_at_size_limit_is_accepted() -> None:
    d = Driver(dataclasses.replace(CONFIG, max_message_size=10))
    d.send(transaction(b"12345678\r\n.\r\n"))
    assert d.messages() == [b"12345678\r\n"]


def test_size_parameter_checked_against_limit() -> None:
    d = Driver(dataclasses.replace(CONFIG, max_message_size=1000))
    d.send("EHLO c\r\n")
    assert d.codes("MAIL FROM:<a@b.example> SIZE=1001\r\n") == ["552 5.3.4"]
    assert d.codes("MAIL FROM:<a@b.example> SIZE=x\r\n") == ["501 5.5.4"]
    assert d.codes("MAIL FROM:<a@b.example> SIZE=1000\r\n") == ["250 2.1.0"]


def test_data_rejected_by_driver_keeps_command_mode() -> None:
    def policy(event: Event) -> Reply | None:
        from smtpdriver import answer

        if type(event).__name__ == "DataReady":
            return Reply(451, "4.7.1", "greylisted")
        return answer(event)

    d = Driver(policy=policy)
    assert d.codes(transaction(b"")) == ["250", "250 2.1.0", "250 2.1.5", "451 4.7.1"]
    assert d.codes("NOOP\r\n") == ["250 2.0.0"]


def test_data_without_valid_recipients() -> None:
    d = Driver()
    codes = d.codes("EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bad@x.example>\r\nDATA\r\n")
    assert codes == ["250", "250 2.1.0", "550 5.1.1", "554 5.5.1"]


def test_recipient_limit() -> None:
    d = Driver(dataclasses.replace(CONFIG, max_recipients=2))
    d.send("EHLO c\r\nMAIL FROM:<a@b.example>\r\n")
    rcpts = "".join(f"RCPT TO:<r{i}@x.example>\r\n" for i in range(3))
    assert d.codes(rcpts) == ["250 2.1.5", "250 2.1.5", "452 4.5.3"]
    assert [str(p) for p in d.session.recipients] == ["r0@x.example", "r1@x.example"]


def test_rset_noop_vrfy_help_expn() -> None:
    d = Driver()
    d.send("EHLO c\r\nMAIL FROM:<a@b.example>\r\n")
    assert d.codes("RSET\r\nNOOP\r\nVRFY joe\r\nHELP\r\nEXPN list\r\n") == [
        "250 2.0.0",
        "250 2.0.0",
        "252 2.0.0",
        "214 2.0.0",
        "502 5.5.1",
    ]
    assert d.of(Reset) and d.session.mail_from is None
    assert d.codes("RSET now\r\nVRFY\r\n") == ["501 5.5.4", "501 5.5.4"]


def test_ehlo_resets_the_transaction() -> None:
    d = Driver()
    d.send("EHLO c\r\nMAIL FROM:<a@b.example>\r\nEHLO c\r\n")
    assert d.codes("RCPT TO:<x@y.example>\r\n") == ["503 5.5.1"]


# -- sequence and syntax errors ----------------------------------------------------


@pytest.mark.parametrize(
    ("commands", "expected"),
    [
        ("MAIL FROM:<a@b.example>\r\n", ["503 5.5.1"]),
        ("EHLO c\r\nRCPT TO:<a@b.example>\r\n", ["250", "503 5.5.1"]),
        ("EHLO c\r\nDATA\r\n", ["250", "503 5.5.1"]),
        (
            "EHLO c\r\nMAIL FROM:<a@b.example>\r\nMAIL FROM:<a@b.example>\r\n",
            ["250", "250 2.1.0", "503 5.5.1"],
        ),
        ("FROB\r\n", ["502 5.5.1"]),
        ("EHLO\r\n", ["501 5.5.4"]),
        ("EHLO c\r\nMAIL TO:<a@b.example>\r\n", ["250", "501 5.5.4"]),
        ("EHLO c\r\nMAIL FROM:a@b.example\r\n", ["250", "501 5.1.7"]),
        ("EHLO c\r\nDATA now\r\n", ["250", "501 5.5.4"]),
        ("\xff\r\n", ["500 5.5.2"]),
        ("NOOP\x00\r\n", ["500 5.5.2"]),
    ],
)
def test_sequence_and_syntax_errors(commands: str, expected: list[str]) -> None:
    d = Driver()
    data = commands.encode("latin-1") if "\xff" in commands else commands.encode()
    assert d.codes(data) == expected


def test_max_errors_closes_with_421() -> None:
    d = Driver(dataclasses.replace(CONFIG, max_errors=3))
    out = d.send("FROB\r\nFROB\r\nFROB\r\nNOOP\r\n")
    assert out.splitlines() == [
        "502 5.5.1 unrecognized command",
        "502 5.5.1 unrecognized command",
        "502 5.5.1 unrecognized command",
        "421 4.7.0 too many errors; closing",
    ]
    assert d.closed() and d.session.errors == 3


def test_driver_rejections_count_as_errors() -> None:
    d = Driver(dataclasses.replace(CONFIG, max_errors=2))
    d.send("EHLO c\r\nMAIL FROM:<a@b.example>\r\n")
    assert d.codes("RCPT TO:<bad1@x.example>\r\nRCPT TO:<bad2@x.example>\r\nNOOP\r\n") == [
        "550 5.1.1",
        "550 5.1.1",
        "421 4.7.0",
    ]
    assert d.closed()


def test_long_line_refused_and_resynced() -> None:
    d = Driver()
    assert d.codes(b"NOOP " + b"x" * 2000 + b"\r\nNOOP\r\n") == ["500 5.5.6", "250 2.0.0"]
    # in pieces: the refusal comes as soon as the line cannot fit any more
    assert d.codes(b"NOOP " + b"x" * 1200) == ["500 5.5.6"]
    assert d.codes(b"y" * 5000) == []
    assert d.codes(b"\r\nNOOP\r\n") == ["250 2.0.0"]


def test_line_of_exactly_1000_octets_is_accepted() -> None:
    d = Driver()
    line = b"NOOP " + b"x" * (1000 - 7) + b"\r\n"
    assert len(line) == 1000
    assert d.codes(line) == ["250 2.0.0"]
    assert d.codes(b"NOOP " + b"x" * (1001 - 7) + b"\r\n") == ["500 5.5.6"]


def test_commands_may_end_in_bare_lf() -> None:
    d = Driver()
    assert d.codes(b"EHLO c\nNOOP\n") == ["250", "250 2.0.0"]


def test_http_request_closes() -> None:
    d = Driver()
    assert d.codes("GET / HTTP/1.1\r\nHost: x\r\n") == ["421 4.7.0"]
    assert d.closed()


def test_driver_421_closes() -> None:
    def policy(event: Event) -> Reply | None:
        from smtpdriver import answer

        if isinstance(event, Helo):
            return Reply(421, "4.3.2", "shutting down")
        return answer(event)

    d = Driver(policy=policy)
    assert d.codes("EHLO c\r\nNOOP\r\n") == ["421 4.3.2"]
    assert d.closed()


def test_end_of_file() -> None:
    d = Driver()
    d.send(b"NOOP\r\n")
    d.send(b"")
    assert d.closed() and d.events[-1] == ConnectionClosed("end of file")
    assert d.session.next_event() == ConnectionClosed("end of file")


def test_driver_contract_errors() -> None:
    s = Session(CONFIG)
    with pytest.raises(ProtocolError):
        s.reply(Reply(250, "2.0.0", "nothing asked"))
    event = s.next_event()
    with pytest.raises(ProtocolError):
        s.reply(Reply(250, "2.0.0", "not a greeting"))
    with pytest.raises(ProtocolError):
        s.next_event()
    assert event is not NEED_DATA
    s.reply(Reply(220, None, "hi"))
    assert s.next_event() is NEED_DATA


# -- BDAT (RFC 3030) ----------------------------------------------------------------

START = b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<r@x.example>\r\n"


def test_bdat_chunks() -> None:
    d = Driver()
    d.send(START)
    codes = d.codes(b"BDAT 6\r\nline1\nBDAT 9 LAST\r\nQUIT\r\n.\r\nRSET\r\nNOOP\r\n")
    # the LF-only first chunk is refused (no BINARYMIME); the LAST chunk is
    # read as octets, never as commands
    assert codes == ["550 5.6.0", "503 5.5.1", "250 2.0.0", "250 2.0.0"]
    assert not d.of(Quit)


def test_bdat_message_and_boundaries() -> None:
    d = Driver()
    d.send(START)
    assert d.codes(b"BDAT 8\r\nline1\r\nl") == ["250 2.0.0"]
    assert d.codes(b"BDAT 8\r\nine2\r\n.\r") == ["250 2.0.0"]  # CR ends the chunk
    assert d.codes(b"BDAT 1 LAST\r\n\n") == ["250 2.0.0"]  # ... and LF starts the next
    assert d.messages() == [b"line1\r\nline2\r\n.\r\n"]  # no dot-stuffing in BDAT


def test_bdat_cr_lf_split_across_chunks() -> None:
    d = Driver()
    d.send(START)
    d.send(b"BDAT 7\r\nline1\r\r")
    d.send(b"BDAT 1 LAST\r\n\n")
    msg = d.of(MessageReceived)
    assert msg == [] and d.of(MessageRefused)  # "\r\r\n": the first CR is bare
    d.send(START[8:] + b"BDAT 6\r\nline1\r")
    d.send(b"BDAT 1 LAST\r\n\n")
    assert d.messages() == [b"line1\r\n"]
    ev = d.of(MessageReceived)[0]
    assert isinstance(ev, MessageReceived) and ev.bdat and ev.size == 7


def test_bdat_zero_last_and_byte_by_byte() -> None:
    d = Driver()
    d.send(START)
    for b in b"BDAT 5\r\nabc\r\nBDAT 0 LAST\r\n":
        d.send(bytes([b]))
    assert d.messages() == [b"abc\r\n"]
    assert d.session.with_protocol == "ESMTP"


def test_bdat_refusals_swallow_the_chunk() -> None:
    d = Driver()
    d.send("EHLO c\r\n")
    assert d.codes(b"BDAT 12 LAST\r\nQUIT\r\nQUIT\r\n") == ["503 5.5.1"]
    d.send("MAIL FROM:<a@b.example>\r\n")
    assert d.codes(b"BDAT 6 LAST\r\nQUIT\r\n") == ["554 5.5.1"]
    assert not d.of(Quit)
    assert d.codes(b"BDAT x\r\n") == ["501 5.5.4"] and d.closed()


def test_bdat_not_advertised_still_swallows_the_chunk() -> None:
    d = Driver(dataclasses.replace(CONFIG, chunking=False))
    d.send(START)
    assert d.codes(b"BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n") == ["502 5.5.1", "250 2.0.0"]


def test_bdat_size_limit() -> None:
    d = Driver(dataclasses.replace(CONFIG, max_message_size=10))
    d.send(START)
    assert d.codes(b"BDAT 8\r\n12345678BDAT 8 LAST\r\n12345678") == ["250 2.0.0", "552 5.3.4"]
    assert d.messages() == []


def test_data_after_bdat_and_binarymime() -> None:
    d = Driver()
    d.send(START + b"BDAT 3\r\nab\n")
    d.send(START[8:] + b"BDAT 3\r\nabc")
    assert d.codes(b"DATA\r\n") == ["503 5.5.1"]
    d.send(b"RSET\r\nMAIL FROM:<a@b.example> BODY=BINARYMIME\r\nRCPT TO:<r@x.example>\r\n")
    assert d.codes(b"DATA\r\n") == ["503 5.5.1"]
    d.send(b"BDAT 5 LAST\r\na\nb\r\x00")
    assert d.messages() == [b"a\nb\r\x00"]


def test_binarymime_needs_chunking() -> None:
    d = Driver(dataclasses.replace(CONFIG, chunking=False))
    d.send("EHLO c\r\n")
    assert d.codes("MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n") == ["555 5.5.4"]
    assert d.codes("MAIL FROM:<a@b.example> BODY=8BITMIME\r\n") == ["250 2.1.0"]


# -- STARTTLS ---------------------------------------------------------------------


def test_starttls_discards_pipelined_injection() -> None:
    d = Driver(TLS)
    out = d.send(b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<v@y.example>\r\n")
    assert out.endswith("220 2.0.0 go ahead\r\n")
    assert d.paused and d.session.state is State.TLS
    assert d.session.next_event() is PAUSED
    d.session.receive(b"QUIT\r\n")  # plaintext after the 220, before the handshake
    assert (
        d.session.injected_bytes
        == len(b"MAIL FROM:<evil@x.example>\r\nRCPT TO:<v@y.example>\r\n") + 6
    )
    d.session.tls_started("TLSv1.3", "TLS_AES_128_GCM_SHA256")
    d.pump()
    assert not d.of(MailFrom) and not d.of(Quit)
    # RFC 3207 §4.2: the EHLO before TLS is forgotten
    assert d.codes("MAIL FROM:<a@b.example>\r\n") == ["503 5.5.1"]
    assert d.codes("EHLO c\r\nSTARTTLS\r\n") == ["250", "503 5.5.1"]
    assert d.session.tls_version == "TLSv1.3"


def test_starttls_refusals() -> None:
    d = Driver()
    assert d.codes("EHLO c\r\nSTARTTLS\r\n") == ["250", "502 5.5.1"]
    d = Driver(TLS)
    assert d.codes("STARTTLS now\r\n") == ["501 5.5.4"]

    def policy(event: Event) -> Reply | None:
        from smtpdriver import answer

        if isinstance(event, StartTls):
            return Reply(454, "4.7.0", "TLS not available now")
        return answer(event)

    d = Driver(TLS, policy)
    assert d.codes("STARTTLS\r\nNOOP\r\n") == ["454 4.7.0"]  # NOOP was injected: gone
    assert d.codes("NOOP\r\n") == ["250 2.0.0"] and not d.session.tls_active


def test_implicit_tls() -> None:
    s = Session(TLS)
    s.tls_started("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256")
    d = Driver.__new__(Driver)
    d.session, d.policy, d.events, d.paused = s, __import__("smtpdriver").answer, [], False
    d.pump()
    assert d.output().startswith("220 ")
    assert "STARTTLS" not in ehlo_lines(d.send("EHLO c\r\n"))


# -- AUTH -------------------------------------------------------------------------


def tls_driver() -> Driver:
    d = Driver(TLS)
    d.send("EHLO c\r\nSTARTTLS\r\n")
    d.session.tls_started("TLSv1.3", "TLS_AES_128_GCM_SHA256")
    d.pump()
    d.send("EHLO c\r\n")
    return d


def test_auth_plain_initial_response() -> None:
    d = tls_driver()
    assert d.codes("AUTH PLAIN " + JOE_SECRET + "\r\n") == ["235 2.7.0"]
    req = d.of(AuthRequest)[0]
    assert req == AuthRequest("PLAIN", "joe", "secret", "")
    assert d.session.auth_user == "joe"
    assert d.codes("AUTH PLAIN\r\n") == ["503 5.5.1"]
    d.send("MAIL FROM:<joe@b.example>\r\n")
    assert d.session.with_protocol == "ESMTPSA"


def test_auth_plain_challenge_and_authzid() -> None:
    d = tls_driver()
    assert d.send("AUTH PLAIN\r\n") == "334 \r\n"
    assert d.codes(b64(b"admin\x00joe\x00wrong") + "\r\n") == ["535 5.7.8"]
    assert d.of(AuthRequest)[0] == AuthRequest("PLAIN", "joe", "wrong", "admin")
    assert d.session.auth_user is None


def test_auth_login() -> None:
    d = tls_driver()
    assert d.send("AUTH LOGIN\r\n") == "334 VXNlcm5hbWU6\r\n"
    assert d.send(f"{b64(b'joe')}\r\n") == "334 UGFzc3dvcmQ6\r\n"
    assert d.codes(f"{b64(b'secret')}\r\n") == ["235 2.7.0"]
    d = tls_driver()
    assert d.send(f"AUTH LOGIN {b64(b'joe')}\r\n") == "334 UGFzc3dvcmQ6\r\n"
    assert d.codes(f"{b64(b'secret')}\r\n") == ["235 2.7.0"]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["AUTH PLAIN ="], ["501 5.5.2"]),  # empty initial response: no credentials
        (["AUTH PLAIN", "*"], ["334", "501 5.0.0"]),
        (["AUTH LOGIN", "*"], ["334", "501 5.0.0"]),
        (["AUTH LOGIN", "am9l", "*"], ["334", "334", "501 5.0.0"]),
        (["AUTH PLAIN !!!"], ["501 5.5.2"]),
        (["AUTH PLAIN", "not base64"], ["334", "501 5.5.2"]),
        ([f"AUTH PLAIN {b64(b'joe secret')}"], ["501 5.5.2"]),
        (["AUTH PLAIN " + b64(b"\x00\xff\x00x")], ["501 5.5.2"]),
        (["AUTH CRAM-MD5"], ["504 5.5.4"]),
        (["AUTH"], ["501 5.5.4"]),
        (["AUTH LOGIN", "="], ["334", "334"]),  # "=" is empty after the first step: a user ""
    ],
)
def test_auth_errors(lines: list[str], expected: list[str]) -> None:
    d = tls_driver()
    assert d.codes("".join(line + "\r\n" for line in lines)) == expected
    assert d.session.auth_user is None


def test_auth_refused_without_tls_or_ehlo_or_in_transaction() -> None:
    d = Driver(TLS)
    assert d.codes("EHLO c\r\nAUTH PLAIN " + JOE_SECRET + "\r\n") == ["250", "503 5.5.1"]
    d = Driver(dataclasses.replace(TLS, auth_requires_tls=False))
    assert d.codes("HELO c\r\nAUTH PLAIN\r\n") == ["250", "503 5.5.1"]
    d.send("EHLO c\r\nMAIL FROM:<a@b.example>\r\n")
    assert d.codes("AUTH PLAIN\r\n") == ["503 5.5.1"]


def test_auth_parameter_on_mail() -> None:
    d = tls_driver()
    assert d.codes("MAIL FROM:<a@b.example> AUTH=<>\r\n") == ["250 2.1.0"]
    mail = d.of(MailFrom)[0]
    assert isinstance(mail, MailFrom) and mail.params == {"AUTH": "<>"}
    d = Driver()
    d.send("EHLO c\r\n")
    assert d.codes("MAIL FROM:<a@b.example> AUTH=<>\r\n") == ["555 5.5.4"]


# -- paths --------------------------------------------------------------------------


def rcpt(path: str, *, utf8: bool = False) -> tuple[list[str], Path | None]:
    d = Driver()
    d.send(f"EHLO c\r\nMAIL FROM:<a@b.example>{' SMTPUTF8' if utf8 else ''}\r\n")
    codes = d.codes(f"RCPT TO:{path}\r\n")
    events = d.of(RcptTo)
    got = events[0].path if events and isinstance(events[0], RcptTo) else None
    return codes, got


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<user%other@host.example>", ("user%other", "host.example", (), True, None)),
        ("<user!other@host.example>", ("user!other", "host.example", (), True, None)),
        (
            "<@relay.example:user@host.example>",
            ("user", "host.example", ("relay.example",), True, "user@host.example"),
        ),
        (
            "<@a.example,@b.example:u@h.example>",
            ("u", "h.example", ("a.example", "b.example"), True, "u@h.example"),
        ),
        ('<"user@other"@host.example>', ("user@other", "host.example", (), True, None)),
        ('<"a b\\"c"@host.example>', ('a b"c', "host.example", (), False, None)),
        ('<"plain"@host.example>', ("plain", "host.example", (), False, "plain@host.example")),
        ("<user@[192.0.2.1]>", ("user", "[192.0.2.1]", (), False, None)),
        ("<user@[IPv6:2001:db8::1]>", ("user", "[IPv6:2001:db8::1]", (), False, None)),
        ("<USER@HOST.EXAMPLE>", ("USER", "HOST.EXAMPLE", (), False, None)),
        ("<Postmaster>", ("Postmaster", "", (), False, "Postmaster")),
        ("< a.b+tag@host.example>", None),  # space inside: refused
    ],
)
def test_relay_trick_paths_are_exposed(text: str, expected: Expected) -> None:
    """(local, domain, route, looks_routed, canonical or None for the text)"""
    codes, path = rcpt(text)
    if expected is None:
        assert codes == ["501 5.1.3"] and path is None
        return
    local, domain, route, routed, canonical = expected
    assert codes == ["250 2.1.5"] and path is not None
    assert (path.local, path.domain, path.route, path.looks_routed) == (
        local,
        domain,
        route,
        routed,
    )
    assert str(path) == (canonical or text.strip("<>"))


def test_ip_literals_and_normalized_domain() -> None:
    _, path = rcpt("<u@[IPv6:2001:DB8:0:0::1]>")
    assert path is not None and path.is_ip_literal and path.ip is not None
    assert path.normalized_domain == "[IPv6:2001:db8::1]"
    _, path = rcpt("<u@Host.EXAMPLE>")
    assert path is not None and not path.is_ip_literal and path.normalized_domain == "host.example"


@pytest.mark.parametrize(
    "text",
    [
        "user@host.example",  # no angle brackets
        "<user@host.example",
        "<@host.example>",
        "<user@>",
        "<user>",
        "<user@-host.example>",
        "<user@host..example>",
        "<us..er@host.example>",
        "<user@[999.1.1.1]>",
        "<user@[010.1.1.1]>",
        "<user@[IPv6:xyz]>",
        "<user@[tag:general]>",
        "<>",  # null forward-path
        '<"unterminated@host.example>',
        "<user@host.example> NOTIFY=NEVER extra junk=",
    ],
)
def test_bad_forward_paths(text: str) -> None:
    codes, path = rcpt(text)
    assert codes in (["501 5.1.3"], ["501 5.5.4"]) and path is None


def test_rcpt_parameters_unsupported() -> None:
    assert rcpt("<u@h.example> NOTIFY=NEVER")[0] == ["555 5.5.4"]


def test_utf8_addresses_need_smtputf8() -> None:
    assert rcpt("<jösé@bücher.example>")[0] == ["553 5.6.7"]
    codes, path = rcpt("<jösé@bücher.example>", utf8=True)
    assert codes == ["250 2.1.5"] and path is not None and path.utf8
    d = Driver()
    d.send("EHLO c\r\n")
    assert d.codes("MAIL FROM:<jösé@bücher.example>\r\n") == ["553 5.6.7"]
    assert d.codes("MAIL FROM:<jösé@bücher.example> SMTPUTF8\r\n") == ["250 2.1.0"]
    d.send("RCPT TO:<x@y.example>\r\n")
    assert d.session.with_protocol == "UTF8SMTP"


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ("BODY=8BITMIME", "250 2.1.0"),
        ("body=7bit", "250 2.1.0"),
        ("BODY=BINARYMIME", "250 2.1.0"),
        ("BODY=9BIT", "501 5.5.4"),
        ("SMTPUTF8=yes", "501 5.5.4"),
        ("RET=FULL", "555 5.5.4"),
        ("SIZE=1 SIZE=2", "501 5.5.4"),
        ("=x", "501 5.5.4"),
    ],
)
def test_mail_parameters(params: str, code: str) -> None:
    d = Driver()
    d.send("EHLO c\r\n")
    assert d.codes(f"MAIL FROM:<a@b.example> {params}\r\n") == [code]


def test_mail_from_with_space_after_colon() -> None:
    d = Driver()
    d.send("EHLO c\r\n")
    assert d.codes("mail from: <a@b.example>\r\n") == ["250 2.1.0"]


# -- replies and Received -------------------------------------------------------------


def test_reply_rendering() -> None:
    r = Reply(250, "2.0.0", "one\ntwo")
    assert r.render() == b"250-2.0.0 one\r\n250 2.0.0 two\r\n"
    assert r.render(enhanced=False) == b"250-one\r\n250 two\r\n"
    assert Reply(334, None, "").render() == b"334 \r\n"
    with pytest.raises(ValueError):
        Reply(250, "5.0.0", "mismatch")
    with pytest.raises(ValueError):
        Reply(250, None, "a\r\nb")
    d = Driver(dataclasses.replace(CONFIG, enhancedstatuscodes=False))
    assert d.send("NOOP\r\n") == "250 ok\r\n"


@pytest.mark.parametrize(
    ("ip", "literal"),
    [
        ("192.0.2.1", "[192.0.2.1]"),
        ("2001:db8::1", "[IPv6:2001:db8::1]"),
        ("2001:0db8:0000::0001", "[IPv6:2001:db8::1]"),
        ("::ffff:192.0.2.1", "[192.0.2.1]"),
        ("fe80::1%eth0", "[IPv6:fe80::1]"),
    ],
)
def test_address_literal(ip: str, literal: str) -> None:
    assert address_literal(ip) == literal


def test_received_header() -> None:
    date = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    h = received_header(
        helo="client.example.net",
        client_ip="2001:db8::25",
        client_host="client.example.net",
        server_name="mx.example.org",
        with_protocol="ESMTPSA",
        date=date,
        tls_version="TLSv1.3",
        tls_cipher="TLS_AES_256_GCM_SHA384",
        auth_user="joe",
        queue_id="1a2b3c",
        recipient="rcpt@example.org",
    )
    assert h == (
        "Received: from client.example.net (client.example.net [IPv6:2001:db8::25])\r\n"
        "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n"
        "\t(authenticated user joe)\r\n"
        "\tby mx.example.org (quailmail) with ESMTPSA id 1a2b3c\r\n"
        "\tfor <rcpt@example.org>; Tue, 02 Jan 2024 03:04:05 +0000\r\n"
    )


def test_received_header_hostile_helo_and_user() -> None:
    date = datetime(2024, 1, 2, tzinfo=UTC)
    h = received_header(
        helo="evil (x)\r\nX-Injected: yes",
        client_ip="::ffff:198.51.100.7",
        client_host=None,
        server_name="mx.example.org",
        with_protocol="ESMTPA",
        date=date,
        auth_user="a)b\\",
    )
    assert h.startswith("Received: from [198.51.100.7] ([198.51.100.7])\r\n")
    assert "(HELO evil \\(x\\)X-Injected: yes)" in h
    assert "(authenticated user a\\)b\\\\)" in h
    assert h.count("\r\n") == 4 and "\r\n\t" in h and "for <" not in h


@pytest.mark.parametrize(
    ("extended", "tls", "auth", "utf8", "word"),
    [
        (False, False, False, False, "SMTP"),
        (True, False, False, False, "ESMTP"),
        (True, True, False, False, "ESMTPS"),
        (True, False, True, False, "ESMTPA"),
        (True, True, True, False, "ESMTPSA"),
        (True, True, True, True, "UTF8SMTPSA"),
    ],
)
def test_with_protocol(extended: bool, tls: bool, auth: bool, utf8: bool, word: str) -> None:
    assert with_protocol(extended=extended, tls=tls, auth=auth, utf8=utf8) == word


def test_session_config_defaults() -> None:
    c = SessionConfig("h")
    assert (c.max_line_length, c.max_recipients, c.timeout) == (1000, 100, 1200.0)
