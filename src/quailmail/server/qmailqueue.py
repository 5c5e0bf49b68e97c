"""`QMAILQUEUE`: hand the message to a qmail-queue program instead of our queue.

A client's rules may name a program that speaks the qmail-queue protocol
(`queue/qmailqueue.py`): simscan, qmail-dkverify, `quail dkverify`, a site's
own.  qmail-smtpd runs it where it would run qmail-queue; so do we, with

- the message on fd 0 as qmail-smtpd gives it: LF line ends, our
  `Received:` (and the fields the DATA checks added, above it) on top;
- the envelope on fd 1 (`F…\\0T…\\0\\0`);
- a pipe on fd 4, the "qmail-queue-custom-error" patch's: simscan and
  other filters write their own SMTP answer there (`D` or `Z`, the text)
  and exit 82; the first `CUSTOM_KEPT` bytes are kept, the rest drained;
- the connection's environment (tcpserver's variables, the rules' ones such
  as `DKQUEUE`, `DKIM`, `SIMSCAN_DEBUG`; after AUTH, `TCPREMOTEINFO` and
  `AUTHUSER`), `QUAIL_ROOT`, and a PATH that finds `quail-qmail-queue` and
  `quail-dkverify` first;
- the root as working directory, so `QMAILQUEUE="bin/simscan"` is relative
  to it, as qmail's is to /var/qmail.

Its exit code (and, on exit 82, what came on fd 4) is answered as
qmail-smtpd answers it (`reply_for_exit`); a program that cannot be run is
`451 4.3.0 unable to exec qq`.  The chain must end in a real queue program
— `quail-qmail-queue` puts into our queue durably before it exits 0 — so
`250` still means "on disk".  The message may have been changed on the
way; its queue id is not ours to know, so the answer is qmail-smtpd's
`250 ok <time> qp <pid>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from quailmail.core.pipes import write_to_pipe
from quailmail.core.reply import Reply
from quailmail.policy.base import Client, Message
from quailmail.queue.qmailqueue import CUSTOM_FD, CUSTOM_KEPT, encode_envelope, reply_for_exit

log = logging.getLogger("quailmail.smtpd")

# Where our console scripts (`quail-qmail-queue`, `quail-dkverify`) live.
BIN_DIR = str(Path(sys.executable).parent)
_STDERR_KEPT = 4096  # bytes of the chain's diagnostics kept for the log
_GRACE = 5.0  # seconds to let pipes drain after the program exited


def environment(client: Client) -> dict[str, str]:
    """What the program sees: the connection's environment (which starts
    from ours: ServerState.base_env), QUAIL_ROOT, our PATH."""
    env = dict(client.env)
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
    timeout = float(client.control.int_value("timeoutsmtpd", 1200, minimum=1))
    envelope = encode_envelope(message.sender, message.recipients)
    data = message_bytes(message)
    env = environment(client)
    reason = _cannot_run(program, env.get("PATH", ""), client.root)
    if reason is not None:
        log.warning("%s: cannot run QMAILQUEUE %s: %s", client.ip, program, reason)
        return Reply(451, "4.3.0", "unable to exec qq")
    started = time.time()
    try:
        pid, (message_fd, envelope_fd, stderr_fd, custom_fd) = _spawn(program, client.root, env)
    except OSError as exc:
        log.warning("%s: cannot run QMAILQUEUE %s: %s", client.ip, program, exc.strerror or exc)
        return Reply(451, "4.3.0", "unable to exec qq")
    message_writer = await _pipe_writer(message_fd)
    envelope_writer = await _pipe_writer(envelope_fd)
    stderr_reader, stderr_transport = await _pipe_reader(stderr_fd)
    custom_reader, custom_transport = await _pipe_reader(custom_fd)
    feeding = asyncio.gather(_feed(message_writer, data), _feed(envelope_writer, envelope))
    stderr, custom = bytearray(), bytearray()
    diagnostics = asyncio.ensure_future(_collect(stderr_reader, stderr, _STDERR_KEPT))
    asked = asyncio.ensure_future(_collect(custom_reader, custom, CUSTOM_KEPT))
    try:
        async with asyncio.timeout(timeout):
            status = await _wait(pid)
    except TimeoutError:
        _kill(pid)
        status = await _wait(pid)
        timed_out = True
    else:
        timed_out = False
    await _settle(feeding, diagnostics, asked)
    written = None if feeding.cancelled() or feeding.exception() else feeding.result()
    # A descendant may hold stderr or fd 4 still: what came is what counts.
    stderr_transport.close()
    custom_transport.close()
    for line in stderr.decode("utf-8", "replace").splitlines():
        if line.strip():
            log.info("%s: QMAILQUEUE %s [%d]: %s", client.ip, program, pid, line)
    if timed_out:
        log.warning("%s: QMAILQUEUE %s [%d] killed after %.0f s", client.ip, program, pid, timeout)
        return Reply(451, "4.3.0", "qq timeout")
    code = status if status >= 0 else None  # negative: killed by signal -status
    reply = reply_for_exit(
        code, write_failed=written is None or not all(written), custom=bytes(custom)
    )
    if reply is not None:
        how = f"exit {code}" if code is not None else f"signal {-status}"
        log.info("%s: QMAILQUEUE %s [%d] %s: %s %s %s", client.ip, program, pid, how,
                 reply.code, reply.enhanced, reply.text)  # fmt: skip
        return reply
    log.info(
        "%s: queued through QMAILQUEUE %s [%d] from <%s> to %d recipient(s), %d bytes",
        client.ip, program, pid, message.sender, len(message.recipients), message.size,
    )  # fmt: skip
    return Reply(250, "2.0.0", f"ok {int(started)} qp {pid}")


# The program's descriptors are qmail.c's (qmail_open): the message on 0,
# the envelope on 1, the custom-error pipe on 4; 2 is its stderr, for our
# log.  asyncio's subprocesses cannot put a pipe at 4: pass_fds keeps the
# parent's number; preexec_fn (like os.fork) runs Python between fork and
# exec, unsafe beside our threads (the syncer, argon2); and a shell that
# moves it (config/auth.py does so for fd 3) is dash here, whose
# redirections name descriptors 0 to 9 only.  os.posix_spawn's file
# actions are dup2 calls the C library makes in the child, safe with
# threads.  It has no working directory, so what it starts is /bin/sh,
# which enters the root and execs the program: same pid, so the session,
# the exit status and a killing signal are the program's own.  Root and
# program travel as "$1" and "$2", never through the shell's parser; a
# root it cannot enter is exit 120, qmail.c's "unable to exec qq".
# posix_spawn closes nothing: what this process opens is close-on-exec
# (PEP 446, libuv), what it was started with is made so at the first
# spawn (`_close_inherited`), so the program gets these four and no more.
_CHDIR_EXEC = 'cd "$1" || exit 120; exec "$2"'


def _spawn(program: str, root: Path, env: dict[str, str]) -> tuple[int, tuple[int, int, int, int]]:
    """Start `program` in its own session; its pid and our ends of its
    message, envelope, stderr and fd-4 pipes.  Raises OSError."""
    _close_inherited()
    message_r, message_w = os.pipe()  # os.pipe: close-on-exec, both ends
    envelope_r, envelope_w = os.pipe()
    stderr_r, stderr_w = os.pipe()
    custom_r, custom_w = os.pipe()
    theirs = [(message_r, 0), (envelope_r, 1), (stderr_w, 2), (custom_w, CUSTOM_FD)]
    ours = (message_w, envelope_w, stderr_r, custom_r)
    try:
        pid = os.posix_spawn(
            "/bin/sh",
            ["sh", "-c", _CHDIR_EXEC, "QMAILQUEUE", os.path.abspath(root), program],
            env,
            # Made in order.  Every source is above 2 (this process has its
            # 0, 1 and 2); one at 4 is copied before the last action, which
            # for a source at 4 only clears close-on-exec (POSIX 2017).
            file_actions=[(os.POSIX_SPAWN_DUP2, fd, target) for fd, target in theirs],
            setsid=True,  # its own session and process group: a timeout kills the chain
            setsigmask=(),
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),  # Python ignores them; subprocess too
        )
    except OSError:
        for fd in ours:
            os.close(fd)
        raise
    finally:
        # Only the program holds its ends: its envelope reader sees the
        # end of ours, and fd 4 ends when the program's chain is done.
        for fd, _ in theirs:
            os.close(fd)
    return pid, ours


@functools.cache
def _close_inherited() -> None:
    """Make the descriptors this process was started with close-on-exec,
    once: a parent may have left some open and inheritable (not `quail
    serve`'s workers, which start with 0, 1 and 2), and os.posix_spawn
    has no counterpart of subprocess's close_fds (glibc's
    addclosefrom_np is not offered by Python 3.11).  A scan per spawn
    would cost ~0.5 ms at a thousand connections; once is enough, as
    nothing here makes a descriptor inheritable."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return
    for name in names:
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):  # the listing's own, closed by now
                if os.get_inheritable(fd):
                    os.set_inheritable(fd, False)


