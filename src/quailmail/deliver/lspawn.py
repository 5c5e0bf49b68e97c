"""qmail-lspawn's process: one root helper per scheduler that forks per delivery.

qmail-lspawn is started once by qmail-start and lives as long as
qmail-send; for every local delivery qmail-send asks for, it forks, and the
child becomes the user (`prot_gid`, `prot_uid`) and runs qmail-local; the
parent relays the child's report to qmail-send, several deliveries at once
(spawn.c).  A process start per delivery costs ~0.1 s of CPU in Python
(the interpreter and our modules), a fork ~8 ms, so we do the same:

- The helper (`python -m quailmail.deliver.lspawn`, `main`) runs as root
  in its own session, cwd `/`; it imports what delivery needs once, then
  reads requests on stdin.  For each it forks; the child drops to the
  user and delivers (`asuser.deliver_request`), answering on a pipe of its
  own; the helper reaps it (`waitpid`: no zombies) and writes the answer,
  framed with the request's id, to stdout.  Children never write to
  stdout, so answers never interleave.  A child that ends without an
  answer is a temporary failure naming its exit status.  The helper is
  single-threaded and runs no event loop (each child starts its own with
  `asyncio.run`), so the fork is safe.  It exits when stdin closes and its
  last child has ended (qmail-lspawn's `flagreading`), so a scheduler
  killed with SIGKILL leaves no helper behind.
- The client (`Lspawn`, one per scheduler) starts the helper at the first
  delivery as another uid, writes requests, and has one reader task that
  hands each answer to the delivery waiting for its id.  When the helper
  dies, the deliveries waiting on it fail temporarily and the next one
  starts a new helper; `close()` stops it.

Frames, both ways: id, header length and body length (`>QII`), then the
header (a request's JSON; an answer's JSON) and the body (the message; an
answer has none).  A request with an empty header asks the helper to kill
the child of that id (its delivery was cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import os
import selectors
import signal
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from quailmail.core.files import write_all
from quailmail.core.pipes import write_to_pipe

log = logging.getLogger(__name__)

_HEAD = struct.Struct(">QII")  # id, header length, body length
MAX_HEADER = 1 << 20  # a request's JSON or an answer is far smaller
_CHUNK = 1 << 18  # bytes read at a time from a pipe
_CLOSE_WAIT = 10.0  # seconds close() gives the helper to end by itself
UNAVAILABLE = "unable to run qmail-lspawn's part (#4.3.0)"


# -- frames ---------------------------------------------------------------


class FrameError(Exception):
    """The peer broke the framing (a frame cut short, a header too long)."""


@dataclass(frozen=True, slots=True)
class Frame:
    ident: int
    header: bytes
    body: bytes = b""


def frame(ident: int, header: bytes, body: bytes = b"") -> bytes:
    """One frame: id, lengths, header, body."""
    return _HEAD.pack(ident, len(header), len(body)) + header + body


class Frames:
    """Sans-I/O reader: bytes in (`feed`), whole frames out."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        out: list[Frame] = []
        while len(self._buf) >= _HEAD.size:
            ident, hlen, blen = _HEAD.unpack_from(self._buf)
            if hlen > MAX_HEADER:
                raise FrameError(f"frame {ident}: header of {hlen} bytes")
            end = _HEAD.size + hlen + blen
            if len(self._buf) < end:
                break
            header = bytes(self._buf[_HEAD.size : _HEAD.size + hlen])
            body = bytes(self._buf[_HEAD.size + hlen : end])
            del self._buf[:end]
            out.append(Frame(ident, header, body))
        return out

    def eof(self) -> None:
        """The stream ended: raises FrameError if it ended inside a frame."""
        if self._buf:
            raise FrameError(f"stream ended inside a frame ({len(self._buf)} bytes)")


# -- the helper (root, forks per delivery) -----------------------------------


@dataclass(slots=True)
class _Child:
    ident: int
    pid: int
    request: dict[str, Any]
    answer: bytearray = field(default_factory=bytearray)


# What the helper is handed (asuser's functions; parameters so that this
# module does not import delivery until the helper runs).
Decode = Callable[[bytes], dict[str, Any]]  # raises ValueError
Deliver = Callable[[dict[str, Any], bytes], bytes]  # the child's work: the answer
Died = Callable[[dict[str, Any], str], bytes]  # the answer for a child that did not


