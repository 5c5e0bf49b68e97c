"""`quail spf` end to end: a real process, real DNS on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from quailmail.dns.zoneserver import ZoneServer

QUAIL = str(Path(sys.executable).with_name("quail"))


def quail(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([QUAIL, "spf", *args], capture_output=True, text=True, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture
def server(dns_server: ZoneServer) -> ZoneServer:
    zone = dns_server.zone
    zone.add_txt(
        "example.com", "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all exp=why.example.com"
    )
    zone.add_txt("why.example.com", "%{i} is not a mail server of %{d}")
    zone.add_txt("mx.example.org", "v=spf1 a ?all")
    zone.add_a("mx.example.org", "198.51.100.25")
    return dns_server


def test_pass_prints_result_and_received_spf(server: ZoneServer) -> None:
    out = quail("--ip", "192.0.2.1", "--sender", "joe@example.com", "--helo", "mx.example.org",
                "--receiver", "mx.test", "--dns", server.spec)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "pass",
        "Received-SPF: pass (mx.test: domain of joe@example.com designates 192.0.2.1 as "
        'permitted sender) receiver=mx.test; client-ip=192.0.2.1; envelope-from="joe@example.com"; '
        'helo=mx.example.org; identity=mailfrom; mechanism="ip4:192.0.2.0/24";',
    ]


def test_fail_prints_the_explanation(server: ZoneServer) -> None:
    out = quail("--ip", "203.0.113.9", "--sender", "joe@example.com", "--dns", server.spec)
    assert out.returncode == 0  # whatever the verdict
    lines = out.stdout.splitlines()
    assert lines[:2] == ["fail", "203.0.113.9 is not a mail server of example.com"]
    assert lines[2].startswith("Received-SPF: fail (")
    assert "mechanism=-all;" in lines[2]


def test_json_shape_and_mapped_ipv6(server: ZoneServer) -> None:
    out = quail("--ip", "::ffff:192.0.2.7", "--sender", "joe@example.com", "--json",
                "--dns", server.spec)  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data) == {"result", "explanation", "mechanism", "received_spf"}
    assert (data["result"], data["explanation"], data["mechanism"]) == (
        "pass",
        "",
        "ip4:192.0.2.0/24",
    )
    assert "client-ip=192.0.2.7;" in data["received_spf"]


def test_null_sender_and_helo_only(server: ZoneServer, tmp_path: Path) -> None:
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / "me").write_text("mx.from-control.test\n")
    null = quail("--ip", "198.51.100.25", "--sender", "", "--helo", "mx.example.org",
                 "--root", str(tmp_path), "--dns", server.spec, "--json")  # fmt: skip
    data = json.loads(null.stdout)
    assert data["result"] == "pass"
    assert 'envelope-from="postmaster@mx.example.org"' in data["received_spf"]
    assert "receiver=mx.from-control.test;" in data["received_spf"]
    helo = quail("--ip", "2001:db8::1", "--helo", "mx.example.org", "--dns", server.spec)
    assert helo.stdout.splitlines()[0] == "neutral"
    assert "identity=helo;" in helo.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sender", "a@example.com"], "--ip is required"),
        (["--ip", "192.0.2.1"], "--sender is required (or --helo to check the HELO name)"),
        (["--ip", "1.2.3.x", "--sender", "a@b.example"], "--ip '1.2.3.x' is not an IP address"),
        (
            ["--ip", "192.0.2.1", "--sender", ""],
            "a null --sender needs --helo (postmaster@HELO is checked)",
        ),
        (["--ip", "192.0.2.1", "--sender", "a@b.example", "--dns", "no such server"], None),
    ],
)  # fmt: skip
def test_bad_arguments_are_one_line_and_exit_2(args: list[str], message: str | None) -> None:
    out = quail(*args)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1
    if message is not None:
        assert lines[0] == f"quail spf: {message}"
