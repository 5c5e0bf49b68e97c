"""config.users: the vpopmail-style store (vpasswd, Maildir, vadddomain's control lines)."""

from __future__ import annotations

import asyncio
import os
import stat
import warnings
from pathlib import Path

import argon2
import pytest

from quailmail.config import users
from quailmail.config.users import (
    AddressError,
    UserError,
    add_user,
    delete_user,
    list_users,
    set_password,
    user_exists,
    verify_password,
)


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small argon2 parameters, so the suite stays fast (the format is the same)."""
    monkeypatch.setattr(
        users, "_hasher", argon2.PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_add_user_layout_and_vpasswd_line(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        entry = add_user(tmp_path, "Joe@Example.COM", "s3cret", gecos="Joe Q")
    finally:
        os.umask(old)
    home = tmp_path / "domains" / "example.com" / "joe"
    assert entry.dir == str(home)
    for d in (home, home / "Maildir", *(home / "Maildir" / s for s in ("cur", "new", "tmp"))):
        assert d.is_dir()
        assert mode(d) == 0o700
    vpasswd = tmp_path / "domains" / "example.com" / "vpasswd"
    assert mode(vpasswd) == 0o600
    fields = vpasswd.read_text().rstrip("\n").split(":")
    # name:passwd:uid:gid:gecos:dir:quota, as vpopmail writes it
    assert len(fields) == 7
    assert fields[0] == "joe"
    assert fields[1].startswith("$argon2id$")
    assert fields[2:5] == ["1", "0", "Joe Q"]
    assert fields[5] == str(home)
    assert fields[6] == "NOQUOTA"


def test_new_domain_is_hosted_once(tmp_path: Path) -> None:
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / "rcpthosts").write_text("other.example")  # no final newline
    add_user(tmp_path, "a@example.com", "pw")
    add_user(tmp_path, "b@example.com", "pw")
    add_user(tmp_path, "c@example.net", "pw")
    rcpthosts = (tmp_path / "control" / "rcpthosts").read_text().splitlines()
    assert rcpthosts == ["other.example", "example.com", "example.net"]
    vdoms = (tmp_path / "control" / "virtualdomains").read_text().splitlines()
    assert vdoms == ["example.com:example.com", "example.net:example.net"]
    assert not (tmp_path / "domains" / "example.com" / ".qmail-default").exists()


def test_existing_user_and_bad_addresses_refused(tmp_path: Path) -> None:
    add_user(tmp_path, "joe@example.com", "pw")
    with pytest.raises(UserError, match="exists"):
        add_user(tmp_path, "JOE@example.com", "pw")
    for bad in (
        "joe",
        "joe@",
        "@example.com",
        "jo:e@example.com",
        "a/b@example.com",
        "joe@localhost",
        "joe@exa_mple.com",
        "x" * 65 + "@example.com",
    ):
        with pytest.raises(AddressError):
            add_user(tmp_path, bad, "pw")
    with pytest.raises(UserError):
        add_user(tmp_path, "ann@example.com", "")
    with pytest.raises(UserError):
        add_user(tmp_path, "ann@example.com", "a\nb")


def test_vpopmail_percent_form_accepted(tmp_path: Path) -> None:
    add_user(tmp_path, "joe%example.com", "pw")
    assert user_exists(tmp_path, "joe@example.com")
    assert user_exists(tmp_path, "joe%EXAMPLE.com")
    assert not user_exists(tmp_path, "ann@example.com")
    assert not user_exists(tmp_path, "not an address")


def test_list_users(tmp_path: Path) -> None:
    assert list_users(tmp_path) == []
    for a in ("b@example.com", "a@example.com", "z@example.net"):
        add_user(tmp_path, a, "pw")
    assert [a for a, _ in list_users(tmp_path)] == [
        "a@example.com",
        "b@example.com",
        "z@example.net",
    ]
    assert [a for a, _ in list_users(tmp_path, "EXAMPLE.NET")] == ["z@example.net"]
    assert list_users(tmp_path, "example.org") == []


def test_list_users_of_a_domain_users_assign_places(tmp_path: Path) -> None:
    add_user(tmp_path, "a@example.com", "pw")
    moved = tmp_path / "elsewhere" / "sample.com"
    moved.mkdir(parents=True)
    (moved / "vpasswd").write_text("bob:$1$xyz$abc:1:0:Bob:/x/bob:NOQUOTA\n")
    (tmp_path / "users").mkdir()
    (tmp_path / "users" / "assign").write_text(f"+sample.com-:sample.com:89:89:{moved}:-::\n.\n")
    with (tmp_path / "control" / "virtualdomains").open("a") as f:
        f.write("sample.com:sample.com\n")
    assert [a for a, _ in list_users(tmp_path)] == ["a@example.com", "bob@sample.com"]
    assert [a for a, _ in list_users(tmp_path, "sample.com")] == ["bob@sample.com"]


def test_delete_user_removes_line_and_mail(tmp_path: Path) -> None:
    add_user(tmp_path, "a@example.com", "pw")
    add_user(tmp_path, "b@example.com", "pw")
    delete_user(tmp_path, "a@example.com")
    assert not (tmp_path / "domains" / "example.com" / "a").exists()
    assert (tmp_path / "domains" / "example.com" / "b" / "Maildir").is_dir()
    assert [a for a, _ in list_users(tmp_path)] == ["b@example.com"]
    with pytest.raises(UserError):
        delete_user(tmp_path, "a@example.com")
    with pytest.raises(UserError):
        delete_user(tmp_path, "a@example.org")


def test_delete_never_removes_outside_the_domain(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    ddir = tmp_path / "domains" / "example.com"
    ddir.mkdir(parents=True)
    (ddir / "vpasswd").write_text(f"x:*:1:0:x:{victim}:NOQUOTA\n")
    delete_user(tmp_path, "x@example.com")
    assert victim.is_dir()


def test_passwd_and_verify(tmp_path: Path) -> None:
    add_user(tmp_path, "joe@example.com", "old")
    assert asyncio.run(verify_password(tmp_path, "joe@example.com", "old"))
    set_password(tmp_path, "joe@example.com", "new")
    assert not asyncio.run(verify_password(tmp_path, "joe@example.com", "old"))
    assert asyncio.run(verify_password(tmp_path, "JOE@example.com", "new"))
    assert not asyncio.run(verify_password(tmp_path, "ann@example.com", "new"))
    assert not asyncio.run(verify_password(tmp_path, "joe", "new"))
    with pytest.raises(UserError):
        set_password(tmp_path, "ann@example.com", "x")


def test_other_lines_kept_verbatim_and_clear_field_dropped(tmp_path: Path) -> None:
    ddir = tmp_path / "domains" / "example.com"
    ddir.mkdir(parents=True)
    lines = [
        f"ann:$1$abc$xyz:1:0:Ann:{ddir}/ann:5000000S:annclear",
        f"joe:$1$abc$xyz:1:0:Joe:{ddir}/joe:NOQUOTA:joeclear",
    ]
    (ddir / "vpasswd").write_text("\n".join(lines) + "\n")
    set_password(tmp_path, "joe@example.com", "new")
    out = (ddir / "vpasswd").read_text().splitlines()
    assert out[0] == lines[0]
    assert out[1].startswith("joe:$argon2id$")
    assert out[1].endswith(f":1:0:Joe:{ddir}/joe:NOQUOTA")


def test_write_is_atomic_no_temporary_left(tmp_path: Path) -> None:
    add_user(tmp_path, "joe@example.com", "pw")
    ddir = tmp_path / "domains" / "example.com"
    assert sorted(p.name for p in ddir.iterdir()) == ["joe", "vpasswd", "vpasswd.lock"]
    inode = (ddir / "vpasswd").stat().st_ino
    set_password(tmp_path, "joe@example.com", "pw2")
    assert (ddir / "vpasswd").stat().st_ino != inode  # replaced by rename, not rewritten


def test_failed_write_leaves_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    add_user(tmp_path, "joe@example.com", "pw")
    vpasswd = tmp_path / "domains" / "example.com" / "vpasswd"
    before = vpasswd.read_bytes()

    def boom(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(users.os, "fsync", boom)
    with pytest.raises(OSError):
        add_user(tmp_path, "ann@example.com", "pw")
    assert vpasswd.read_bytes() == before
    assert not [p for p in vpasswd.parent.iterdir() if ".tmp" in p.name]


def test_alias_domain_uses_the_real_domains_directory(tmp_path: Path) -> None:
    add_user(tmp_path, "joe@example.com", "pw")
    with (tmp_path / "control" / "virtualdomains").open("a") as f:
        f.write("alias.example:example.com\n")  # vaddaliasdomain's line
    assert user_exists(tmp_path, "joe@alias.example")
    assert asyncio.run(verify_password(tmp_path, "joe@alias.example", "pw"))


def _crypt_available() -> bool:
    return users._crypt_module() is not None


@pytest.mark.skipif(not _crypt_available(), reason="the crypt module is gone (Python 3.13+)")
@pytest.mark.parametrize("method", ["METHOD_SHA512", "METHOD_SHA256", "METHOD_MD5"])
def test_crypt_hashes_vpopmail_left_still_verify(tmp_path: Path, method: str) -> None:
    crypt = users._crypt_module()
    assert crypt is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        hashed = crypt.crypt("legacy", getattr(crypt, method))
    prefix = {"METHOD_SHA512": "$6$", "METHOD_SHA256": "$5$", "METHOD_MD5": "$1$"}[method]
    assert hashed.startswith(prefix)
    ddir = tmp_path / "domains" / "example.com"
    ddir.mkdir(parents=True)
    (ddir / "vpasswd").write_text(f"old:{hashed}:1:0:Old:{ddir}/old:NOQUOTA\n")
    assert asyncio.run(verify_password(tmp_path, "old@example.com", "legacy"))
    assert not asyncio.run(verify_password(tmp_path, "old@example.com", "wrong"))


def test_locked_and_garbage_hashes_never_match() -> None:
    for stored in ("", "!", "*", "!$6$x$y", "$argon2id$garbage"):
        assert not users.check_hash(stored, "")
        assert not users.check_hash(stored, "x")


def test_verify_runs_off_the_event_loop(tmp_path: Path) -> None:
    add_user(tmp_path, "joe@example.com", "pw")

    async def main() -> list[str]:
        order: list[str] = []

        async def ticker() -> None:
            order.append("tick")

        task = asyncio.create_task(verify_password(tmp_path, "joe@example.com", "pw"))
        await asyncio.sleep(0)
        await ticker()
        assert await task
        order.append("verified")
        return order

    assert asyncio.run(main()) == ["tick", "verified"]
