"""config.auth: AUTH against vpasswd, or a checkpassword program (DJB's interface)."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from pathlib import Path

import argon2
import pytest

from quailmail.config import users
from quailmail.config.auth import (
    AuthResult,
    authenticate,
    checkpassword_command,
    is_loopback,
    may_offer_auth,
)
from quailmail.core.reply import Reply

# A checkpassword program as DJB specifies it: `user\0password\0timestamp\0`
# on fd 3, then exec the next program on success; 1 on a wrong password.
# It records what it read, so the test sees the exact bytes.
CHECKER = """\
import os, sys
data = b""
while chunk := os.read(3, 512):
    data += chunk
record = os.environ.get("CHECKER_RECORD")
if record:
    with open(record, "wb") as f:
        f.write(data)
user, password, timestamp, rest = data.split(b"\\0")
if password == b"sleep":
    import time
    time.sleep(30)
if password == b"tempfail":
    sys.exit(111)
if (user, password) == (b"joe@example.com", b"right"):
    os.execvp(sys.argv[1], sys.argv[1:])
sys.exit(1)
"""


@pytest.fixture
def checker(tmp_path: Path) -> list[str]:
    path = tmp_path / "checker.py"
    path.write_text(CHECKER)
    return [sys.executable, str(path)]


def run(coro: object) -> AuthResult:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_local_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        users, "_hasher", argon2.PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    )
    users.add_user(tmp_path, "joe@example.com", "right")
    assert run(authenticate(tmp_path, "joe@example.com", "right")) is AuthResult.OK
    assert run(authenticate(tmp_path, "joe@example.com", "wrong")) is AuthResult.FAIL
    assert run(authenticate(tmp_path, "joe%example.com", "right")) is AuthResult.OK
    assert run(authenticate(tmp_path, "nobody@example.com", "right")) is AuthResult.FAIL
    assert run(authenticate(tmp_path, "", "right")) is AuthResult.FAIL
    assert run(authenticate(tmp_path, "joe@example.com", "ri\0ght")) is AuthResult.FAIL


def test_unreadable_store_is_temporary(tmp_path: Path) -> None:
    (tmp_path / "domains" / "example.com" / "vpasswd").mkdir(parents=True)
    assert run(authenticate(tmp_path, "joe@example.com", "x")) is AuthResult.TEMPFAIL


def test_results_and_replies() -> None:
    assert bool(AuthResult.OK)
    assert not AuthResult.FAIL
    assert not AuthResult.TEMPFAIL
    assert AuthResult.OK.reply == Reply(235, "2.7.0", "Authentication successful")
    assert AuthResult.FAIL.reply.code == 535
    assert AuthResult.FAIL.reply.enhanced == "5.7.8"
    assert AuthResult.TEMPFAIL.reply.code == 454


def test_checkpassword_success_and_failure(tmp_path: Path, checker: list[str]) -> None:
    record = tmp_path / "record"
    os.environ["CHECKER_RECORD"] = str(record)
    try:
        ok = run(authenticate(tmp_path, "joe@example.com", "right", checkpassword=checker))
    finally:
        del os.environ["CHECKER_RECORD"]
    assert ok is AuthResult.OK
    user, password, timestamp, rest = record.read_bytes().split(b"\0")
    assert (user, password, rest) == (b"joe@example.com", b"right", b"")
    assert timestamp.startswith(b"<")
    assert run(authenticate(tmp_path, "joe@example.com", "wrong", checkpassword=checker)) is (
        AuthResult.FAIL
    )


def test_checkpassword_temporary_failures(tmp_path: Path, checker: list[str]) -> None:
    result = run(authenticate(tmp_path, "joe@example.com", "tempfail", checkpassword=checker))
    assert result is AuthResult.TEMPFAIL
    missing = [str(tmp_path / "no-such-program")]
    result = run(authenticate(tmp_path, "joe@example.com", "right", checkpassword=missing))
    assert result is AuthResult.TEMPFAIL


def test_checkpassword_timeout_kills_it(tmp_path: Path, checker: list[str]) -> None:
    async def main() -> tuple[AuthResult, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        result = await authenticate(
            tmp_path, "joe@example.com", "sleep", checkpassword=checker, timeout=0.5
        )
        return result, loop.time() - start

    result, took = asyncio.run(main())
    assert result is AuthResult.TEMPFAIL
    assert took < 5


def test_checkpassword_that_does_not_read(tmp_path: Path) -> None:
    # /bin/false exits 1 without reading fd 3: a refusal, not an error.
    assert (
        run(authenticate(tmp_path, "joe@example.com", "x", checkpassword=["false"]))
        is AuthResult.FAIL
    )


def test_control_checkpassword_is_used(tmp_path: Path, checker: list[str]) -> None:
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / "checkpassword").write_text(" ".join(f"'{a}'" for a in checker) + "\n")
    assert checkpassword_command(tmp_path) == checker
    assert run(authenticate(tmp_path, "joe@example.com", "right")) is AuthResult.OK
    assert run(authenticate(tmp_path, "joe@example.com", "wrong")) is AuthResult.FAIL


def test_checkpassword_command_absent_or_broken(tmp_path: Path) -> None:
    assert checkpassword_command(tmp_path) is None
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / "checkpassword").write_text("\n")
    assert checkpassword_command(tmp_path) is None
    (tmp_path / "control" / "checkpassword").write_text("'unterminated\n")
    assert checkpassword_command(tmp_path) is None


def test_debian_checkpassword_if_installed(tmp_path: Path) -> None:
    path = Path("/usr/bin/checkpassword")
    if not path.exists() or not path.stat().st_mode & stat.S_IXUSR:
        pytest.skip("Debian's checkpassword package is not installed")
    # It checks system users; a made-up one is refused (it may need root to read shadow).
    result = run(authenticate(tmp_path, "no-such-user-x", "x", checkpassword=[str(path)]))
    assert result in (AuthResult.FAIL, AuthResult.TEMPFAIL)


def test_auth_offered_only_over_tls_or_loopback_with_control(tmp_path: Path) -> None:
    assert may_offer_auth(tmp_path, tls=True, client_ip="192.0.2.1")
    assert not may_offer_auth(tmp_path, tls=False, client_ip="192.0.2.1")
    assert not may_offer_auth(tmp_path, tls=False, client_ip="127.0.0.1")
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / "authloopback").write_text("1\n")
    for ip in ("127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"):
        assert may_offer_auth(tmp_path, tls=False, client_ip=ip), ip
    assert not may_offer_auth(tmp_path, tls=False, client_ip="192.0.2.1")
    assert not may_offer_auth(tmp_path, tls=False, client_ip="::ffff:192.0.2.1")
    (tmp_path / "control" / "authloopback").write_text("0\n")
    assert not may_offer_auth(tmp_path, tls=False, client_ip="::1")


def test_is_loopback() -> None:
    assert is_loopback("::1")
    assert is_loopback("fe80::1%lo") is False
    assert not is_loopback("not an ip")
