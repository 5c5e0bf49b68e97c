"""A small authoritative DNS server on loopback, for tests and benchmarks.

`ZoneServer` answers from a `Zone` on UDP and TCP (same port, 127.0.0.1 and
optionally ::1) in a background thread with its own asyncio loop, so
synchronous tests, subprocesses (the `quail` CLI, perl and C peers) and async
code can all query it.  Wire format is dnspython's; we only frame TCP
messages with their two-octet length (RFC 1035 §4.2.2).

UDP answers larger than 512 octets, or than the payload size the client
advertised with EDNS (RFC 6891 §6.2.5), are sent with TC set and only the
header and question (RFC 1035 §4.1.1, RFC 2181 §9), so the client asks again
over TCP (RFC 7766 §5), where the full answer is served.

Standalone, for benchmarks:
    python -m quailmail.dns.zoneserver --zone FILE [--keytable FILE]
        [--tinydns FILE] [--port N] [--bind ADDR]...
prints the port on stdout and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import signal
import socket
import struct
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, cast

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from quailmail.dns.zone import Fault, Zone

__all__ = ["Fault", "Query", "Zone", "ZoneServer", "main"]

log = logging.getLogger(__name__)

UDP_LIMIT = 512  # RFC 1035 §2.3.4, when the query has no EDNS OPT record
TCP_LIMIT = 65535  # RFC 1035 §4.2.2: two-octet length prefix
OUR_PAYLOAD = 1232  # what we advertise back in OPT (DNS flag day 2020)
TCP_IDLE = 10.0  # seconds; RFC 7766 §6.2.3 wants idle connections closed


class Query(NamedTuple):
    """One question the server received, for tests to count."""

    name: str  # lower case, no trailing dot
    rdtype: str  # "TXT", "A", ...
    transport: str  # "udp" or "tcp"


class ZoneServer:
    """Serves `zone` on `bind` addresses, one port for UDP and TCP.

    `port=0` picks a free ephemeral port.  The zone may be changed while the
    server runs; `queries` logs every question received (dropped ones too).
    """

    def __init__(
        self,
        zone: Zone | None = None,
        *,
        bind: Sequence[str] = ("127.0.0.1",),
        port: int = 0,
    ) -> None:
        if not bind:
            raise ValueError("nothing to bind to")
        self.zone = zone if zone is not None else Zone()
        self.bind = tuple(bind)
        self.port = port
        self.queries: list[Query] = []
        self._sockets: list[socket.socket] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._connections: dict[asyncio.Task[None], socket.socket] = {}

    # -- where it listens ----------------------------------------------------

    @property
    def address(self) -> str:
        """The first bind address (127.0.0.1 unless told otherwise)."""
        return self.bind[0]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """(host, port) of every address, for `DnsResolver(servers=...)`."""
        return [(host, self.port) for host in self.bind]

    @property
    def spec(self) -> str:
        """`HOST:PORT` of the first address, for `quail --dns`."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    # -- what it saw -----------------------------------------------------------

    def count(self, name: str | None = None, rdtype: str | None = None) -> int:
        """How many questions matched (name without trailing dot, any case)."""
        wanted = name.lower().rstrip(".") if name is not None else None
        return sum(
            1
            for query in list(self.queries)
            if (wanted is None or query.name == wanted)
            and (rdtype is None or query.rdtype == rdtype.upper())
        )

    # -- life cycle --------------------------------------------------------------

    def start(self) -> ZoneServer:
        if self._thread is not None:
            raise RuntimeError("ZoneServer already started")
        self._sockets = self._bind_all()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=f"zoneserver:{self.port}", daemon=True
        )
        self._thread.start()
        ready.wait()
        if self._failure is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError(f"DNS test server failed to start: {self._failure}")
        return self

    def stop(self) -> None:
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended on its own
                loop.call_soon_threadsafe(stopping.set)
        thread.join()
        self._thread = None

    def __enter__(self) -> ZoneServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _bind_all(self) -> list[socket.socket]:
        """UDP and TCP sockets on every address, all on one port number.

        With port 0 the kernel picks the first one's port; another process may
        hold that port on TCP or on ::1, so try again with a fresh one.
        """
        for _attempt in range(20):
            sockets: list[socket.socket] = []
            port = self.port
            try:
                for host in self.bind:
                    family = socket.AF_INET6 if ":" in host else socket.AF_INET
                    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                        sock = socket.socket(family, kind)
                        sockets.append(sock)
                        if kind == socket.SOCK_STREAM:
                            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                        sock.bind((host, port))
                        port = sock.getsockname()[1]
                        if kind == socket.SOCK_STREAM:
                            sock.listen(64)
                        sock.setblocking(False)
            except OSError as error:
                for sock in sockets:
                    sock.close()
                if error.errno != errno.EADDRINUSE or self.port != 0:
                    raise
                continue
            self.port = port
            return sockets
        raise OSError(errno.EADDRINUSE, "no free port for UDP and TCP together")

    def _run(self, ready: threading.Event) -> None:
        # asyncio.Runner, as asyncio.run: on the way out it cancels any task
        # left and lets closing transports finish.
        try:
            with asyncio.Runner() as runner:
                self._loop = runner.get_loop()
                runner.run(self._serve(ready))
        except Exception as error:  # reported to start(), or logged
            self._failure = error
            if ready.is_set():
                log.exception("DNS test server stopped on an error")
        finally:
            for sock in self._sockets:
                sock.close()
            ready.set()

    async def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        transports: list[asyncio.BaseTransport] = []
        listeners: list[socket.socket] = []
        try:
            for sock in self._sockets:
                if sock.type == socket.SOCK_DGRAM:
                    transport, _ = await loop.create_datagram_endpoint(
                        lambda: _UdpProtocol(self), sock=sock
                    )
                    transports.append(transport)
                else:
                    loop.add_reader(sock, self._accept, sock)
                    listeners.append(sock)
            ready.set()
            await self._stopping.wait()
        finally:
            for listener in listeners:
                loop.remove_reader(listener)
            for endpoint in transports:
                endpoint.close()
            tasks = list(self._connections)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # A task cancelled before its first step never ran its finally.
            for conn in list(self._connections.values()):
                conn.close()

    # -- protocol ---------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        """Accept on a readable listening socket.

        Plain accept() in a reader callback rather than asyncio.Server: a
        connection is registered before the loop can switch, so stop() finds
        it (3.11's Server drops one accepted while it closes, socket and all).
        """
        while True:
            try:
                conn, _peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # out of descriptors and the like
                log.warning("DNS test server: accept failed: %s", error)
                return
            conn.setblocking(False)
            task = asyncio.get_running_loop().create_task(self._tcp_client(conn))
            self._connections[task] = conn
            task.add_done_callback(self._connection_done)

    def _connection_done(self, task: asyncio.Task[None]) -> None:
        conn = self._connections.pop(task, None)
        if conn is not None:
            conn.close()

    async def _tcp_client(self, conn: socket.socket) -> None:
        reader, writer = await asyncio.open_connection(sock=conn)
        try:
            while True:  # RFC 7766 §6.2.1: several queries on one connection
                async with asyncio.timeout(TCP_IDLE):
                    header = await reader.readexactly(2)
                    (length,) = struct.unpack("!H", header)
                    data = await reader.readexactly(length)
                wire = self.answer(data, "tcp")
                if wire is not None:
                    writer.write(struct.pack("!H", len(wire)) + wire)
                    await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass  # the client closed or idled out; nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    def answer(self, data: bytes, transport: str) -> bytes | None:
        """The wire response to one query, or None to stay silent."""
        try:
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query, our_payload=OUR_PAYLOAD)
        except dns.exception.DNSException:
            return None  # not a DNS query, or too broken to answer
        try:
            return self._respond(query, response, transport)
        except Exception:
            # A bug here must show in the test as SERVFAIL, not kill the server.
            log.exception("DNS test server failed to answer %s", query.question)
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()

    def _respond(
        self, query: dns.message.Message, response: dns.message.Message, transport: str
    ) -> bytes | None:
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return response.to_wire()
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        kind = dns.rdatatype.to_text(question.rdtype)
        self.queries.append(Query(name, kind, transport))
        if question.rdclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.REFUSED)
            return response.to_wire()
        lookup = self.zone.lookup(question.name, question.rdtype)
        if lookup.fault is Fault.TIMEOUT:
            return None
        if lookup.fault is not None:
            response.set_rcode(
                dns.rcode.SERVFAIL if lookup.fault is Fault.SERVFAIL else dns.rcode.REFUSED
            )
            return response.to_wire()
        response.flags |= dns.flags.AA
        response.set_rcode(lookup.rcode)
        response.answer.extend(lookup.answer)
        response.authority.extend(lookup.authority)
        if transport == "tcp":
            limit = TCP_LIMIT
        else:
            limit = max(UDP_LIMIT, query.payload) if query.edns >= 0 else UDP_LIMIT
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            # RFC 2181 §9: a truncated answer is not to be used, so send none.
            response.flags |= dns.flags.TC
            response.answer.clear()
            response.authority.clear()
            response.additional.clear()
            return response.to_wire(max_size=limit)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: ZoneServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio hands a datagram endpoint its DatagramTransport typed as the base class.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        wire = self.server.answer(data, "udp")
        if wire is not None and self.transport is not None:
            self.transport.sendto(wire, addr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m quailmail.dns.zoneserver",
        description="Serve test zones on loopback; prints the port, stops on SIGTERM/SIGINT.",
    )
    parser.add_argument(
        "--zone",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="records as NAME [TTL] TYPE VALUE lines",
    )
    parser.add_argument(
        "--keytable",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="key table (NAME  TXT-VALUE lines, Mail::DKIM FAKE_DNS.dat format)",
    )
    parser.add_argument(
        "--tinydns",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="tinydns-data lines",
    )
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument(
        "--bind",
        action="append",
        default=[],
        metavar="ADDR",
        help="address to listen on, repeatable (default 127.0.0.1)",
    )
    args = parser.parse_args(argv)
    zone = Zone()
    try:
        for path in args.zone:
            zone.load_text(path.read_text(encoding="utf-8"))
        for path in args.keytable:
            zone.load_keytable(path.read_text(encoding="utf-8"))
        for path in args.tinydns:
            zone.load_tinydns(path.read_text(encoding="utf-8"))
        server = ZoneServer(zone, bind=args.bind or ["127.0.0.1"], port=args.port).start()
    except (OSError, ValueError, RuntimeError) as error:
        print(f"zoneserver: {error}", file=sys.stderr)
        return 111
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: done.set())
    print(server.port, flush=True)
    try:
        done.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
