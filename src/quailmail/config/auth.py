"""SMTP AUTH: checking a user name and password, and when AUTH may be offered.

Who checks:

- `control/checkpassword`, when present: a command line (split as a shell
  would, but run without one) of a checkpassword program, the interface of
  DJB's checkpassword that qmail's AUTH patches use, so existing checkers
  (vpopmail's `vchkpw`, Debian's `checkpassword` for system users) plug in.
  The program gets `user\\0password\\0timestamp\\0` on file descriptor 3 and
  the next program to run as its arguments; we give it `true`.  Exit 0:
  accepted; 1: refused; 111 (or 2, misuse), a timeout, a crash: temporary.
  When the file is present the program alone decides.
- otherwise the root's vpasswd files (`config.users`): `user@domain`
  (or vpopmail's `user%domain`) with an argon2id or crypt hash.

When: AUTH PLAIN and LOGIN send the password in the clear, so they are
offered only over TLS (RFC 4954 §4; RFC 8314), except to a loopback client
when `control/authloopback` holds `1` (for webmail or scripts on the same
host that talk to 127.0.0.1 or ::1).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import ipaddress
import os
import shlex
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from quailmail.config.control import control_for
from quailmail.config.users import check_user_password
from quailmail.core.reply import Reply

CHECKPASSWORD_TIMEOUT = 10.0  # seconds; a checker asking a remote database may be slow
CHECKPASSWORD_MAX = 512  # bytes on fd 3: the limit of DJB's checkpassword


class AuthResult(enum.Enum):
    """Three outcomes (a checker that times out is not a wrong password).

    `bool(result)` is true only for OK, so `if await authenticate(...)` reads
    as a yes/no; `reply` is the answer to the AUTH command (RFC 4954 §6).
    """

    OK = "ok"
    FAIL = "fail"
    TEMPFAIL = "tempfail"

    def __bool__(self) -> bool:
        return self is AuthResult.OK

    @property
    def reply(self) -> Reply:
        return _REPLIES[self]


_REPLIES = {
    AuthResult.OK: Reply(235, "2.7.0", "Authentication successful"),
    AuthResult.FAIL: Reply(535, "5.7.8", "Authentication credentials invalid"),
    AuthResult.TEMPFAIL: Reply(454, "4.7.0", "Temporary authentication failure"),
}


def checkpassword_command(root: Path | str) -> list[str] | None:
    """`control/checkpassword` as an argument list, or None when unset or empty."""
    text = control_for(root).value("checkpassword")
    if not text:
        return None
    try:
        argv = shlex.split(text)
    except ValueError:
        return None
    return argv or None


@functools.lru_cache(maxsize=4096)
def is_loopback(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def may_offer_auth(root: Path | str, *, tls: bool, client_ip: str) -> bool:
    """Whether EHLO lists AUTH PLAIN LOGIN for this connection."""
    if tls:
        return True
    return is_loopback(client_ip) and control_for(root).flag("authloopback")


async def authenticate(
    root: Path | str,
    username: str,
    password: str,
    *,
    checkpassword: Sequence[str] | None = None,
    timeout: float = CHECKPASSWORD_TIMEOUT,
) -> AuthResult:
    """Check `username` and `password`.

    `checkpassword` overrides `control/checkpassword` (None: read the file).
    """
    if not username or "\0" in username or "\0" in password:
        return AuthResult.FAIL
    argv = list(checkpassword) if checkpassword is not None else checkpassword_command(root)
    if argv:
        return await run_checkpassword(argv, username, password, timeout=timeout)
    try:
        ok = await asyncio.to_thread(check_user_password, Path(root), username, password)
    except OSError:
        return AuthResult.TEMPFAIL  # an unreadable vpasswd is not a wrong password
    return AuthResult.OK if ok else AuthResult.FAIL


# The checkpassword program reads fd 3.  asyncio cannot place a pipe at a
# given descriptor number (pass_fds keeps numbers; preexec_fn is unsafe with
# threads), so a POSIX shell moves stdin to 3 and execs the program; the
# program's arguments travel as "$@", never through the shell's parser.
_FD3_SHIM = 'exec "$@" 3<&0 0</dev/null'


async def run_checkpassword(
    argv: Sequence[str], username: str, password: str, *, timeout: float
) -> AuthResult:
    data = f"{username}\0{password}\0<{int(time.time())}.{os.getpid()}@quailmail>\0".encode()
    if len(data) > CHECKPASSWORD_MAX:
        return AuthResult.FAIL
    true = shutil.which("true") or "/bin/true"
    try:
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            _FD3_SHIM,
            "checkpassword",
            *argv,
            true,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return AuthResult.TEMPFAIL
    try:
        async with asyncio.timeout(timeout):
            await proc.communicate(data)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return AuthResult.TEMPFAIL
    except (BrokenPipeError, ConnectionResetError):
        # The program exited without reading; its exit status decides.
        await proc.wait()
    code = proc.returncode
    if code == 0:
        return AuthResult.OK
    if code == 1:
        return AuthResult.FAIL
    # 111 is DJB's temporary failure, 2 misuse, 126/127 the shell's "cannot
    # run" (setup problems, not the user's); a signal (negative) is a crash.
    if code is None or code < 0 or code in (2, 111, 126, 127):
        return AuthResult.TEMPFAIL
    return AuthResult.FAIL
