"""DNS blocklists at connection time (rblsmtpd with the seeds' IPv6 patch):
query names from the RFC 5782 test points, `control/rbls`, `RBLSMTPD`, and
real clients of `quail serve` (IPv4 from chosen loopback addresses, IPv6 on
::1 and behind the PROXY protocol) against lists served by the test DNS
server; Debian's rblsmtpd as the peer for the replies."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from quailmail.core.dns import DnsResult, DnsStatus
from quailmail.dns.zone import Fault, Zone
from quailmail.dns.zoneserver import ZoneServer
from quailmail.policy import dnsbl
from quailmail.policy.dnsbl import DnsList, Ipv6Naming, Listing, RblConfig

from policyfixtures import SESSION, finals, talk, write_rules
from serverfixtures import Running

DATA = Path(__file__).parent / "data" / "dnsbl" / "rfc5782-test-points.json"
POINTS = json.loads(DATA.read_text())
SEED_CLIENT = "2001:470:1f0f:350::1"  # the seeds' example and its query name:
SEED_NAME = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.5.3.0.f.0.f.1.0.7.4.0.1.0.0.2.ipv6.rbl.example.org"


def _address_points() -> list[dict[str, str]]:
    points = [p for p in POINTS["test_points"] if p["kind"] in ("ipv4", "ipv6")]
    return points + POINTS["query_name_examples"]


@pytest.mark.parametrize("point", _address_points(), ids=lambda p: p["address"])
def test_query_names_are_rfc5782s(point: dict[str, str]) -> None:
    zone = "dnsbl.example"
    expected = point["query_name"].replace("<zone>", zone)
    address = ipaddress.ip_address(point["address"])
    if isinstance(address, ipaddress.IPv6Address):
        assert f"{dnsbl.nibbles(address)}.{zone}" == expected
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # A client at ::ffff:127.0.0.2 is an IPv4 client (tcpserver shows it
        # as 127.0.0.2) and is asked by its IPv4 name.
        v4 = str(address.ipv4_mapped)
        assert dnsbl.query_name(point["address"], DnsList(zone)) == (
            ".".join(reversed(v4.split("."))) + f".{zone}"
        )
    else:
        assert dnsbl.query_name(point["address"], DnsList(zone)) == expected


def test_seeds_namespace_and_off() -> None:
    assert dnsbl.query_name(SEED_CLIENT, DnsList("rbl.example.org", ipv6=Ipv6Naming.NAMESPACE)) == (
        SEED_NAME
    )
    assert dnsbl.query_name(SEED_CLIENT, DnsList("rbl.example.org")) == SEED_NAME.replace(
        ".ipv6.", "."
    )
    assert dnsbl.query_name(SEED_CLIENT, DnsList("x.test", ipv6=Ipv6Naming.OFF)) is None
    # IPv4 clients are asked whatever the IPv6 naming.
    assert dnsbl.query_name("192.0.2.99", DnsList("x.test", ipv6=Ipv6Naming.OFF)) == (
        "99.2.0.192.x.test"
    )


def test_control_rbls_is_rblsmtpds_options() -> None:
    config = dnsbl.parse_rbls(
        b"# lists\n"
        b"-r zen.example\n"
        b"bare.example.  # a bare zone is -r\n"
        b"-a allow.example ipv6=off\n"
        b"-r six.example ipv6=namespace\n"
        b"-r bad.example ipv6=sideways\n"
        b"-x what\n"
        b"-b\n-c\n-t 0\n-t 30\n-t x\n"
        b"-r late.example\n-B\n-r last.example\n\n"
    )
    # -b and -c count for the lists after them, as rblsmtpd's options do.
    assert config == RblConfig(
        (
            DnsList("zen.example"),
            DnsList("bare.example"),
            DnsList("allow.example", allow=True, ipv6=Ipv6Naming.OFF),
            DnsList("six.example", ipv6=Ipv6Naming.NAMESPACE),
            DnsList("late.example", bounce=True, fail_closed=True),
            DnsList("last.example", fail_closed=True),
        ),
        timeout=30.0,
    )
    assert dnsbl.parse_rbls(b"-b\n-B\n-c\n-C\n") == RblConfig()
    assert dnsbl.parse_rbls(b"-t5\n").timeout == 5.0
    # Digits to str.isdigit() that float() does not take: a bad line, skipped.
    assert dnsbl.parse_rbls("-t \u00b2\n-r x.test\n".encode()) == RblConfig((DnsList("x.test"),))
    assert RblConfig().timeout == 60.0  # rblsmtpd's default


def test_rbls_zones_that_no_lookup_could_use_are_bad_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad = ["a..test", "x" * 64 + ".test", ".".join(["abcdefgh"] * 30), "\u00e9.test", "-x.test",
           "zone\x00.test", "ok.test/24"]  # fmt: skip
    text = "".join(f"-r {zone}\n" for zone in bad) + "-b foo\n-r good-1.example.\n"
    with caplog.at_level("WARNING", logger="quailmail.policy.dnsbl"):
        config = dnsbl.parse_rbls(text.encode())
    assert config == RblConfig((DnsList("good-1.example"),))  # -b foo did not count
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == len(bad) + 1
    assert said[-1] == "control/rbls line 8: -b takes no argument, line skipped"
    assert dnsbl.parse_rbls(("-r " + "a." * 118 + "b\n").encode()).lists  # 237 characters
    assert not dnsbl.parse_rbls(("-r " + "a." * 119 + "b\n").encode()).lists


@pytest.mark.parametrize(
    ("records", "listing"),
    [
        (("127.0.0.2",), Listing.LISTED),
        (("127.0.0.10", "127.0.0.4"), Listing.LISTED),
        (("127.255.255.254",), Listing.NOT_LISTED),  # Spamhaus: public resolver refused
        (("127.255.255.252",), Listing.NOT_LISTED),  # typing error in the zone name
        (("192.0.2.1",), Listing.NOT_LISTED),  # a hijacking resolver's answer
    ],
)
def test_a_listing_is_127_slash_8_without_error_codes(
    records: tuple[str, ...], listing: Listing
) -> None:
    answer: DnsResult[str] = DnsResult(DnsStatus.ANSWER, records)
    assert dnsbl.classify(answer, "2.0.0.127.x.test") is listing
    failed: DnsResult[str] = DnsResult(DnsStatus.TEMPFAIL)
    assert dnsbl.classify(failed, "n") is Listing.ERROR
    missing: DnsResult[str] = DnsResult(DnsStatus.NXDOMAIN)
    assert dnsbl.classify(missing, "n") is Listing.NOT_LISTED


def test_text_is_cut_and_cleaned_as_rblsmtpd_does() -> None:
    assert dnsbl.sanitize("a\tb\x7fc\xe9") == "a?b?c?"
    assert len(dnsbl.sanitize("x" * 500)) == 200


# -- end to end ---------------------------------------------------------------


def _list(zone: Zone, name: str, text: str | None = "listed", a: str = "127.0.0.2") -> None:
    zone.add_a(name, a)
    if text is not None:
        zone.add_txt(name, text)


def _serve(
    server_factory: Callable[..., Running],
    dns: ZoneServer,
    rbls: str,
    rules: str | None = None,
) -> Running:
    def setup(root: Path) -> None:
        control = root / "control"
        (control / "dnsservers").write_text(dns.spec + "\n")
        (control / "rbls").write_text(rbls)
        (control / "proxyfrom").write_text("127.0.0.1\n")  # others connect directly
        (control / "authloopback").write_text("1\n")
        write_rules(root, rules or ":allow\n")

    return server_factory(setup)


def test_rfc5782_test_points_and_the_seeds_namespace_over_smtp(
    server_factory: Callable[..., Running], dns_server: ZoneServer
) -> None:
    zone = dns_server.zone
    for point in POINTS["test_points"]:
        name = point["query_name"].replace("<zone>", "dnsbl.test")
        if point["listed"]:
            _list(zone, name, f"RFC 5782 test point {point.get('address', point.get('name'))}")
    rfc_example = POINTS["query_name_examples"][1]  # 2001:db8:1:2:3:4:567:89ab
    _list(zone, rfc_example["query_name"].replace("<zone>", "dnsbl.test"), "RFC 5782 example")
    _list(zone, SEED_NAME.replace("rbl.example.org", "six.test"), "listed, seeds' naming")
    _list(zone, SEED_NAME.replace(".ipv6.rbl.example.org", ".six.test"), "wrong naming")
    server = _serve(server_factory, dns_server, "-r dnsbl.test\n-r six.test ipv6=namespace\n")

    # 127.0.0.2, the IPv4 test point, connects from its own address.
    listed = finals(talk(server.smtp, source="127.0.0.2"))
    assert listed[0].startswith("220 ") and listed[1].startswith("250 ")
    assert listed[2] == "250 2.1.0 sender ok"  # MAIL, as rblsmtpd takes it
    assert listed[3] == "451 4.7.1 RFC 5782 test point 127.0.0.2"  # RCPT
    assert listed[-1].startswith("221 ")
    # 127.0.0.1 must not be listed (through the PROXY header here).
    clean = finals(talk(server.smtp, proxied="127.0.0.1"))
    assert [line[:3] for line in clean] == ["220", "250", "250", "250", "221"]
    # IPv6 behind the PROXY protocol: the RFC's example address, RFC naming.
    six = finals(talk(server.smtp, proxied="2001:db8:1:2:3:4:567:89ab"))
    assert "451 4.7.1 RFC 5782 example" in six
    # The seeds' address: not in dnsbl.test, listed in six.test under ipv6.
    seed = finals(talk(server.smtp, proxied=SEED_CLIENT))
    assert "451 4.7.1 listed, seeds' naming" in seed
    assert dns_server.count(SEED_NAME.replace("rbl.example.org", "six.test"), "A") == 1
    # A client on ::1 itself, asked by its RFC 5782 name, is not listed.
    direct = finals(talk(server.smtp, host="::1"))
    assert [line[:3] for line in direct] == ["220", "250", "250", "250", "221"]
    loopback6 = POINTS["query_name_examples"][3]["query_name"].replace("<zone>", "dnsbl.test")
    assert dns_server.count(loopback6, "A") == 1


def test_rblsmtpd_variable_from_the_rules(
    server_factory: Callable[..., Running], dns_server: ZoneServer
) -> None:
    _list(dns_server.zone, "2.0.0.127.black.test")
    rules = (
        '127.0.0.2:allow,RBLSMTPD=""\n'  # listed, but the rules skip the lookup
        '127.0.0.3:allow,RBLSMTPD="Go away"\n'
        '127.0.0.4:allow,RBLSMTPD="-Go away for good"\n'
        ":allow\n"
    )
    server = _serve(server_factory, dns_server, "-r black.test\n", rules)
    skipped = finals(talk(server.smtp, source="127.0.0.2"))
    assert [line[:3] for line in skipped] == ["220", "250", "250", "250", "221"]
    assert dns_server.count("2.0.0.127.black.test") == 0
    temporary = finals(talk(server.smtp, source="127.0.0.3"))
    assert temporary[3] == "451 4.7.1 Go away"
    permanent = finals(talk(server.smtp, source="127.0.0.4"))
    assert permanent[3] == "553 5.7.1 Go away for good"
    # rblsmtpd's conversation until QUIT, not a dropped connection: HELO,
    # EHLO, MAIL, RSET and NOOP taken; RCPT, DATA, BDAT, AUTH and STARTTLS
    # refused.  (STARTTLS last: the session drops what is pipelined behind it.)
    script = (
        b"EHLO x\r\nAUTH PLAIN AGpvZQBzM2NyZXQ=\r\nMAIL FROM:<a@example.com>\r\n"
        b"RCPT TO:<postmaster@mx.test>\r\nDATA\r\nBDAT 3 LAST\r\nabcRSET\r\n"
        b"VRFY joe\r\nHELP\r\nXYZZY\r\nMAIL FROM:<b@example.com>\r\nNOOP\r\nSTARTTLS\r\n"
    )
    everything = finals(talk(server.smtp, script, source="127.0.0.3"))
    refused = "451 4.7.1 Go away"
    assert [line[:3] if line != refused else line for line in everything] == [
        "220", "250", refused, "250", refused, refused, refused, "250",
        refused, refused, refused, "250", "250", refused,
    ], everything  # fmt: skip


def test_allow_lists_error_codes_bounce_and_fail_closed(
    server_factory: Callable[..., Running], dns_server: ZoneServer
) -> None:
    zone = dns_server.zone
    _list(zone, "5.0.0.127.black.test", "five is listed")
    _list(zone, "5.0.0.127.white.test", None)
    _list(zone, "6.0.0.127.black.test", "refused", a="127.255.255.254")
    _list(zone, "7.0.0.127.black.test", None)  # listed, no TXT
    zone.set_fault("8.0.0.127.black.test", Fault.SERVFAIL)
    zone.set_fault("5.0.0.127.broken.test", Fault.SERVFAIL)
    server = _serve(server_factory, dns_server, "-a white.test\n-r black.test\n")
    rbls = server.root / "control" / "rbls"

    def reply(source: str, config: str) -> str:
        rbls.write_text(config)
        return finals(talk(server.smtp, source=source))[3]  # RCPT

    assert reply("127.0.0.5", "-a white.test\n-r black.test\n").startswith("250 ")
    assert reply("127.0.0.5", "-r black.test\n-a white.test\n") == "451 4.7.1 five is listed"
    assert reply("127.0.0.6", "-r black.test\n").startswith("250 ")  # an error code
    assert reply("127.0.0.7", "-r black.test\n") == "451 4.7.1 127.0.0.7 is listed in black.test"
    assert reply("127.0.0.5", "-b\n-r black.test\n") == "553 5.7.1 five is listed"
    # Fail open (-C, the default) and closed (-c) when the list cannot answer.
    assert reply("127.0.0.8", "-r black.test\n").startswith("250 ")
    assert reply("127.0.0.8", "-c\n-r black.test\n") == "451 4.7.1 temporary RBL lookup error"
    # After a failed lookup, -b's 553 becomes 451 (rblsmtpd's flagmustnotbounce).
    assert reply("127.0.0.5", "-b\n-r broken.test\n-r black.test\n") == ("451 4.7.1 five is listed")
    # -b and -c count for the lists after them only.
    assert reply("127.0.0.5", "-r black.test\n-b\n") == "451 4.7.1 five is listed"
    assert reply("127.0.0.5", "-b\n-r clean.test\n-B\n-r black.test\n") == (
        "451 4.7.1 five is listed"
    )
    assert reply("127.0.0.8", "-r black.test\n-c\n").startswith("250 ")
    # Several TXT records are one text, as rblsmtpd's dns_txt joins them; an
    # empty one is no text.
    zone.add_txt("9.0.0.127.black.test", "first;")
    _list(zone, "9.0.0.127.black.test", "second;")
    assert reply("127.0.0.9", "-r black.test\n") in (
        "451 4.7.1 first;second;",
        "451 4.7.1 second;first;",  # an RRset has no order
    )
    _list(zone, "10.0.0.127.black.test", "")
    assert reply("127.0.0.10", "-r black.test\n") == (
        "451 4.7.1 127.0.0.10 is listed in black.test"
    )
    # -t 0: the refusal instead of a greeting, and the connection closed.
    rbls.write_text("-t 0\n-r black.test\n")
    with socket.create_connection(
        ("127.0.0.1", server.smtp), timeout=15, source_address=("127.0.0.5", 0)
    ) as sock:
        said = b""
        while chunk := sock.recv(4096):  # the client says nothing
            said += chunk
    assert said == b"451 4.7.1 five is listed\r\n"
    # The refused conversation ends after -t seconds (rblsmtpd: 60), with a 421.
    rbls.write_text("-t 1\n-r black.test\n")
    with socket.create_connection(
        ("127.0.0.1", server.smtp), timeout=15, source_address=("127.0.0.5", 0)
    ) as sock:
        sock.sendall(b"EHLO x\r\n")
        started = time.monotonic()
        received = b""
        while chunk := sock.recv(4096):  # the client says nothing more
            received += chunk
        waited = time.monotonic() - started
    lines = received.decode().splitlines()
    assert lines[0].startswith("220 ") and lines[-1].startswith("421 ")
    assert 0.9 <= waited < 10


# -- Debian's rblsmtpd as the peer ---------------------------------------------------

PEER_DNS = "127.0.0.77"  # djbdns' client asks port 53 of $DNSCACHEIP


def _rblsmtpd_reply(ip: str, options: list[str], rblsmtpd_env: str | None) -> str:
    env = {"PATH": os.environ.get("PATH", ""), "TCPREMOTEIP": ip, "DNSCACHEIP": PEER_DNS}
    if rblsmtpd_env is not None:
        env["RBLSMTPD"] = rblsmtpd_env
    proc = subprocess.run(
        ["rblsmtpd", *options, "echo", "not blocked"],
        input=SESSION,
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    lines = proc.stdout.decode("latin-1").split("\r\n")
    if len(lines) < 4:
        return lines[0]  # not refused: the program's own output
    # Greeting, EHLO, MAIL (250) and the refused RCPT.
    assert lines[2].startswith("250 "), lines
    return lines[3]


@pytest.mark.peer
def test_replies_match_debians_rblsmtpd(server_factory: Callable[..., Running]) -> None:
    """Debian's rblsmtpd (ucspi-tcp-ipv6 0.88; its rblsmtpd has no IPv6
    lookups) and quail serve, same lists, same clients: the same refusal
    (code and text) as the first refusal."""
    if not os.path.exists("/usr/bin/rblsmtpd"):
        pytest.skip("rblsmtpd (ucspi-tcp-ipv6) not installed")
    zone = Zone()
    _list(zone, "2.0.0.127.black.test", "see http://black.test/q?ip=127.0.0.2")
    odd = "x" * 150 + "\tcontrol and caf\xe9 " + "y" * 100  # cut at 200, bytes cleaned
    _list(zone, "3.0.0.127.black.test", odd)
    zone.add_txt("7.0.0.127.black.test", "one;")
    _list(zone, "7.0.0.127.black.test", "two")
    try:
        dns = ZoneServer(zone, bind=(PEER_DNS,), port=53).start()
    except OSError as exc:
        pytest.skip(f"cannot serve DNS on {PEER_DNS}:53: {exc}")
    try:
        _compare_with_rblsmtpd(server_factory, dns)
    finally:
        dns.stop()


def _compare_with_rblsmtpd(server_factory: Callable[..., Running], dns: ZoneServer) -> None:
    rules = '127.0.0.4:allow,RBLSMTPD="Go away"\n127.0.0.5:allow,RBLSMTPD="-Gone"\n:allow\n'
    server = _serve(server_factory, dns, "-r black.test\n", rules)
    rbls = server.root / "control" / "rbls"
    cases = [
        ("127.0.0.2", ["-r", "black.test"], None, "-r black.test\n"),
        ("127.0.0.3", ["-r", "black.test"], None, "-r black.test\n"),
        ("127.0.0.2", ["-b", "-r", "black.test"], None, "-b\n-r black.test\n"),
        ("127.0.0.4", ["-r", "black.test"], "Go away", "-r black.test\n"),
        ("127.0.0.5", ["-r", "black.test"], "-Gone", "-r black.test\n"),
        ("127.0.0.2", ["-r", "black.test", "-b"], None, "-r black.test\n-b\n"),
        ("127.0.0.2", ["-b", "-r", "clean.test", "-B", "-r", "black.test"], None,
         "-b\n-r clean.test\n-B\n-r black.test\n"),
        ("127.0.0.7", ["-r", "black.test"], None, "-r black.test\n"),  # two TXT records
    ]  # fmt: skip
    # Two TXT records are joined; an RRset has no order (RFC 2181 §5.1).
    either = {"451 one;two", "451 twoone;"}
    for ip, options, variable, config in cases:
        theirs = _rblsmtpd_reply(ip, options, variable)
        rbls.write_text(config)
        replies = finals(talk(server.smtp, source=ip))
        assert replies[2].startswith("250 ")  # MAIL, taken by both
        ours = replies[3]  # RCPT: the first refusal
        code, enhanced, text = ours.split(" ", 2)
        assert enhanced[0] == code[0]
        if ip == "127.0.0.7":
            assert {f"{code} {text}", theirs} <= either, (ours, theirs)
        else:
            assert f"{code} {text}" == theirs, (ip, options)
    # Not listed: both let the client through.
    assert _rblsmtpd_reply("127.0.0.6", ["-r", "black.test"], None).strip() == "not blocked"
    rbls.write_text("-r black.test\n")
    assert finals(talk(server.smtp, source="127.0.0.6"))[3].startswith("250 ")  # RCPT
