"""The SPAMC/SPAMD protocol client: its pure parts, then against Debian's spamd."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quailmail.policy.spamassassin import x_spam_status
from quailmail.policy.spamc import (
    Endpoint,
    SpamdClient,
    SpamdError,
    SpamVerdict,
    build_request,
    parse_endpoint,
    parse_response,
    parse_spam_header,
)

from serverfixtures import free_port
from spamdfixtures import GTUBE, Spamd

SPAM = (
    "From: someone@example.org\r\nTo: joe@example.com\r\nSubject: test\r\n"
    f"Message-ID: <gtube@example.org>\r\n\r\n{GTUBE}\r\n"
).encode()
HAM = (
    b"From: Joe <joe@example.com>\r\nTo: ann@example.com\r\nSubject: lunch\r\n"
    b"Date: Sat, 21 Nov 2026 10:00:00 +0000\r\nMessage-ID: <lunch@example.com>\r\n\r\n"
    b"Shall we meet at noon at the usual place?\r\n"
)


# -- pure parts ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("127.0.0.1:7830", Endpoint("127.0.0.1", 7830)),
        ("spamd.example.com", Endpoint("spamd.example.com", 783)),
        ("[::1]:7830", Endpoint("::1", 7830)),
        ("[::1]", Endpoint("::1", 783)),
        ("2001:db8::5", Endpoint("2001:db8::5", 783)),
        ("/var/run/spamd.sock", Endpoint(path="/var/run/spamd.sock")),
        ("  localhost:783\n", Endpoint("localhost", 783)),
    ],
)
def test_parse_endpoint(text: str, want: Endpoint) -> None:
    assert parse_endpoint(text) == want


@pytest.mark.parametrize("text", ["", "host:", "host:0", "host:99999", "a b:7", "[::1]:x", "x:y"])
def test_parse_endpoint_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_endpoint(text)


def test_endpoint_text() -> None:
    assert [str(Endpoint("::1", 7)), str(Endpoint("h", 7)), str(Endpoint(path="/s"))] == [
        "[::1]:7",
        "h:7",
        "/s",
    ]


def test_build_request() -> None:
    assert build_request("SYMBOLS", b"abc") == b"SYMBOLS SPAMC/1.5\r\nContent-length: 3\r\n\r\nabc"
    told = build_request("TELL", b"x", user="joe\r\nSet: remote", headers={"Set": "local"})
    assert told == (
        b"TELL SPAMC/1.5\r\nContent-length: 1\r\nUser: joeSet: remote\r\nSet: local\r\n\r\nx"
    )


def test_parse_response() -> None:
    symbols = parse_response(
        b"SPAMD/1.1 0 EX_OK\r\nContent-length: 9\r\nSpam: True ; 1005.2 / 5.0\r\n\r\nGTUBE,FOO"
    )
    assert (symbols.code, symbols.message, symbols.body) == (0, "EX_OK", b"GTUBE,FOO")
    assert symbols.header("spam") == "True ; 1005.2 / 5.0"
    # TELL's answer: headers, then an extra empty line (spamd's print).
    told = parse_response(b"SPAMD/1.1 0 EX_OK\r\nDidSet: local\r\n\r\n\r\n")
    assert told.header("DidSet") == "local"
    assert parse_response(b"SPAMD/1.5 0 PONG\r\n").message == "PONG"
    refused = parse_response(b"SPAMD/1.0 76 Bad header line: (Content-Length mismatch)\r\n")
    assert (refused.code, refused.message) == (76, "Bad header line: (Content-Length mismatch)")


@pytest.mark.parametrize(
    "data",
    [b"HTTP/1.1 200 OK\r\n\r\n", b"", b"SPAMD/1.1 0 EX_OK\r\nContent-length: 50\r\n\r\nshort"],
)
def test_parse_response_refuses(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_response(data)


def test_parse_spam_header() -> None:
    assert parse_spam_header("True ; 1005.2 / 5.0") == (True, "1005.2", "5.0")
    assert parse_spam_header("False ; -0.1 / 5.0") == (False, "-0.1", "5.0")
    with pytest.raises(ValueError):
        parse_spam_header("Maybe ; 1 / 5")
    with pytest.raises(ValueError):
        parse_spam_header("True ; 1.2.3 / 5")


def test_x_spam_status_folds_as_spamassassin() -> None:
    tests = ("GTUBE", "MISSING_DATE", "MISSING_FROM", "MISSING_HEADERS", "MISSING_MID",
             "NO_HEADERS_MESSAGE", "NO_RECEIVED", "NO_RELAYS", "TVD_SPACE_RATIO")  # fmt: skip
    field = x_spam_status(SpamVerdict(True, "1005.2", "5.0", tests))
    lines = field.decode().split("\r\n")
    assert lines[0].startswith("X-Spam-Status: Yes, score=1005.2 required=5.0 tests=GTUBE,")
    assert all(len(line) <= 78 for line in lines)
    assert all(line.startswith("\t") for line in lines[1:-1]) and lines[-1] == ""
    unfolded = field.decode().replace("\r\n\t", "").rstrip()
    assert unfolded.endswith("tests=" + ",".join(tests))
    clean = x_spam_status(SpamVerdict(False, "-0.1", "5.0"))
    assert clean == b"X-Spam-Status: No, score=-0.1 required=5.0 tests=none\r\n"


@given(st.binary(max_size=300))
def test_parse_response_fuzz(data: bytes) -> None:
    for candidate in (data, b"SPAMD/1.1 0 EX_OK\r\n" + data):
        try:
            response = parse_response(candidate)
        except ValueError:
            continue
        assert response.code >= 0


@given(st.text(max_size=80))
def test_parsers_refuse_only_with_valueerror(text: str) -> None:
    for parse in (parse_endpoint, parse_spam_header):
        with contextlib.suppress(ValueError):
            parse(text)


# -- failures without spamd -------------------------------------------------------


def test_refused_connection_is_an_error() -> None:
    client = SpamdClient(Endpoint("127.0.0.1", free_port()), timeout=10)
    with pytest.raises(SpamdError, match=r"spamd 127\.0\.0\.1:"):
        asyncio.run(client.symbols(HAM))


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that reads and never answers (a wedged spamd)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def test_silent_spamd_times_out(silent_server: int) -> None:
    client = SpamdClient(Endpoint("127.0.0.1", silent_server), timeout=0.3)
    with pytest.raises(SpamdError, match=r"no answer in 0\.3 s"):
        asyncio.run(client.check(HAM))


def test_not_a_spamd_is_an_error() -> None:
    async def main() -> None:
        async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(100)
            writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            writer.close()

        server = await asyncio.start_server(http, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            with pytest.raises(SpamdError, match="not a spamd response"):
                await SpamdClient(Endpoint("127.0.0.1", port)).check(HAM)

    asyncio.run(main())


# -- Debian's spamd ---------------------------------------------------------------


def _client(spamd: Spamd) -> SpamdClient:
    return SpamdClient(parse_endpoint(spamd.spec), timeout=60)


def test_ping(spamd: Spamd) -> None:
    assert asyncio.run(_client(spamd).ping()) == "PONG"


def test_gtube_is_spam(spamd: Spamd) -> None:
    verdict = asyncio.run(_client(spamd).symbols(SPAM))
    assert verdict.spam and verdict.score_value >= 1000 and verdict.required == "5.0"
    assert "GTUBE" in verdict.tests


def test_clean_message_is_ham(spamd: Spamd) -> None:
    verdict = asyncio.run(_client(spamd).check(HAM))
    assert not verdict.spam and verdict.score_value < 5 and verdict.tests == ()


def test_unix_socket(spamd: Spamd) -> None:
    client = SpamdClient(parse_endpoint(str(spamd.socket_path)), timeout=60)
    assert asyncio.run(client.symbols(SPAM)).spam


def test_tcp_connection_has_nodelay(spamd: Spamd) -> None:
    async def main() -> int:
        reader, writer = await _client(spamd).connect()
        sock = writer.get_extra_info("socket")
        value = int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.write(b"PING SPAMC/1.5\r\n\r\n")
        await reader.read()
        writer.close()
        await writer.wait_closed()
        return value

    assert asyncio.run(main()) != 0


def test_uvloop_connection_has_nodelay(spamd: Spamd) -> None:
    # `quail serve` runs on uvloop: the socket it hands out must say the same.
    uvloop = pytest.importorskip("uvloop")

    async def main() -> int:
        _reader, writer = await _client(spamd).connect()
        sock = writer.get_extra_info("socket")
        value = int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()
        return value

    assert uvloop.run(main()) != 0


def test_tell_learns_once(spamd: Spamd) -> None:
    message = SPAM.replace(b"<gtube@", b"<tell-once@")
    client = _client(spamd)
    assert asyncio.run(client.tell(message, "spam")) == {"local"}
    # The same message again: spamd answers EX_OK and says it did nothing.
    assert asyncio.run(client.tell(message, "spam")) == frozenset()


def test_spamd_complaint_is_an_error(spamd: Spamd) -> None:
    client = _client(spamd)
    told = {"Message-class": "spam", "Set": "local", "Remove": "local"}
    with pytest.raises(SpamdError, match=r": 76 .*Unable to set local and remove local"):
        asyncio.run(client.request("TELL", HAM, told))
