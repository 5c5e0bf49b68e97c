"""The test DNS server, checked on the wire with dnspython's own client."""

from __future__ import annotations

import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from dns.rdataclass import IN
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.ANY.TXT import TXT

from quailmail.dns.zoneserver import Fault, Zone, ZoneServer

from dnsfixtures import has_ipv6_loopback

KEY = "sel._domainkey.example.com"
LONG = b"p=" + b"A" * 700


def ask(
    server: ZoneServer,
    name: str,
    rdtype: str = "TXT",
    *,
    tcp: bool = False,
    payload: int | None = None,
    timeout: float = 2.0,
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, use_edns=payload is not None, payload=payload or 0)
    if tcp:
        return dns.query.tcp(query, server.address, timeout=timeout, port=server.port)
    return dns.query.udp(query, server.address, timeout=timeout, port=server.port)


def strings(rrset: dns.rrset.RRset) -> list[tuple[bytes, ...]]:
    return sorted(tuple(rd.strings) for rd in rrset if isinstance(rd, TXT))


def soa_minimum(response: dns.message.Message) -> int:
    (rrset,) = response.authority
    soa = rrset[0]
    assert isinstance(soa, SOA)
    return min(rrset.ttl, soa.minimum)


# -- answers and negative answers ------------------------------------------------------