class _Helper:
    def __init__(
        self, stdin: int, stdout: int, decode: Decode, deliver: Deliver, died: Died
    ) -> None:
        self.stdin, self.stdout = stdin, stdout
        self.decode, self.deliver, self.died = decode, deliver, died
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, _Child] = {}  # by the read end of its pipe
        self.frames = Frames()
        self.reading = True
        self.writing = True

    def run(self) -> int:
        self.selector.register(self.stdin, selectors.EVENT_READ, None)
        while self.reading or self.children:
            for key, _ in self.selector.select():
                if key.data is None:
                    self._read_requests()
                else:
                    self._read_answer(key.fd, key.data)
        return 0

    def _read_requests(self) -> None:
        try:
            data = os.read(self.stdin, _CHUNK)
            frames = self.frames.feed(data) if data else []
            if not data:
                self.frames.eof()
        except (OSError, FrameError) as err:
            print(f"qmail-lspawn's part: {err}", file=sys.stderr)
            data, frames = b"", []
        if not data:
            # qmail-lspawn: no more requests; finish the deliveries under way.
            self.reading = False
            self.selector.unregister(self.stdin)
        for request in frames:
            if request.header:
                self._start(request)
            else:
                self._kill(request.ident)

    def _start(self, request: Frame) -> None:
        try:
            fields = self.decode(request.header)
        except ValueError as err:
            self._relay(request.ident, self.died({}, f"bad request: {err}"))
            return
        try:
            r, w = os.pipe()
        except OSError as err:
            self._relay(request.ident, self.died(fields, f"no pipe: {err.strerror}"))
            return
        try:
            pid = os.fork()
        except OSError as err:
            os.close(r)
            os.close(w)
            self._relay(request.ident, self.died(fields, f"unable to fork: {err.strerror}"))
            return
        if pid == 0:
            self._child(r, w, fields, request.body)  # never returns
        os.close(w)
        self.children[r] = _Child(request.ident, pid, fields)
        self.selector.register(r, selectors.EVENT_READ, self.children[r])

    def _child(self, r: int, w: int, fields: dict[str, Any], message: bytes) -> None:
        """In the forked child: nothing of the helper's but `w` stays open
        (stdin and stdout become /dev/null, so a helper that dies is seen
        at once), then deliver as the user and exit without cleanup."""
        code = 0
        try:
            os.close(r)
            for fd in self.children:
                os.close(fd)
            self.selector.close()
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(null, 1)
            os.close(null)
            write_all(w, self.deliver(fields, message))
        except BaseException:  # the helper reports our exit status
            code = 111
        finally:
            os._exit(code)

    def _kill(self, ident: int) -> None:
        for child in self.children.values():
            if child.ident == ident:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)

    def _read_answer(self, fd: int, child: _Child) -> None:
        try:
            data = os.read(fd, _CHUNK)
        except OSError:
            data = b""
        if data:
            child.answer += data
            return
        self.selector.unregister(fd)
        os.close(fd)
        del self.children[fd]
        _, status = os.waitpid(child.pid, 0)
        if status == 0 and child.answer:
            self._relay(child.ident, bytes(child.answer))
        else:
            reason = f"ended without an answer: {_code(os.waitstatus_to_exitcode(status))}"
            self._relay(child.ident, self.died(child.request, reason))

    def _relay(self, ident: int, answer: bytes) -> None:
        if not self.writing:
            return
        try:
            write_all(self.stdout, frame(ident, answer))
        except OSError as err:
            # The scheduler is gone: finish the children, answer no one.
            if err.errno not in (errno.EPIPE, errno.EBADF):
                print(f"qmail-lspawn's part: {err}", file=sys.stderr)
            self.writing = False


def serve(stdin: int, stdout: int, decode: Decode, deliver: Deliver, died: Died) -> int:
    """The helper's loop on STDIN and STDOUT until stdin closes and the
    last child has ended."""
    return _Helper(stdin, stdout, decode, deliver, died).run()


def main() -> int:
    """`python -m quailmail.deliver.lspawn`, as root: serve the scheduler."""
    # Only stdin, stdout and stderr: what else the server left open (uvloop
    # hands its socketpairs' other ends and listening sockets on) would go
    # to every child, and one that held a copy of our stdout would hide
    # our death from the scheduler while it delivers.
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    # Everything delivery imports, imported once, while we are root (after
    # setuid the interpreter's files may be out of reach).
    from . import asuser  # noqa: PLC0415

    asuser.preload()
    return serve(sys.stdin.fileno(), sys.stdout.fileno(), asuser.decode_request,
                 asuser.deliver_request, asuser.no_answer)  # fmt: skip


# -- the client (the scheduler's side) ----------------------------------------


class LspawnError(Exception):
    """The helper could not take or finish the delivery (temporary)."""


@dataclass(slots=True)
class _Running:
    proc: asyncio.subprocess.Process
    pending: dict[int, asyncio.Future[bytes]] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None
    closing: bool = False  # close() closed its stdin


