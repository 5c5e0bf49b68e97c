"""`quail check-dns` end to end: the seeds' own records and broken variants,
served by the loopback DNS server, read by the real command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from quailmail.auth.keys import generate, private_key_pem, record_value
from quailmail.dns.zoneserver import ZoneServer

QUAIL = str(Path(sys.executable).with_name("quail"))
SEEDS = Path(__file__).parent / "data" / "seeds" / "sample.com.tinydns"


def check(server: ZoneServer, *args: str) -> tuple[int, list[dict[str, Any]]]:
    proc = subprocess.run(
        [QUAIL, "check-dns", "--json", "--dns", server.spec, *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def by(findings: list[dict[str, Any]], check_name: str) -> list[tuple[str, str]]:
    return [(f["level"], f["reason"]) for f in findings if f["check"] == check_name]


@pytest.fixture
def seeds(dns_server: ZoneServer) -> ZoneServer:
    dns_server.zone.load_tinydns(SEEDS.read_text())
    dns_server.zone.add_txt("emailcenterpro.com", "v=spf1 ip4:192.0.2.64/26 -all")
    dns_server.zone.add_mx("sample.com", 10, "mail.sample.com")
    dns_server.zone.add_a("mail.sample.com", "69.36.226.12")
    return dns_server


def test_the_seeds_records(seeds: ZoneServer) -> None:
    code, findings = check(seeds, "sample.com", "--selector", "default")
    assert code == 1  # the 768-bit key
    spf = by(findings, "spf")
    assert spf[0][0] == "warning" and spf[0][1].startswith("~all")
    assert spf[1] == ("ok", "1 of 10 DNS lookups")  # the include
    assert findings[0]["record"] == "v=spf1 ip4:69.36.226.12 include:emailcenterpro.com ~all"
    assert by(findings, "senderid")[0][0] == "ok"
    assert by(findings, "dkim") == [("error", "768-bit RSA key: verifiers refuse it (RFC 8301)")]
    assert by(findings, "domainkeys") == [("ok", "domain signs all mail (o=-)")]
    assert by(findings, "adsp") == [("ok", "dkim=all: all mail is signed by the domain")]
    assert by(findings, "dmarc")[0][0] == "warning"
    assert by(findings, "mx") == [
        ("ok", "1 MX host(s)"),
        ("warning", "IPv4 only: no AAAA record"),
    ]


def test_the_384_bit_dkim1_key_of_mail_sample_com_is_broken(seeds: ZoneServer) -> None:
    code, findings = check(seeds, "mail.sample.com", "--selector", "dkim1")
    assert code == 1
    assert by(findings, "dkim") == [("error", "384-bit RSA key: broken, factorable")]
    assert by(findings, "adsp")[0][0] == "ok"


def test_include_without_a_record_is_an_error(dns_server: ZoneServer) -> None:
    dns_server.zone.load_tinydns(SEEDS.read_text())  # emailcenterpro.com not published
    _, findings = check(dns_server, "sample.com", "--selector", "default")
    reasons = " ".join(reason for level, reason in by(findings, "spf") if level == "error")
    assert "permerror" in reasons and "emailcenterpro.com" in reasons


def test_a_clean_domain_passes_and_the_key_matches(tmp_path: Path, dns_server: ZoneServer) -> None:
    key = generate("rsa", 2048)
    key_file = tmp_path / "mail2026"
    key_file.write_bytes(private_key_pem(key))
    zone = dns_server.zone
    zone.add_txt("example.org", "v=spf1 mx ip6:2001:db8::/32 -all")
    zone.add_txt("mail2026._domainkey.example.org", record_value(key))
    zone.add_txt("_dmarc.example.org", "v=DMARC1; p=reject; rua=mailto:dmarc@example.org")
    zone.add_mx("example.org", 10, "mx.example.org")
    zone.add_a("mx.example.org", "192.0.2.25")
    zone.add_aaaa("mx.example.org", "2001:db8::25")
    code, findings = check(dns_server, "example.org", "--key", str(key_file))
    assert code == 0, findings
    assert by(findings, "spf") == [
        ("ok", "-all: mail from unlisted hosts fails"),
        ("ok", "1 of 10 DNS lookups"),
    ]
    assert by(findings, "dkim") == [
        ("ok", "2048-bit RSA key"),
        ("ok", "p= matches the private key"),
    ]
    assert by(findings, "dmarc") == [("ok", "p=reject sp=reject pct=100")]
    assert by(findings, "mx")[1] == ("ok", "reachable over IPv6 and IPv4")
    assert all(f["level"] != "error" for f in findings)


def test_broken_variants(tmp_path: Path, dns_server: ZoneServer) -> None:
    zone = dns_server.zone
    zone.add_txt("bad.example", "v=spf1 +all")
    zone.add_txt("bad.example", "v=spf1 -all")  # two records
    zone.add_txt("plus.example", "v=spf1 a +all")
    chain = " ".join(f"include:i{n}.example" for n in range(11))
    zone.add_txt("deep.example", f"v=spf1 {chain} -all")
    for n in range(11):
        zone.add_txt(f"i{n}.example", "v=spf1 ip4:192.0.2.200 -all")
    zone.add_txt("plus.example", "spf2.0/pra ip4:192.0.2.1 -all")
    zone.add_txt("plus.example", "spf2.0/pra ip4:192.0.2.2 -all")
    zone.add_txt("default._domainkey.plus.example", "v=DKIM1; k=rsa; p=")
    zone.add_txt("_domainkey.plus.example", "t=y; o=-")
    zone.add_txt("_dmarc.plus.example", "v=DMARC1; p=none; rua=mailto:reports@elsewhere.example")
    zone.add_mx("plus.example", 10, "nowhere.plus.example")

    code, findings = check(dns_server, "bad.example")
    assert code == 1
    assert by(findings, "spf")[0][0] == "error" and "2 v=spf1 records" in by(findings, "spf")[0][1]

    code, findings = check(dns_server, "deep.example")
    assert code == 1
    assert ("error", "11 DNS lookups, over the limit of 10 (§4.6.4)") in by(findings, "spf")

    other = generate("rsa", 1024)
    wrong = tmp_path / "default"
    wrong.write_bytes(private_key_pem(other))
    code, findings = check(dns_server, "plus.example", "--key", str(wrong))
    assert code == 1
    levels = {(f["check"], f["level"]) for f in findings}
    assert ("spf", "error") in levels  # +all
    assert by(findings, "spf")[0][1].startswith("+all")
    assert ("error", "2 spf2.0 records for scope pra: permerror") in by(findings, "senderid")
    assert by(findings, "dkim") == [("warning", "key revoked (empty p=): signatures with it fail")]
    assert ("warning", "t=y left on: receivers ignore the policy") in by(findings, "domainkeys")
    dmarc = by(findings, "dmarc")
    assert dmarc[0] == ("warning", "p=none sp=none pct=100: monitoring only")
    assert dmarc[-1][0] == "error" and "elsewhere.example does not authorize" in dmarc[-1][1]
    assert by(findings, "mx")[-1][0] == "error"


def test_null_mx_and_text_output(dns_server: ZoneServer) -> None:
    dns_server.zone.add_mx("nomail.example", 0, ".")
    dns_server.zone.add_txt("nomail.example", "v=spf1 -all")
    proc = subprocess.run(
        [QUAIL, "check-dns", "--dns", dns_server.spec, "nomail.example"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "null MX: the domain accepts no mail (RFC 7505)" in proc.stdout
    assert proc.stdout.splitlines()[-1].endswith("errors")


def test_bad_arguments_are_one_line(tmp_path: Path) -> None:
    for args in (["not a domain!"], ["example.org", "--key", str(tmp_path / "missing")]):
        proc = subprocess.run(
            [QUAIL, "check-dns", *args], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