def test_answer_is_authoritative_and_case_insensitive(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt(KEY, "v=DKIM1; p=")
    response = ask(dns_server, "SEL._DomainKey.EXAMPLE.com")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert strings(response.answer[0]) == [(b"v=DKIM1; p=",)]


def test_nxdomain_and_nodata_carry_the_soa(start_dns_server: Callable[..., ZoneServer]) -> None:
    server = start_dns_server(Zone(soa_ttl=600, soa_minimum=42))
    server.zone.add_txt(KEY, "v=DKIM1; p=")
    nxdomain = ask(server, "other._domainkey.example.com")
    assert nxdomain.rcode() == dns.rcode.NXDOMAIN
    assert nxdomain.answer == []
    assert soa_minimum(nxdomain) == 42
    for name, rdtype in [(KEY, "A"), ("_domainkey.example.com", "TXT"), ("example.com", "MX")]:
        nodata = ask(server, name, rdtype)
        assert (nodata.rcode(), nodata.answer) == (dns.rcode.NOERROR, []), name
        assert soa_minimum(nodata) == 42


def test_the_root_zone_answers_its_soa_and_ns(dns_server: ZoneServer) -> None:
    assert ask(dns_server, ".", "SOA").answer[0].rdtype == dns.rdatatype.SOA
    assert ask(dns_server, ".", "NS").answer[0].rdtype == dns.rdatatype.NS


def test_names_outside_a_smaller_origin_are_refused(
    start_dns_server: Callable[..., ZoneServer],
) -> None:
    server = start_dns_server(Zone("example.com"))
    assert ask(server, "example.org").rcode() == dns.rcode.REFUSED
    assert ask(server, "x.example.com").rcode() == dns.rcode.NXDOMAIN
    with pytest.raises(ValueError, match="outside the zone"):
        server.zone.add_txt("example.org", "x")


def test_cname_chain_and_dangling_cname(dns_server: ZoneServer) -> None:
    dns_server.zone.add_cname("alias.example.com", "real.example.com")
    dns_server.zone.add_txt("real.example.com", "here")
    dns_server.zone.add_cname("dangling.example.com", "gone.example.com")
    chained = ask(dns_server, "alias.example.com")
    assert [r.rdtype for r in chained.answer] == [dns.rdatatype.CNAME, dns.rdatatype.TXT]
    dangling = ask(dns_server, "dangling.example.com")
    assert dangling.rcode() == dns.rcode.NXDOMAIN  # RFC 6604: about the chain's last name
    assert ask(dns_server, "alias.example.com", "CNAME").answer[0].rdtype == dns.rdatatype.CNAME


# -- TXT strings and truncation --------------------------------------------------------------


def test_long_txt_is_cut_into_255_octet_strings(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt(KEY, LONG)
    dns_server.zone.add_txt("empty.example.com", b"")
    dns_server.zone.add_txt("given.example.com", ["v=spf1 ", "-all"])
    ((long,),) = [strings(ask(dns_server, KEY, tcp=True).answer[0])]
    assert [len(s) for s in long] == [255, 255, 192]
    assert b"".join(long) == LONG
    assert strings(ask(dns_server, "empty.example.com").answer[0]) == [(b"",)]
    assert strings(ask(dns_server, "given.example.com").answer[0]) == [(b"v=spf1 ", b"-all")]


def test_udp_truncates_past_512_or_the_edns_payload(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt(KEY, LONG)
    plain = ask(dns_server, KEY)
    assert plain.flags & dns.flags.TC
    assert (plain.answer, plain.authority) == ([], [])
    small_edns = ask(dns_server, KEY, payload=512)
    assert small_edns.flags & dns.flags.TC
    big_edns = ask(dns_server, KEY, payload=1232)
    assert not big_edns.flags & dns.flags.TC
    assert b"".join(strings(big_edns.answer[0])[0]) == LONG
    over_tcp = ask(dns_server, KEY, tcp=True)
    assert not over_tcp.flags & dns.flags.TC
    assert [q.transport for q in dns_server.queries] == ["udp", "udp", "udp", "tcp"]


def test_tcp_serves_several_queries_on_one_connection(dns_server: ZoneServer) -> None:
    dns_server.zone.add_a("a.example.com", "192.0.2.1")
    with socket.create_connection((dns_server.address, dns_server.port), timeout=2) as sock:
        for query_id in (1, 2):
            query = dns.message.make_query("a.example.com", "A", id=query_id)
            wire = query.to_wire()
            sock.sendall(struct.pack("!H", len(wire)) + wire)
        for query_id in (1, 2):
            (length,) = struct.unpack("!H", sock.recv(2, socket.MSG_WAITALL))
            response = dns.message.from_wire(sock.recv(length, socket.MSG_WAITALL))
            assert response.id == query_id
            assert response.answer[0][0].to_text() == "192.0.2.1"


def test_stop_closes_open_tcp_connections(start_dns_server: Callable[..., ZoneServer]) -> None:
    server = start_dns_server()
    with socket.create_connection((server.address, server.port), timeout=2) as sock:
        server.stop()
        assert sock.recv(1) == b""  # closed by the server, stop() did not hang


# -- faults -------------------------------------------------------------------------------------


def test_faults_per_name(dns_server: ZoneServer) -> None:
    zone = dns_server.zone
    zone.add_txt(KEY, "v=DKIM1; p=")
    zone.set_fault("servfail.example.com", Fault.SERVFAIL)
    zone.set_fault("refused.example.com", Fault.REFUSED)
    zone.set_fault("silent.example.com", Fault.TIMEOUT)
    assert ask(dns_server, "servfail.example.com").rcode() == dns.rcode.SERVFAIL
    assert ask(dns_server, "refused.example.com", "A").rcode() == dns.rcode.REFUSED
    with pytest.raises(dns.exception.Timeout):
        ask(dns_server, "silent.example.com", timeout=0.1)
    zone.set_fault(KEY, Fault.SERVFAIL)
    assert ask(dns_server, KEY).rcode() == dns.rcode.SERVFAIL
    zone.set_fault(KEY, None)
    assert ask(dns_server, KEY).rcode() == dns.rcode.NOERROR
    assert dns_server.count("silent.example.com") == 1
    assert dns_server.count(rdtype="A") == 1


def test_fault_per_type(dns_server: ZoneServer) -> None:
    """A server that drops TXT (or type SPF) questions but answers A, as the
    RFC 7208 suite's "txttimeout" scenario has it; the type's fault wins."""
    zone = dns_server.zone
    name = "txttimeout.example.net"
    zone.add_a(name, "192.0.2.1")
    zone.add_txt(name, "v=spf1 -all")
    zone.set_fault(name, Fault.TIMEOUT, "TXT")
    assert ask(dns_server, name, "A").rcode() == dns.rcode.NOERROR
    with pytest.raises(dns.exception.Timeout):
        ask(dns_server, name, timeout=0.1)
    zone.set_fault(name, Fault.SERVFAIL)  # the whole name ...
    zone.set_fault(name, Fault.REFUSED, dns.rdatatype.TXT)  # ... but TXT differs
    assert ask(dns_server, name, "A").rcode() == dns.rcode.SERVFAIL
    assert ask(dns_server, name).rcode() == dns.rcode.REFUSED
    zone.set_fault(name, None, "TXT")
    assert ask(dns_server, name).rcode() == dns.rcode.SERVFAIL
    zone.set_fault(name, None)
    assert strings(ask(dns_server, name).answer[0]) == [(b"v=spf1 -all",)]
    zone.set_fault(name, Fault.TIMEOUT, "MX")
    zone.clear()  # faults go with the records
    assert ask(dns_server, name, "MX").rcode() == dns.rcode.NXDOMAIN


def test_records_of_type_spf(dns_server: ZoneServer) -> None:
    """Type SPF (99, RFC 4408 §3.1.1) is served apart from TXT."""
    zone = dns_server.zone
    zone.add_spf("spfonly.example.net", ["v=spf1 ", "-all"])
    (rrset,) = ask(dns_server, "spfonly.example.net", "SPF").answer
    assert rrset.rdtype == dns.rdatatype.SPF
    assert [tuple(rd.strings) for rd in rrset] == [(b"v=spf1 ", b"-all")]
    nodata = ask(dns_server, "spfonly.example.net", "TXT")
    assert nodata.rcode() == dns.rcode.NOERROR
    assert nodata.answer == []


def test_zone_changes_while_running(dns_server: ZoneServer) -> None:
    dns_server.zone.add_txt(KEY, "old")
    assert strings(ask(dns_server, KEY).answer[0]) == [(b"old",)]
    dns_server.zone.remove(KEY, "TXT")
    dns_server.zone.add_txt(KEY, "new")
    assert strings(ask(dns_server, KEY).answer[0]) == [(b"new",)]
    dns_server.zone.clear()
    assert ask(dns_server, KEY).rcode() == dns.rcode.NXDOMAIN
    assert ask(dns_server, "_domainkey.example.com").rcode() == dns.rcode.NXDOMAIN


def test_garbage_is_ignored(dns_server: ZoneServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"\x00\x01garbage", (dns_server.address, dns_server.port))
    dns_server.zone.add_a("a.example.com", "192.0.2.1")
    assert ask(dns_server, "a.example.com", "A").rcode() == dns.rcode.NOERROR
    assert len(dns_server.queries) == 1


def test_what_an_authoritative_server_does_not_do(dns_server: ZoneServer) -> None:
    def send(query: dns.message.Message) -> dns.message.Message:
        return dns.query.udp(query, dns_server.address, timeout=2, port=dns_server.port)

    chaos = dns.message.make_query("version.bind", "TXT", rdclass="CH")
    assert send(chaos).rcode() == dns.rcode.REFUSED
    notify = dns.message.make_query("example.com", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    assert send(notify).rcode() == dns.rcode.NOTIMP
    two = dns.message.make_query("example.com", "A")
    two.find_rrset(
        two.question, _name("example.org"), IN, dns.rdatatype.A, create=True, force_unique=True
    )
    assert send(two).rcode() == dns.rcode.FORMERR


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_both_loopbacks_on_one_port(start_dns_server: Callable[..., ZoneServer]) -> None:
    server = start_dns_server(bind=("127.0.0.1", "::1"))
    server.zone.add_a("a.example.com", "192.0.2.1")
    query = dns.message.make_query("a.example.com", "A")
    for host, port in server.addresses:
        assert dns.query.udp(query, host, timeout=2, port=port).answer
        assert dns.query.tcp(query, host, timeout=2, port=port).answer
    assert {port for _host, port in server.addresses} == {server.port}


# -- loaders ---------------------------------------------------------------------------------------


KEYTABLE = """\
# Mail::DKIM t/FAKE_DNS.dat style
; also a comment
sel._domainkey.example.com  v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQ
gone._domainkey.example.com  NXDOMAIN
slow._domainkey.example.com  ~~Query timed out~~
broken._domainkey.example.com  ~~SERVFAIL~~
odd._domainkey.example.com  ~~no such server~~
empty._domainkey.example.com  ""
"""


def test_keytable(tmp_path: Path, keytable_dns_server: Callable[[Path], ZoneServer]) -> None:
    path = tmp_path / "keys.dns"
    path.write_text(KEYTABLE)
    server = keytable_dns_server(path)
    answer = ask(server, "sel._domainkey.example.com").answer[0]
    assert strings(answer) == [(b"v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQ",)]
    assert ask(server, "gone._domainkey.example.com").rcode() == dns.rcode.NXDOMAIN
    with pytest.raises(dns.exception.Timeout):
        ask(server, "slow._domainkey.example.com", timeout=0.1)
    assert ask(server, "broken._domainkey.example.com").rcode() == dns.rcode.SERVFAIL
    assert ask(server, "odd._domainkey.example.com").rcode() == dns.rcode.SERVFAIL
    assert strings(ask(server, "empty._domainkey.example.com").answer[0]) == [(b"",)]


def test_keytable_errors_name_the_line() -> None:
    with pytest.raises(ValueError, match="key table line 2: expected NAME VALUE"):
        Zone().load_keytable("# ok\nlonely.example.com\n")


def test_text_format() -> None:
    zone = Zone.from_text(
        """\
        # NAME [TTL] TYPE VALUE
        example.com MX 10 mx.example.com
        example.com 60 TXT "v=spf1 " "-all"
        mx.example.com A 192.0.2.25
        mx.example.com AAAA 2001:db8::25
        25.2.0.192.in-addr.arpa PTR mx.example.com
        www.example.com CNAME example.com
        long.example.com TXT v=DKIM1;  p=two  spaces kept
        x.example.com SERVFAIL
        y.example.com TIMEOUT
        z.example.com REFUSED
        """
    )
    (mx,) = zone.lookup(_name("example.com"), dns.rdatatype.MX).answer
    assert mx[0].to_text() == "10 mx.example.com."
    (txt,) = zone.lookup(_name("example.com"), dns.rdatatype.TXT).answer
    assert (strings(txt), txt.ttl) == ([(b"v=spf1 ", b"-all")], 60)
    (long,) = zone.lookup(_name("long.example.com"), dns.rdatatype.TXT).answer
    assert strings(long) == [(b"v=DKIM1;  p=two  spaces kept",)]
    assert zone.lookup(_name("25.2.0.192.in-addr.arpa"), dns.rdatatype.PTR).answer
    assert len(zone.lookup(_name("www.example.com"), dns.rdatatype.MX).answer) == 2
    assert zone.lookup(_name("x.example.com"), dns.rdatatype.A).fault is Fault.SERVFAIL
    assert zone.lookup(_name("y.example.com"), dns.rdatatype.A).fault is Fault.TIMEOUT
    assert zone.lookup(_name("z.example.com"), dns.rdatatype.A).fault is Fault.REFUSED
    with pytest.raises(ValueError, match="zone line 1: "):
        Zone.from_text("example.com A not-an-address\n")
    with pytest.raises(ValueError, match="zone line 2: expected NAME"):
        Zone.from_text("\nexample.com\n")


def test_tinydns_lines() -> None:
    zone = Zone.from_tinydns(
        "# tinydns-data\n"
        "'sample.com:v=spf1 ip4\\07269.36.226.12 include\\072emailcenterpro.com ~all:3600\n"
        "'default._domainkey.sample.com.:k=rsa; p=MHwwDQ;:3600\n"
        "+host.sample.com:192.0.2.1\n"
        "=both.sample.com:192.0.2.2:600\n"
        "@sample.com:192.0.2.3:mail:5\n"
        "3v6.sample.com:20010db8000000000000000000000025\n"
        "Cwww.sample.com:sample.com\n"
        ":raw.sample.com:16:\\003abc:300\n"
        ".sample.com::ns1.sample.com\n"
        "Zsample.com:ns1.sample.com.:hostmaster.sample.com.\n"
    )

    def answer(name: str, rdtype: dns.rdatatype.RdataType) -> dns.rrset.RRset:
        (rrset,) = zone.lookup(_name(name), rdtype).answer
        return rrset

    spf = answer("sample.com", dns.rdatatype.TXT)
    assert strings(spf) == [(b"v=spf1 ip4:69.36.226.12 include:emailcenterpro.com ~all",)]
    assert spf.ttl == 3600
    assert strings(answer("default._domainkey.sample.com", dns.rdatatype.TXT)) == [
        (b"k=rsa; p=MHwwDQ;",)
    ]
    assert answer("host.sample.com", dns.rdatatype.A)[0].to_text() == "192.0.2.1"
    assert answer("2.2.0.192.in-addr.arpa", dns.rdatatype.PTR)[0].to_text() == "both.sample.com."
    assert answer("sample.com", dns.rdatatype.MX)[0].to_text() == "5 mail.mx.sample.com."
    assert answer("mail.mx.sample.com", dns.rdatatype.A)[0].to_text() == "192.0.2.3"
    assert answer("v6.sample.com", dns.rdatatype.AAAA)[0].to_text() == "2001:db8::25"
    assert answer("www.sample.com", dns.rdatatype.CNAME)[0].to_text() == "sample.com."
    assert strings(answer("raw.sample.com", dns.rdatatype.TXT)) == [(b"abc",)]
    with pytest.raises(ValueError, match="tinydns line 1: unknown line type '!'"):
        Zone.from_tinydns("!odd.sample.com:x\n")


def _name(text: str) -> dns.name.Name:
    return dns.name.from_text(text)


# -- standalone ------------------------------------------------------------------------------------


def test_standalone_server_prints_its_port_and_stops_on_sigterm(tmp_path: Path) -> None:
    keys = tmp_path / "keys.dns"
    keys.write_text("sel._domainkey.example.com  v=DKIM1; p=\n")
    zone = tmp_path / "zone.txt"
    zone.write_text("example.com MX 10 mx.example.com\n")
    command = [sys.executable, "-m", "quailmail.dns.zoneserver"]
    with subprocess.Popen(
        [*command, "--keytable", str(keys), "--zone", str(zone)],
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        query = dns.message.make_query(KEY, "TXT")
        response = dns.query.udp(query, "127.0.0.1", timeout=2, port=port)
        assert strings(response.answer[0]) == [(b"v=DKIM1; p=",)]
        query = dns.message.make_query("example.com", "MX")
        assert dns.query.tcp(query, "127.0.0.1", timeout=2, port=port).answer
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0


def test_standalone_server_reports_a_bad_file_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "zone.txt"
    bad.write_text("example.com A 999.1.1.1\n")
    done = subprocess.run(
        [sys.executable, "-m", "quailmail.dns.zoneserver", "--zone", str(bad)],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert done.returncode == 111
    assert done.stderr.startswith("zoneserver: zone line 1: ")
    assert done.stderr.count("\n") == 1