class Lspawn:
    """The scheduler's qmail-lspawn: starts the helper when first needed,
    sends it requests, hands its answers to the deliveries waiting for them.

    One per scheduler (`quail serve` worker); `close()` when it stops.
    """

    def __init__(self, argv: list[str] | None = None) -> None:
        self._argv = argv or [sys.executable, "-m", "quailmail.deliver.lspawn"]
        self._running: _Running | None = None
        self._readers: set[asyncio.Task[None]] = set()  # of helpers alive or being reaped
        self._starting = asyncio.Lock()
        self._ids = itertools.count(1)

    @property
    def pid(self) -> int | None:
        """The helper's pid, if one runs."""
        return None if self._running is None else self._running.proc.pid

    async def __aenter__(self) -> Lspawn:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def run(self, header: bytes, message: bytes) -> bytes:
        """The answer to one request; LspawnError if the helper cannot give it."""
        running = await self._helper()
        assert running.proc.stdin is not None
        ident = next(self._ids)
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        running.pending[ident] = answer
        try:
            await self._write(running, frame(ident, header, message))
            return await answer
        except asyncio.CancelledError:
            # The scheduler is stopping: the delivery is not recorded and
            # will be retried, so its child must not go on; the helper
            # kills it (its `|program`s have sessions of their own).
            with contextlib.suppress(Exception):
                running.proc.stdin.write(frame(ident, b""))
            raise
        finally:
            running.pending.pop(ident, None)

    async def close(self, timeout: float = _CLOSE_WAIT) -> None:
        """Close the helper's stdin and wait for it; SIGKILL it (and its
        children) if it has not ended within `timeout` seconds."""
        running, self._running = self._running, None
        if running is not None:
            assert running.proc.stdin is not None
            running.closing = True
            with contextlib.suppress(Exception):
                running.proc.stdin.close()
            assert running.reader is not None
            try:
                await asyncio.wait_for(asyncio.shield(running.reader), timeout)
            except TimeoutError:
                _kill_group(running.proc.pid)
        # This helper's reader, and those still reaping a helper that died;
        # one still waiting for EOF after the kill stops waiting (its
        # `finally` still fails what waits and reaps the helper).
        readers = set(self._readers)
        if readers:
            _, late = await asyncio.wait(readers, timeout=timeout)
            for reader in late:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

    async def _helper(self) -> _Running:
        async with self._starting:
            if self._running is not None:
                return self._running
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self._argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    cwd="/", start_new_session=True,
                )  # fmt: skip
            except OSError as err:
                raise LspawnError(f"unable to start qmail-lspawn's part: {err} (#4.3.0)") from err
            running = _Running(proc)
            running.reader = asyncio.get_running_loop().create_task(self._read(running))
            self._readers.add(running.reader)
            running.reader.add_done_callback(self._readers.discard)
            self._running = running
            log.info("qmail-lspawn's part started: pid %d", proc.pid)
            return running

    async def _write(self, running: _Running, data: bytes) -> None:
        stdin = running.proc.stdin
        assert stdin is not None
        if not await write_to_pipe(stdin, data):  # the helper is gone
            raise LspawnError(UNAVAILABLE)

    async def _read(self, running: _Running) -> None:
        """Answers to their deliveries until the helper's stdout closes;
        then the deliveries still waiting fail and the helper is reaped."""
        proc = running.proc
        assert proc.stdout is not None
        frames = Frames()
        try:
            while data := await proc.stdout.read(_CHUNK):
                for answer in frames.feed(data):
                    waiting = running.pending.get(answer.ident)
                    if waiting is not None and not waiting.done():
                        waiting.set_result(answer.header)
            frames.eof()
        except FrameError as err:
            log.error("qmail-lspawn's part (pid %d): %s", proc.pid, err)
        finally:
            if self._running is running:
                self._running = None  # the next delivery starts a new helper
            deferred = 0
            for waiting in running.pending.values():
                if not waiting.done():
                    waiting.set_exception(LspawnError(UNAVAILABLE))
                    deferred += 1
            if not running.closing:
                # Children of a helper that died would deliver unobserved:
                # their deliveries are retried, so end them (its group).
                _kill_group(proc.pid)
            code = await proc.wait()
            if code != 0 or deferred:
                log.warning("qmail-lspawn's part (pid %d) ended: %s, %d deliveries deferred",
                            proc.pid, _code(code), deferred)  # fmt: skip
            else:
                log.info("qmail-lspawn's part (pid %d) ended", proc.pid)


def _code(code: int) -> str:
    """An exit code as asyncio and `waitstatus_to_exitcode` give it (-N: signal N)."""
    return f"killed by signal {-code}" if code < 0 else f"exit {code}"


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
