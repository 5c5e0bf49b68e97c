"""`quail sign` and `quail verify` end to end: real processes, real DNS on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from quailmail.auth.keys import generate, private_key_pem, record_value
from quailmail.dns.zoneserver import ZoneServer

QUAIL = str(Path(sys.executable).with_name("quail"))
MESSAGE = (
    b"From: Joe <joe@example.com>\r\n"
    b"To: Suzie <suzie@example.net>\r\n"
    b"Subject: dinner\r\n"
    b"Date: Fri, 11 Jul 2003 21:00:37 -0700\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"\r\n"
    b"Hi.\r\n"
)


def quail(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run([QUAIL, *args], input=stdin, capture_output=True, check=False)
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()
    return proc


@pytest.fixture
def keyed(tmp_path: Path, dns_server: ZoneServer) -> tuple[Path, ZoneServer]:
    """A key file named like the seeds' (…/example.com/default), published."""
    directory = tmp_path / "example.com"
    directory.mkdir()
    key = generate("rsa", 1024)
    path = directory / "default"
    path.write_bytes(private_key_pem(key))
    dns_server.zone.add_txt("default._domainkey.example.com", record_value(key))
    dns_server.zone.add_txt("_domainkey.example.com", "o=-")
    return path, dns_server


def test_sign_both_then_verify_prints_authentication_results(
    tmp_path: Path, keyed: tuple[Path, ZoneServer]
) -> None:
    key, server = keyed
    signed = quail("sign", "--key", str(key), "--dkim", "--domainkeys", stdin=MESSAGE)
    assert signed.returncode == 0, signed.stderr
    assert signed.stdout.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;")
    assert b"\r\nDomainKey-Signature: a=rsa-sha1; c=simple; d=example.com;" in signed.stdout
    assert signed.stdout.endswith(MESSAGE)
    path = tmp_path / "signed.eml"
    path.write_bytes(signed.stdout)
    out = quail("verify", "--dns", server.spec, "--authserv-id", "mx.test", str(path))
    assert out.returncode == 0, out.stderr
    line = out.stdout.decode().strip()
    assert line.startswith(
        "Authentication-Results: mx.test; domainkeys=pass (ok) header.d=example.com"
    )
    assert "; dkim=pass (ok) header.d=example.com header.s=default header.b=" in line


def test_verify_json_shape_and_letters(tmp_path: Path, keyed: tuple[Path, ZoneServer]) -> None:
    key, server = keyed
    signed = quail("sign", "--key", str(key), "--dkim", "--domainkeys", stdin=MESSAGE).stdout
    good = tmp_path / "good.eml"
    good.write_bytes(signed)
    bad = tmp_path / "bad.eml"
    bad.write_bytes(signed.replace(b"Hi.", b"Ho."))
    plain = tmp_path / "plain.eml"
    plain.write_bytes(MESSAGE)
    out = quail("verify", "--json", "--dns", server.spec, str(good), str(bad), str(plain))
    assert out.returncode == 0
    rows = [json.loads(line) for line in out.stdout.decode().splitlines()]
    assert [r["file"] for r in rows] == [str(good), str(bad), str(plain)]
    assert rows[0]["dkim"]["code"] == "A" and rows[0]["domainkeys"]["code"] == "A"
    assert rows[0]["dkim"]["signatures"] == [
        {
            "domain": "example.com",
            "selector": "default",
            "algorithm": "rsa-sha256",
            "result": "pass",
            "code": "A",
            "reason": "ok",
        }
    ]
    assert rows[0]["domainkeys"] == {
        "result": "pass", "code": "A", "reason": "ok", "domain": "example.com",
        "selector": "default",
    }  # fmt: skip
    assert (rows[1]["dkim"]["code"], rows[1]["dkim"]["result"]) == ("P", "fail")
    assert (rows[1]["domainkeys"]["code"], rows[1]["domainkeys"]["result"]) == ("B", "fail")
    assert (rows[2]["dkim"]["code"], rows[2]["dkim"]["result"]) == ("N", "none")
    assert rows[2]["domainkeys"]["code"] == "C"
    assert "o=-" in rows[2]["domainkeys"]["reason"]


