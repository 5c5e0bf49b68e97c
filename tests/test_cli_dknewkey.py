"""`quail dknewkey`: keys as the seeds make them, records that verify."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from quailmail.auth.dkim.keyrecord import check_record, parse_key_record
from quailmail.auth.keys import parse_private_key
from quailmail.cli.main import main


def _txt_from_bind(line: str) -> str:
    return "".join(re.findall(r'"([^"]*)"', line))


def test_writes_private_key_0600_and_prints_bind_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_path = tmp_path / "default"
    assert main(["dknewkey", str(key_path), "1024"]) == 0
    out = capsys.readouterr().out
    assert out.startswith('default._domainkey IN TXT "v=DKIM1; k=rsa; p=')
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    key = parse_private_key(key_path.read_bytes())
    assert (key.type, key.bits) == ("rsa", 1024)
    record = parse_key_record(_txt_from_bind(out).encode())
    check_record(
        record, key_type="rsa", hash_name="sha256", identity="@x.example", domain="x.example"
    )
    assert record.p == key.public_record_value()


def test_default_is_rsa_2048_split_into_255_byte_strings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dknewkey", str(tmp_path / "private")]) == 0
    out = capsys.readouterr().out
    strings = re.findall(r'"([^"]*)"', out)
    assert len(strings) >= 2 and all(len(s) <= 255 for s in strings)
    assert parse_private_key((tmp_path / "private").read_bytes()).bits == 2048


def test_tinydns_line_takes_the_domain_from_the_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "example.com"
    directory.mkdir()
    assert main(["dknewkey", "--format", "tinydns", str(directory / "default"), "1024"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("'default._domainkey.example.com.:v=DKIM1; k=rsa; p=")
    assert line.endswith(":3600")


def test_ed25519_value_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dknewkey", "--type", "ed25519", "--format", "value", str(tmp_path / "ed")]) == 0
    value = capsys.readouterr().out.strip()
    assert re.fullmatch(r"v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=", value)
    assert parse_private_key((tmp_path / "ed").read_bytes()).type == "ed25519"


def test_refuses_small_keys_and_overwriting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dknewkey", str(tmp_path / "weak"), "384"]) == 2
    err = capsys.readouterr().err
    assert "384-bit RSA keys are refused" in err and err.count("\n") == 1
    assert not (tmp_path / "weak").exists()
    (tmp_path / "taken").write_text("precious")
    assert main(["dknewkey", str(tmp_path / "taken"), "1024"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (tmp_path / "taken").read_text() == "precious"


def test_entry_point_gives_one_line_and_no_traceback(tmp_path: Path) -> None:
    quail = Path(sys.executable).with_name("quail")
    proc = subprocess.run(
        [str(quail), "dknewkey", str(tmp_path / "no" / "such" / "dir" / "key")],
        capture_output=True,
        text=True,
        env={**os.environ},
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "cannot create" in proc.stderr