async def _wait(pid: int) -> int:
    """The exit status of `pid`, once it ends (negative: the killing signal).

    Linux's pidfd is readable once the process has exited; a thread that
    waits stands in on a kernel without one (before 5.3).  Either leaves
    the reaping to os.waitpid here: the event loop's own child watchers
    wait for their own children by pid, never for ours.
    """
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        await asyncio.to_thread(os.waitid, os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    else:
        exited = loop.create_future()

        def readable() -> None:  # again each loop iteration until removed
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(pidfd, readable)
        try:
            await exited
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _cannot_run(program: str, path: str, root: Path) -> str | None:
    """Why `program` cannot be exec'd from `root` (a name with a slash from
    there, else the first executable file of that name on `path`), or None.

    The shell that execs it would say so only with exit 126 or 127, which
    a filter may give for its own reasons; qmail answers a program that did
    not start "unable to exec qq", so that is decided here, before the
    shell: only a race (a program removed between the two) reaches it.
    """
    if "/" in program:
        target = root / program
        if shutil.which(str(target)) is not None:
            return None
        return os.strerror(errno.EACCES if target.exists() else errno.ENOENT)
    # PATH's entries are taken from the root, as the shell in it takes them.
    search = os.pathsep.join(str(root / (entry or ".")) for entry in path.split(os.pathsep))
    return None if shutil.which(program, path=search) is not None else "not found on PATH"


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
        return await write_to_pipe(writer, data)
    except asyncio.CancelledError:
        writer.transport.abort()  # `_settle` gave up: a close would wait for the reader
        raise
    finally:
        writer.close()


async def _pipe_reader(fd: int) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    pipe = os.fdopen(fd, "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    return reader, transport


async def _collect(stream: asyncio.StreamReader, kept: bytearray, keep: int) -> None:
    """The first `keep` bytes of the chain's stderr or fd 4, into `kept` as
    they come (the rest is read and dropped, so a chatty filter never
    blocks on a full pipe)."""
    while chunk := await stream.read(65536):
        if len(kept) < keep:
            kept += chunk[: keep - len(kept)]


async def _settle(*work: asyncio.Future[Any]) -> None:
    """Let the work tied to the program's pipes end, once it exited: a
    descendant still holding a pipe open gets `_GRACE` seconds in all,
    then that work is cancelled.  A failure counts as work not done."""
    _, pending = await asyncio.wait(work, timeout=_GRACE)
    for future in pending:
        future.cancel()
    if pending:
        await asyncio.wait(pending)
    for future in work:
        if not future.cancelled() and future.exception() is not None:
            log.warning("QMAILQUEUE pipe: %s", future.exception())


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
