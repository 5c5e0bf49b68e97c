"""`quail serve`: open the queue, bind every listener, run until SIGTERM.

Shutdown (SIGTERM or SIGINT): stop accepting, tell idle clients 421 and
close them, let transactions under way finish (bounded by
`SHUTDOWN_GRACE`), then close the queue, which finishes pending writes.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import socket
from pathlib import Path

from quailmail.config.control import control_for
from quailmail.deliver.scheduler import Scheduler
from quailmail.dns.resolver import make_resolver
from quailmail.net.addresses import parse_networks
from quailmail.net.listeners import Listener, read_listeners
from quailmail.net.tls import server_context
from quailmail.queue import Queue, shard_path
from quailmail.server.connection import SmtpConnection
from quailmail.server.state import DEFAULT_CONCURRENCY, ServerState

log = logging.getLogger("quailmail.serve")
SHUTDOWN_GRACE = 30.0
BACKLOG = 1024


class ServeError(Exception):
    """The server cannot start; one line saying why."""


def _socket(listener: Listener, *, shared: bool) -> socket.socket:
    family = socket.AF_INET6 if listener.ipv6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            # Several workers bind the same address; the kernel spreads the
            # connections among them (ARCHITECTURE.md, Scale).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if listener.ipv6:
            # ::1 and 127.0.0.1 on the same port are two sockets.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((listener.address, listener.port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {listener}: {exc.strerror or exc}") from None
    return sock


def load_state(root: Path, queue: Queue) -> ServerState:
    control = control_for(root)
    hostname = control.value("me") or socket.getfqdn()
    cert = root / "control" / "servercert.pem"
    try:
        tls = server_context(cert) if cert.exists() else None
    except (OSError, ValueError) as exc:
        raise ServeError(f"cannot use {cert}: {exc}") from None
    try:
        proxy_from = parse_networks(control.lines("proxyfrom"))
    except ValueError as exc:
        raise ServeError(f"control/proxyfrom: {exc}") from None
    try:
        resolver = make_resolver(None, root)
    except ValueError as exc:
        raise ServeError(f"control/dnsservers: {exc}") from None
    return ServerState(
        root=root,
        control=control,
        queue=queue,
        tls=tls,
        proxy_from=proxy_from,
        hostname=hostname,
        resolver=resolver,
        max_connections=control.int_value("concurrencyincoming", DEFAULT_CONCURRENCY),
        max_per_ip=control.int_value("concurrencyperip", 0),
    )


def raise_file_limit() -> int:
    """Every client is a descriptor: lift the soft limit to the hard one
    (1,024 by default would cap connections below concurrencyincoming)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
        return hard
    return soft


async def serve(
    root: Path,
    *,
    worker: int = 0,
    workers: int = 1,
    ready: asyncio.Event | None = None,
    deliver: bool = True,
) -> None:
    """Serve as worker `worker` of `workers` (each its own queue shard);
    `deliver`: run the scheduler on that shard (else receive only)."""
    raise_file_limit()
    try:
        listeners = read_listeners(root)
    except ValueError as exc:
        raise ServeError(str(exc)) from None
    sockets = [(listener, _socket(listener, shared=workers > 1)) for listener in listeners]
    try:
        queue = Queue.open(shard_path(root / "queue", worker))
    except Exception as exc:
        for _, sock in sockets:
            sock.close()
        raise ServeError(f"cannot open the queue: {exc}") from None
    state = load_state(root, queue)
    state.max_connections = max(1, state.max_connections // workers)
    loop = asyncio.get_running_loop()
    servers = []
    for listener, sock in sockets:

        def factory(listener: Listener = listener) -> SmtpConnection:
            return SmtpConnection(state, listener)

        tls = state.tls if listener.implicit_tls else None
        if listener.implicit_tls and tls is None:
            raise ServeError(f"{listener} needs control/servercert.pem")
        servers.append(await loop.create_server(factory, sock=sock, ssl=tls, backlog=BACKLOG))
        log.info("listening: %s", listener)
    scheduler = None
    if deliver:
        scheduler = Scheduler(root, queue, resolver=state.resolver, worker=worker, workers=workers)
        await scheduler.start()
        # qmail-send: SIGALRM means "try every pending delivery now".
        loop.add_signal_handler(signal.SIGALRM, scheduler.flush)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        state.stopping = True
        for server in servers:
            server.close()
        for connection in list(state.connections_set):
            connection.shutdown()
        deadline = loop.time() + SHUTDOWN_GRACE
        while state.in_transaction > 0 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(state.connections_set):
            connection._close()
        if scheduler is not None:
            loop.remove_signal_handler(signal.SIGALRM)
            await scheduler.stop(max(1.0, deadline - loop.time()))
        await queue.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        log.info("stopped")
