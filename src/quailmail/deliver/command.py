"""``|program`` delivery: qmail-command(8).

The command runs under ``/bin/sh -c`` in the user's home directory, the
message (without Return-Path or Delivered-To: those are in RPLINE and
DTLINE, and ``preline`` adds them) on standard input, with this environment:

SENDER, NEWSENDER, RECIPIENT, USER, HOME, HOST, HOST2..4, LOCAL, EXT,
EXT2..4, DEFAULT (only for ``-default`` files), DTLINE, RPLINE, UFLINE.

Exit codes: 0 delivered; 99 delivered, ignore the rest of the .qmail; 100
permanent failure; 111 temporary.  "Currently 64, 65, 70, 76, 77, 78, and
112 are considered hard errors, and all other codes are considered soft
errors" (qmail-command(8)); death by a signal is soft too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from quailmail.core.outcome import Outcome
from quailmail.core.pipes import write_to_pipe

from .maildir import dtline, rpline
from .mbox import ufline

HARD_EXITS = frozenset({64, 65, 70, 76, 77, 78, 100, 112})
_SHIM_DIR = Path(__file__).parent / "bin"
_OUTPUT_LIMIT = 1000  # bytes of the program's output kept for the reason


@dataclass(frozen=True, slots=True)
class CommandEnv:
    """Everything qmail-command(8) tells a program about the delivery."""

    sender: str
    new_sender: str
    recipient: str  # local@host
    user: str
    home: Path
    local: str
    host: str
    ext: str
    default: str | None = None  # set only when a -default file matched


def _after_dashes(ext: str, n: int) -> str:
    # EXT2 is the part of EXT after its first dash, EXT3 after its second...
    parts = ext.split("-", n)
    return parts[n] if len(parts) > n else ""


def _before_dots(host: str, n: int) -> str:
    # HOST2 is the part of HOST before its last dot, HOST3 before the
    # second-to-last... qmail-command(8).
    parts = host.rsplit(".", n - 1)
    return parts[0] if len(parts) >= n else ""


def command_environment(env: CommandEnv, base: dict[str, str] | None = None) -> dict[str, str]:
    out = dict(os.environ if base is None else base)
    for name in ("DEFAULT", "EXT2", "EXT3", "EXT4", "HOST2", "HOST3", "HOST4"):
        out.pop(name, None)
    out.update(
        SENDER=env.sender,
        NEWSENDER=env.new_sender,
        RECIPIENT=env.recipient,
        USER=env.user,
        HOME=str(env.home),
        LOCAL=env.local,
        HOST=env.host,
        EXT=env.ext,
        DTLINE=dtline(env.recipient).decode(),
        RPLINE=rpline(env.sender).decode(),
        UFLINE=ufline(env.sender).decode(),
    )
    for n in (2, 3, 4):
        out[f"EXT{n}"] = _after_dashes(env.ext, n - 1)
        out[f"HOST{n}"] = _before_dots(env.host, n)
    if env.default is not None:
        out["DEFAULT"] = env.default
    # No preline on this system (Debian does not package qmail): ours, last.
    if shutil.which("preline", path=out.get("PATH")) is None:
        out["PATH"] = os.pathsep.join(p for p in (out.get("PATH", ""), str(_SHIM_DIR)) if p)
    return out


@dataclass(frozen=True, slots=True)
class CommandResult:
    outcome: Outcome
    stop: bool  # exit 99: ignore the remaining lines


async def _feed(stdin: asyncio.StreamWriter, message: bytes) -> None:
    """Write the message to the program; one that exits without reading it
    all (`|exit 100`, a filter that refuses at once) is judged by its exit
    code, as qmail-local ignores the EPIPE (core/pipes.py)."""
    try:
        await write_to_pipe(stdin, message)
    finally:
        stdin.close()


async def _exchange(proc: asyncio.subprocess.Process, message: bytes) -> bytes:
    """`proc.communicate(message)` that survives a program not reading."""
    assert proc.stdin is not None and proc.stdout is not None
    feeding = asyncio.ensure_future(_feed(proc.stdin, message))
    try:
        output = await proc.stdout.read()
        await feeding
    finally:
        feeding.cancel()
    await proc.wait()
    return output


async def run_command(
    command: str, message: bytes, env: CommandEnv, *, timeout: float = 3600.0
) -> CommandResult:
    """Run one ``|command`` line; never blocks the event loop."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=env.home,
            env=command_environment(env),
            start_new_session=True,
        )
    except OSError as err:
        return CommandResult(Outcome.temporary(f"unable to run command: {err} (#4.3.0)"), False)
    try:
        output = await asyncio.wait_for(_exchange(proc, message), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        await proc.wait()
        return CommandResult(Outcome.temporary(f"command timed out after {timeout:g}s"), False)
    text = output[:_OUTPUT_LIMIT].decode(errors="replace").strip()
    code = proc.returncode
    assert code is not None
    if code == 0:
        return CommandResult(Outcome.ok(text), False)
    if code == 99:
        return CommandResult(Outcome.ok(text), True)
    if code < 0:
        reason = f"command killed by signal {-code}" + (f": {text}" if text else "")
    else:
        reason = text or f"command exited {code}"
    if code in HARD_EXITS:
        return CommandResult(Outcome.permanent(reason), False)
    return CommandResult(Outcome.temporary(reason), False)
