"""`QMAILQUEUE`: hand the message to a qmail-queue program instead of our queue.

A client's rules may name a program that speaks the qmail-queue protocol
(`queue/qmailqueue.py`): simscan, qmail-dkverify, `quail dkverify`, a site's
own.  qmail-smtpd runs it where it would run qmail-queue; so do we, with

- the message on fd 0 as qmail-smtpd gives it: LF line ends, our
  `Received:` (and the fields the DATA checks added, above it) on top;
- the envelope on fd 1 (`F…\\0T…\\0\\0`);
- the connection's environment (tcpserver's variables, the rules' ones such
  as `DKQUEUE`, `DKIM`, `SIMSCAN_DEBUG`; after AUTH, `TCPREMOTEINFO` and
  `AUTHUSER`), `QUAIL_ROOT`, and a PATH that finds `quail-qmail-queue` and
  `quail-dkverify` first;
- the root as working directory, so `QMAILQUEUE="bin/simscan"` is relative
  to it, as qmail's is to /var/qmail.

Its exit code is answered as qmail-smtpd answers it (`reply_for_exit`).  The
chain must end in a real queue program — `quail-qmail-queue` puts into our
queue durably before it exits 0 — so `250` still means "on disk".  The
message may have been changed on the way; its queue id is not ours to know,
so the answer is qmail-smtpd's `250 ok <time> qp <pid>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TypeVar

from quailmail.core.reply import Reply
from quailmail.policy.base import Client, Message
from quailmail.queue.qmailqueue import encode_envelope, reply_for_exit

log = logging.getLogger("quailmail.smtpd")
T = TypeVar("T")

# Where our console scripts (`quail-qmail-queue`, `quail-dkverify`) live.
BIN_DIR = str(Path(sys.executable).parent)
_STDERR_KEPT = 4096  # bytes of the chain's diagnostics kept for the log
_GRACE = 5.0  # seconds to let pipes drain after the program exited


def environment(client: Client) -> dict[str, str]:
    """What the program sees: ours, the connection's, QUAIL_ROOT, our PATH."""
    env = dict(os.environ)
    env.update(client.env)
    env["QUAIL_ROOT"] = str(client.root)
    if client.auth_user is not None:
        # As qmail-smtpd's AUTH patches tell their queue programs.
        env["TCPREMOTEINFO"] = env["AUTHUSER"] = client.auth_user
    path = env.get("PATH", os.defpath)
    if BIN_DIR not in path.split(os.pathsep):
        env["PATH"] = os.pathsep.join([BIN_DIR, path]) if path else BIN_DIR
    return env


def message_bytes(message: Message) -> bytes:
    """The message as qmail-smtpd hands it on: every CRLF a LF.  The session
    refused bare CR and LF, so this is exact."""
    return b"".join([*message.add_headers, *message.chunks]).replace(b"\r\n", b"\n")


async def run(client: Client, message: Message) -> Reply:
    """Run `QMAILQUEUE` for `message`; its exit code answers the DATA."""
    program = client.env["QMAILQUEUE"]
    timeout = float(client.control.int_value("timeoutsmtpd", 1200))
    envelope = encode_envelope(message.sender, message.recipients)
    data = message_bytes(message)
    started = time.time()
    read_end, write_end = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            program,
            stdin=asyncio.subprocess.PIPE,
            stdout=read_end,
            stderr=asyncio.subprocess.PIPE,
            cwd=client.root,
            env=environment(client),
            start_new_session=True,  # its own process group: a timeout kills the chain
        )
    except OSError as exc:
        os.close(write_end)
        log.warning("%s: cannot run QMAILQUEUE %s: %s", client.ip, program, exc.strerror or exc)
        return Reply(451, "4.3.0", "unable to exec qq")
    finally:
        os.close(read_end)
    assert proc.stdin is not None and proc.stderr is not None
    envelope_writer = await _pipe_writer(write_end)
    feeding = asyncio.gather(_feed(proc.stdin, data), _feed(envelope_writer, envelope))
    diagnostics = asyncio.ensure_future(_collect(proc.stderr))
    try:
        async with asyncio.timeout(timeout):
            status = await proc.wait()
    except TimeoutError:
        _kill(proc.pid)
        status = await proc.wait()
        timed_out = True
    else:
        timed_out = False
    written = await _settle(feeding)
    stderr = await _settle(diagnostics)
    for line in (stderr or b"").decode("utf-8", "replace").splitlines():
        if line.strip():
            log.info("%s: QMAILQUEUE %s [%d]: %s", client.ip, program, proc.pid, line)
    if timed_out:
        log.warning("%s: QMAILQUEUE %s [%d] killed after %.0f s", client.ip, program, proc.pid,
                    timeout)  # fmt: skip
        return Reply(451, "4.3.0", "qq timeout")
    code = status if status >= 0 else None  # negative: killed by signal -status
    reply = reply_for_exit(code, write_failed=written is None or not all(written))
    if reply is not None:
        how = f"exit {code}" if code is not None else f"signal {-status}"
        log.info("%s: QMAILQUEUE %s [%d] %s: %s %s", client.ip, program, proc.pid, how,
                 reply.code, reply.text)  # fmt: skip
        return reply
    log.info(
        "%s: queued through QMAILQUEUE %s [%d] from <%s> to %d recipient(s), %d bytes",
        client.ip, program, proc.pid, message.sender, len(message.recipients), message.size,
    )  # fmt: skip
    return Reply(250, "2.0.0", f"ok {int(started)} qp {proc.pid}")


async def _pipe_writer(fd: int) -> asyncio.StreamWriter:
    loop = asyncio.get_running_loop()
    pipe = os.fdopen(fd, "wb", buffering=0)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, pipe)
    return asyncio.StreamWriter(transport, protocol, None, loop)


async def _feed(writer: asyncio.StreamWriter, data: bytes) -> bool:
    """Write all of `data`, then end the stream; False when the program
    stopped reading first (it may have refused the message: its exit code
    says).  No write buffer is allowed, so `drain` returns only once every
    byte is in the pipe (qmail.c's `flagerr` needs that to be known)."""
    try:
        writer.transport.set_write_buffer_limits(high=0)
        writer.write(data)
        await writer.drain()
    except ConnectionError:  # BrokenPipeError, ConnectionResetError
        return False
    finally:
        writer.close()
    return True


async def _collect(stream: asyncio.StreamReader) -> bytes:
    """The chain's stderr, the first `_STDERR_KEPT` bytes of it (the rest is
    read and dropped, so a chatty filter never blocks on a full pipe)."""
    kept = bytearray()
    while chunk := await stream.read(65536):
        if len(kept) < _STDERR_KEPT:
            kept += chunk[: _STDERR_KEPT - len(kept)]
    return bytes(kept)


async def _settle(future: asyncio.Future[T]) -> T | None:
    """The result of work tied to the program's pipes, once it exited; a
    descendant still holding a pipe open gets `_GRACE` seconds."""
    try:
        return await asyncio.wait_for(future, _GRACE)
    except TimeoutError:
        return None


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