def test_unreadable_input_exits_2_after_judging_the_rest(
    tmp_path: Path, keyed: tuple[Path, ZoneServer]
) -> None:
    _, server = keyed
    plain = tmp_path / "plain.eml"
    plain.write_bytes(MESSAGE)
    out = quail("verify", "--dns", server.spec, str(tmp_path / "missing.eml"), str(plain))
    assert out.returncode == 2
    assert out.stderr.decode().count("\n") == 1 and "missing.eml" in out.stderr.decode()
    assert b"dkim=none" in out.stdout


def test_root_supplies_dns_servers_and_authserv_id(
    tmp_path: Path, keyed: tuple[Path, ZoneServer]
) -> None:
    key, server = keyed
    root = tmp_path / "root"
    (root / "control").mkdir(parents=True)
    (root / "control" / "me").write_text("mail.example.org\n")
    (root / "control" / "dnsservers").write_text(f"# test server\n{server.spec}\n")
    signed = tmp_path / "s.eml"
    signed.write_bytes(quail("sign", "--key", str(key), stdin=MESSAGE).stdout)
    out = quail("verify", "--root", str(root), str(signed))
    assert out.stdout.decode().startswith(
        "Authentication-Results: mail.example.org; domainkeys=none"
    )
    assert "dkim=pass" in out.stdout.decode()


def test_at_judges_expiry_at_the_given_time(tmp_path: Path, keyed: tuple[Path, ZoneServer]) -> None:
    key, server = keyed
    args = ["sign", "--key", str(key), "--timestamp", "1000000000", "--expire", "1000003600"]
    signed = tmp_path / "s.eml"
    signed.write_bytes(quail(*args, stdin=MESSAGE).stdout)
    base = ["verify", "--json", "--dns", server.spec]
    early = json.loads(quail(*base, "--at", "1000000100", str(signed)).stdout)
    late = json.loads(quail(*base, "--at", "1000007200", str(signed)).stdout)
    assert early["dkim"]["code"] == "A"
    assert late["dkim"]["code"] == "F"


def test_ed25519_and_explicit_selector_domain_and_headers(
    tmp_path: Path, dns_server: ZoneServer
) -> None:
    key = generate("ed25519")
    path = tmp_path / "edkey"
    path.write_bytes(private_key_pem(key))
    dns_server.zone.add_txt("brisbane._domainkey.example.org", record_value(key))
    signed = quail(
        "sign", "--key", str(path), "--selector", "brisbane", "--domain", "example.org",
        "--headers", "from:subject:date", "--canon", "simple/simple", stdin=MESSAGE,
    )  # fmt: skip
    assert b"a=ed25519-sha256; c=simple/simple; d=example.org; s=brisbane;" in signed.stdout
    assert b"h=from:subject:date;" in signed.stdout
    out = quail("verify", "--json", "--dns", dns_server.spec, "-", stdin=signed.stdout)
    assert json.loads(out.stdout)["dkim"]["signatures"][0]["result"] == "pass"


def test_sign_errors_are_one_line(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"not a key\n")
    out = quail("sign", "--key", str(garbage), stdin=MESSAGE)
    assert out.returncode != 0 and out.stderr.count(b"\n") == 1
    assert b"not a private key" in out.stderr
    key = tmp_path / "k"
    key.write_bytes(private_key_pem(generate("rsa", 1024)))
    out = quail("sign", "--key", str(key), stdin=b"Subject: no sender\r\n\r\nbody\r\n")
    assert out.returncode == 1 and out.stderr.count(b"\n") == 1
    assert b"From" in out.stderr
    out = quail("sign", "--key", str(tmp_path / "absent"), stdin=MESSAGE)
    assert out.returncode == 2 and b"cannot read key" in out.stderr


def test_bad_dns_server_argument_is_one_line() -> None:
    out = quail("verify", "--dns", "not an address!", "-", stdin=MESSAGE)
    assert out.returncode == 2
    assert out.stderr.count(b"\n") == 1
