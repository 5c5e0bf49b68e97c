"""DNS fixtures: a real authoritative server on loopback and a clock to move.

- `dns_server`: a started ZoneServer with an empty Zone; fill `dns_server.zone`.
- `start_dns_server(zone=None, *, bind=...)`: start more servers (stopped at
  teardown), e.g. two for fail-over tests or one on ::1.
- `keytable_dns_server(path)`: a server for a key table file (`NAME  VALUE`).
- `resolver_for(server, **options)`: a DnsResolver asking only that server,
  with a short timeout so a failing test fails fast.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from quailmail.dns.resolver import DnsResolver
from quailmail.dns.zoneserver import Zone, ZoneServer


class FakeMonotonic:
    """A monotonic clock the test moves by hand (no sleeps)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def resolver_for(server: ZoneServer, **options: Any) -> DnsResolver:
    options.setdefault("timeout", 2.0)
    return DnsResolver(server.addresses, **options)


@pytest.fixture
def start_dns_server() -> Iterator[Callable[..., ZoneServer]]:
    started: list[ZoneServer] = []

    def start(zone: Zone | None = None, *, bind: Sequence[str] = ("127.0.0.1",)) -> ZoneServer:
        server = ZoneServer(zone if zone is not None else Zone(), bind=bind).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def dns_server(start_dns_server: Callable[..., ZoneServer]) -> ZoneServer:
    return start_dns_server()


@pytest.fixture
def keytable_dns_server(
    start_dns_server: Callable[..., ZoneServer],
) -> Callable[[str | Path], ZoneServer]:
    def start(path: str | Path) -> ZoneServer:
        return start_dns_server(Zone.from_keytable(path))

    return start
