"""`quail user` end to end: real processes, a real root."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from quailmail.config.users import verify_password

QUAIL = str(Path(sys.executable).with_name("quail"))


def quail(
    *args: str, stdin: str = "", env_root: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("QUAIL_ROOT", None)
    if env_root is not None:
        env["QUAIL_ROOT"] = str(env_root)
    proc = subprocess.run(
        [QUAIL, "user", *args], input=stdin, capture_output=True, text=True, check=False, env=env
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_add_list_passwd_del(tmp_path: Path) -> None:
    root = str(tmp_path)
    p = quail("add", "Joe@Example.com", "--password-stdin", "--root", root, stdin="first\n")
    assert p.returncode == 0, p.stderr
    home = tmp_path / "domains" / "example.com" / "joe"
    assert p.stdout == f"joe@example.com\t{home}\n"
    assert (home / "Maildir" / "new").is_dir()
    assert asyncio.run(verify_password(tmp_path, "joe@example.com", "first"))
    assert (tmp_path / "control" / "rcpthosts").read_text() == "example.com\n"

    p = quail("passwd", "joe@example.com", "--password-stdin", "--root", root, stdin="second")
    assert p.returncode == 0, p.stderr
    assert asyncio.run(verify_password(tmp_path, "joe@example.com", "second"))

    quail("add", "ann@example.org", "--password-stdin", "--root", root, stdin="x\n")
    p = quail("list", env_root=tmp_path)
    assert p.stdout.splitlines() == [
        f"joe@example.com\t{home}",
        f"ann@example.org\t{tmp_path / 'domains' / 'example.org' / 'ann'}",
    ]
    assert quail("list", "example.org", "--root", root).stdout.startswith("ann@example.org\t")

    assert quail("del", "joe@example.com", "--root", root).returncode == 0
    assert not home.exists()
    assert quail("list", "example.com", "--root", root).stdout == ""


def test_errors_are_one_line(tmp_path: Path) -> None:
    root = str(tmp_path)
    quail("add", "joe@example.com", "--password-stdin", "--root", root, stdin="pw\n")
    cases = [
        (("add", "joe@example.com", "--password-stdin", "--root", root), "pw\n", 1, "exists"),
        (("del", "ann@example.com", "--root", root), "", 1, "no such user"),
        (("passwd", "ann@example.com", "--password-stdin", "--root", root), "pw\n", 1, "no such"),
        (("add", "bad-address", "--password-stdin", "--root", root), "pw\n", 2, "user@domain"),
        (("add", "ann@example.com", "--password-stdin", "--root", root), "\n", 2, "empty"),
        (("add", "ann@example.com", "--password-stdin"), "pw\n", 2, "QUAIL_ROOT"),
        (("add", "--root", root), "", 2, "needs an address"),
    ]
    for args, stdin, code, words in cases:
        p = quail(*args, stdin=stdin)
        assert p.returncode == code, (args, p.stderr)
        assert len(p.stderr.splitlines()) == 1, p.stderr
        assert p.stderr.startswith("quail user: ")
        assert words in p.stderr


def test_unwritable_root(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    p = quail(
        "add", "a@example.com", "--password-stdin", "--root", str(tmp_path / "file"), stdin="pw\n"
    )
    assert p.returncode == 2
    assert len(p.stderr.splitlines()) == 1


def test_prompt_without_a_terminal_is_a_clear_error(tmp_path: Path) -> None:
    p = quail("add", "a@example.com", "--root", str(tmp_path), stdin="one\none\n")
    assert p.returncode == 2
    assert p.stderr == "quail user: no terminal to ask for the password: use --password-stdin\n"
    assert not (tmp_path / "domains").exists()
