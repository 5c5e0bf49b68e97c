"""TCP_NODELAY on the connections quail opens: a command that waits for its
answer must not also wait for the peer's delayed ACK (Nagle), which costs
up to 40 ms per exchange on Linux.  Checked with getsockopt on real
loopback connections, on asyncio's loop and on uvloop (what `quail serve`
runs when it is installed)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from quailmail.deliver.remote.client import SmtpClient
from quailmail.deliver.remote.routes import Destination
from quailmail.net.tcp import set_nodelay

from dnsfixtures import has_ipv6_loopback

uvloop = pytest.importorskip("uvloop")

LOOPS: dict[str, Callable[[Coroutine[Any, Any, None]], None]] = {
    "asyncio": asyncio.run,
    "uvloop": uvloop.run,
}
HOSTS = ["127.0.0.1", *(["::1"] if has_ipv6_loopback() else [])]


def nodelay(sock: Any) -> int:
    return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


class Greeter:
    """A listener that says 220 and waits for the client to go; `done` once
    every connection it took is closed."""

    def __init__(self) -> None:
        self.handlers: list[asyncio.Task[None]] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append(task)
        writer.write(b"220 test ESMTP\r\n")
        await writer.drain()
        await reader.read()  # until the client goes
        writer.close()
        await writer.wait_closed()

    async def done(self) -> None:
        await asyncio.gather(*self.handlers)


@pytest.mark.parametrize("loop", sorted(LOOPS))
@pytest.mark.parametrize("host", HOSTS)
def test_remote_smtp_client_sets_nodelay(loop: str, host: str) -> None:
    async def main() -> None:
        greeter = Greeter()
        server = await asyncio.start_server(greeter, host, 0)
        port = server.sockets[0].getsockname()[1]
        client = await SmtpClient.connect(
            Destination(host, host, port), timeout_connect=5.0, timeout_remote=5.0
        )
        assert nodelay(client.writer.get_extra_info("socket")) == 1
        assert (await client.read_reply()).code == 220
        client.writer.close()
        await client.writer.wait_closed()
        await greeter.done()
        server.close()
        await server.wait_closed()

    LOOPS[loop](main())


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_set_nodelay_turns_it_on_and_skips_unix_sockets(loop: str) -> None:
    async def main() -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        raw = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        assert nodelay(raw) == 0
        _, writer = await asyncio.open_connection(sock=raw)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        assert set_nodelay(writer) is True
        assert nodelay(raw) == 1
        writer.close()
        await writer.wait_closed()
        accepted.close()
        listener.close()

        ours, theirs = socket.socketpair(socket.AF_UNIX)  # a filter on a unix socket
        _, unix_writer = await asyncio.open_connection(sock=ours)
        assert set_nodelay(unix_writer) is False  # nothing to set: no Nagle on unix sockets
        unix_writer.close()
        await unix_writer.wait_closed()
        theirs.close()

    LOOPS[loop](main())
