"""PROXY protocol v1/v2 parsing, listener lines, client address display."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quailmail.net import proxy
from quailmail.net.addresses import in_networks, parse_networks, plain
from quailmail.net.listeners import ListenerError, default_listeners, parse_listeners


@pytest.mark.parametrize(
    ("source", "destination"),
    [("192.0.2.7", "127.0.0.1"), ("2001:db8::7", "::1")],
)
@pytest.mark.parametrize("make", [proxy.v1_header, proxy.v2_header])
def test_round_trip(make: object, source: str, destination: str) -> None:
    header = make(source, 40000, destination, 25)  # type: ignore[operator]
    parsed = proxy.parse(header + b"EHLO x\r\n")
    assert parsed is not None
    assert (parsed.source, parsed.source_port, parsed.destination, parsed.destination_port) == (
        source,
        40000,
        destination,
        25,
    )
    assert parsed.consumed == len(header)


@pytest.mark.parametrize("make", [proxy.v1_header, proxy.v2_header])
def test_partial_headers_ask_for_more(make: object) -> None:
    header = make("192.0.2.7", 1, "127.0.0.1", 25)  # type: ignore[operator]
    for cut in range(len(header)):
        assert proxy.parse(header[:cut]) is None, cut


def test_unknown_and_local() -> None:
    parsed = proxy.parse(b"PROXY UNKNOWN\r\n")
    assert parsed is not None and parsed.source is None
    local = proxy.V2_SIGNATURE + bytes([0x20, 0x00, 0, 0])
    parsed = proxy.parse(local)
    assert parsed is not None and parsed.source is None and parsed.consumed == 16


@pytest.mark.parametrize(
    "data",
    [
        b"EHLO client\r\n",
        b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n",
        b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
        b"PROXY " + b"x" * 120,
        proxy.V2_SIGNATURE + bytes([0x31, 0x11, 0, 12]) + bytes(12),
    ],
)
def test_malformed_headers_are_refused(data: bytes) -> None:
    with pytest.raises(proxy.ProxyError):
        proxy.parse(data)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_parser_never_raises_unexpectedly(data: bytes) -> None:
    for candidate in (data, b"PROXY " + data, proxy.V2_SIGNATURE + data):
        with contextlib.suppress(proxy.ProxyError):
            proxy.parse(candidate)


def test_mapped_ipv4_is_shown_as_ipv4() -> None:
    assert plain("::ffff:192.0.2.1") == "192.0.2.1"
    assert plain("2001:DB8:0::1") == "2001:db8::1"
    assert plain("fe80::1%eth0") == "fe80::1"
    networks = parse_networks(["127.0.0.0/8", "# comment", "::1"])
    assert in_networks("::ffff:127.0.0.1", networks)
    assert in_networks("::1", networks) and not in_networks("192.0.2.1", networks)


def test_listener_lines() -> None:
    listeners = parse_listeners(default_listeners(2525, 2465, 2587))
    assert [str(x) for x in listeners] == [
        "smtp 127.0.0.1:2525 (smtp)",
        "smtp [::1]:2525 (smtp)",
        "smtps 127.0.0.1:2465 (smtps)",
        "smtps [::1]:2465 (smtps)",
        "submission 127.0.0.1:2587 (submission)",
        "submission [::1]:2587 (submission)",
    ]
    assert listeners[2].implicit_tls and listeners[4].submission
    assert listeners[4].rules == "tcp.submission.cdb" and listeners[0].rules == "tcp.smtp.cdb"
    for bad in ("smtp 127.0.0.1 25", "smtp nowhere 25 smtp", "smtp ::1 70000 smtp",
                "smtp ::1 25 pop3", "smtp ::1 25 smtp tcprules.d/rules.cdb"):  # fmt: skip
        with pytest.raises(ListenerError):
            parse_listeners(bad)
    # QmailToaster's rules, rebuilt in place by its qmailctl cdb: an absolute path
    (toaster,) = parse_listeners("smtp ::1 25 smtp /etc/tcprules.d/tcp.smtp.cdb")
    assert toaster.rules == "/etc/tcprules.d/tcp.smtp.cdb"
