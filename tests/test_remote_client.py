"""Remote delivery end to end on loopback: a real `quail serve`, a real DNS
server, and a tiny scripted SMTP responder for the answers a quail server
does not give (4xx, no STARTTLS, no PIPELINING)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from quailmail.auth.message import to_crlf
from quailmail.config.control import Control
from quailmail.deliver.remote import (
    RemoteSettings,
    Status,
    connect,
    deliver_remote,
    parse_smtproutes,
)
from quailmail.deliver.remote.client import dot_stuffed
from quailmail.dns.zoneserver import ZoneServer
from quailmail.queue import QueueSet

from dnsfixtures import has_ipv6_loopback, resolver_for
from serverfixtures import Running, free_port

needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no ::1")

BODY = b"hello\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n"


def message(subject: str) -> bytes:
    return (
        b"From: a@example.com\r\nTo: postmaster@mx.test\r\nSubject: "
        + subject.encode()
        + b"\r\n\r\n"
        + BODY
    )


def settings(routes: bytes = b"", **options: Any) -> RemoteSettings:
    options.setdefault("timeout_connect", 5.0)
    options.setdefault("timeout_remote", 10.0)
    return RemoteSettings(helo="client.test", routes=parse_smtproutes(routes), **options)


def queued(server: Running) -> list[bytes]:
    queue = QueueSet(server.root / "queue")
    return [queue.read_sync(m.id) for m in queue.messages()]


# -- dot-stuffing ---------------------------------------------------------


def unstuff(wire: bytes) -> bytes:
    assert wire.endswith(b"\r\n.\r\n")
    lines = wire[:-3].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


@pytest.mark.parametrize("block", [1, 2, 3, 5, 64 * 1024])
def test_dot_stuffing_in_blocks(block: int) -> None:
    data = b".first\r\nx\r\n.\r\n..\r\nmid.dle\r\n" * 7 + b"."
    wire = b"".join(dot_stuffed(data, block))
    reference = b"." + data.replace(b"\r\n.", b"\r\n..") + b"\r\n.\r\n"
    assert wire == reference
    assert unstuff(wire) == data + b"\r\n"
    assert b"".join(dot_stuffed(b"", block)) == b".\r\n"
    assert b"".join(dot_stuffed(b"a\r\n", block)) == b"a\r\n.\r\n"


def test_bare_lf_becomes_crlf() -> None:
    assert to_crlf(b"a\nb\r\nc\n") == b"a\r\nb\r\nc\r\n"
    same = b"a\r\nb\r\n"
    assert to_crlf(same) is same


# -- a real quail serve ---------------------------------------------------


@pytest.mark.parametrize("host", [pytest.param("::1", marks=needs_ipv6), "127.0.0.1"])
def test_delivery_to_quail_serve(
    server_factory: Callable[..., Running], dns_server: ZoneServer, host: str
) -> None:
    server = server_factory()
    literal = f"[{host}]" if ":" in host else host
    config = settings(f"mx.test:{literal}:{server.smtp}\n".encode())
    resolver = resolver_for(dns_server)

    async def go() -> tuple[list[Any], list[Any], str | None]:
        async with await connect("mx.test", resolver=resolver, settings=config) as session:
            first = await session.send(
                "a@example.com",
                ["postmaster@mx.test", "zz9-plural-z-alpha@mx.test", "root@localhost"],
                message("one"),
            )
            second = await session.send("", ["postmaster@mx.test"], message("two"))
            assert session.destination.address == host
            return first, second, session.tls_version

    first, second, tls_version = asyncio.run(go())
    assert [o.status for o in first] == [Status.DELIVERED, Status.PERMANENT, Status.DELIVERED]
    assert first[1].reply.startswith("550 5.1.1")
    assert [o.status for o in second] == [Status.DELIVERED]
    assert tls_version is not None and tls_version.startswith("TLS")
    stored = sorted(queued(server), key=lambda m: b"Subject: two" in m)
    assert len(stored) == 2
    for data, subject in zip(stored, (b"one", b"two"), strict=True):
        header, _, body = data.partition(b"\r\n\r\n")
        assert b"Subject: " + subject in header
        assert b"using TLS" in header  # the Received line: STARTTLS was used
        assert body == BODY  # dot-stuffing round trip


# -- a scripted responder -------------------------------------------------


@dataclass
class Responder:
    """Answers as told; records every command and every message."""

    extensions: list[str] = field(default_factory=lambda: ["PIPELINING", "8BITMIME", "SIZE 0"])
    greeting: str = "220 responder ready"
    mail: str = "250 ok"
    rcpt: Callable[[str], str] = lambda _: "250 ok"
    data: str = "354 go"
    final: str = "250 queued"
    starttls: str = "454 4.7.0 TLS not available"
    commands: list[str] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    connections: int = 0
    peers: list[str] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.peers.append(writer.get_extra_info("peername")[0])

        def say(text: str) -> None:
            writer.write(text.encode() + b"\r\n")

        mail_ok = False
        say(self.greeting)
        if not self.greeting.startswith("220"):
            await writer.drain()
            writer.close()
            return
        while line := await reader.readline():
            command = line.decode().rstrip("\r\n")
            self.commands.append(command)
            verb = command.split(" ", 1)[0].upper()
            if verb == "EHLO":
                lines = ["responder", *self.extensions]
                for i, text in enumerate(lines):
                    say(f"250{'-' if i < len(lines) - 1 else ' '}{text}")
            elif verb == "MAIL":
                say(self.mail)
                mail_ok = self.mail.startswith("250")
            elif verb == "RCPT":
                say(self.rcpt(command))
            elif verb == "DATA" and not mail_ok:
                say("503 5.5.1 MAIL first")
            elif verb == "DATA":
                say(self.data)
                if self.data.startswith("354"):
                    await writer.drain()
                    lines_in = []
                    while (got := await reader.readline()) != b".\r\n":
                        lines_in.append(got)
                    self.messages.append(b"".join(lines_in))
                    say(self.final)
            elif verb == "STARTTLS":
                say(self.starttls)
                if self.starttls.startswith("220"):
                    writer.write(b"this is not a TLS handshake\r\n")  # the handshake fails
                    await writer.drain()
                    break
            elif verb == "QUIT":
                say("221 bye")
                break
            else:
                say("250 ok")
            await writer.drain()
        await writer.drain()
        writer.close()


async def serving(
    responder: Responder, port: int, hosts: tuple[str, ...], run: Callable[[], Awaitable[Any]]
) -> Any:
    server = await asyncio.start_server(responder.handle, list(hosts), port)
    async with server:
        return await run()


def deliver_to(
    responder: Responder,
    dns_server: ZoneServer,
    recipients: list[str],
    data: bytes = b"Subject: x\r\n\r\nbody\r\n",
    sender: str = "a@example.com",
) -> list[Any]:
    port = free_port()
    config = settings(f"dest.test:127.0.0.1:{port}\n".encode())

    async def run() -> list[Any]:
        return await deliver_remote(
            "dest.test",
            sender,
            recipients,
            data,
            resolver=resolver_for(dns_server),
            settings=config,
        )

    result: list[Any] = asyncio.run(serving(responder, port, ("127.0.0.1",), run))
    return result


def test_4xx_is_temporary_5xx_permanent_per_recipient(dns_server: ZoneServer) -> None:
    responder = Responder(
        rcpt=lambda c: (
            "451 4.3.0 later" if "later" in c else "550 5.1.1 no" if "no@" in c else "250 ok"
        )
    )
    outcomes = deliver_to(
        responder, dns_server, ["later@dest.test", "no@dest.test", "yes@dest.test"]
    )
    assert [o.status for o in outcomes] == [Status.TEMPORARY, Status.PERMANENT, Status.DELIVERED]
    assert outcomes[0].reply == "451 4.3.0 later"
    # Pipelined: MAIL, both RCPTs and DATA came before any reply was needed.
    assert [c.split(":")[0] for c in responder.commands[1:6]] == [
        "MAIL FROM",
        "RCPT TO",
        "RCPT TO",
        "RCPT TO",
        "DATA",
    ]
    # No STARTTLS offered: plain text, no TLS attempted.
    assert not any(c.startswith("STARTTLS") for c in responder.commands)
    assert responder.messages == [b"Subject: x\r\n\r\nbody\r\n"]


@pytest.mark.parametrize(
    ("where", "status"),
    [("mail", Status.TEMPORARY), ("data", Status.PERMANENT), ("final", Status.TEMPORARY)],
)
def test_failure_at_mail_or_data_applies_to_all(
    dns_server: ZoneServer, where: str, status: Status
) -> None:
    responder = Responder()
    if where == "mail":
        responder.mail = "451 4.7.1 greylisted"
    elif where == "data":
        responder.data = "554 5.7.1 no"
    else:
        responder.final = "452 4.3.1 full"
    outcomes = deliver_to(responder, dns_server, ["a@dest.test", "b@dest.test"])
    assert [o.status for o in outcomes] == [status, status]
    assert responder.messages == ([] if where != "final" else [b"Subject: x\r\n\r\nbody\r\n"])


def test_without_pipelining_and_8bit(dns_server: ZoneServer) -> None:
    responder = Responder(extensions=["8BITMIME", "SIZE 100000"])
    data = "Subject: é\r\n\r\nbody\r\n".encode()
    outcomes = deliver_to(responder, dns_server, ["a@dest.test"], data)
    assert [o.status for o in outcomes] == [Status.DELIVERED]
    mail = next(c for c in responder.commands if c.startswith("MAIL"))
    assert mail == f"MAIL FROM:<a@example.com> SIZE={len(data)} BODY=8BITMIME"


def test_smtputf8_needed_but_not_offered_is_permanent(dns_server: ZoneServer) -> None:
    responder = Responder()
    outcomes = deliver_to(responder, dns_server, ["jürgen@dest.test"])
    assert [o.status for o in outcomes] == [Status.PERMANENT]
    assert "SMTPUTF8" in outcomes[0].reply
    assert responder.messages == []
    responder = Responder(extensions=["PIPELINING", "SMTPUTF8"])
    outcomes = deliver_to(responder, dns_server, ["jürgen@dest.test"])
    assert [o.status for o in outcomes] == [Status.DELIVERED]
    assert any(c.endswith(" SMTPUTF8") and c.startswith("MAIL") for c in responder.commands)


@needs_ipv6
def test_aaaa_first_then_a(dns_server: ZoneServer) -> None:
    """The MX host's AAAA (::1) refuses the connection; its A (127.0.0.1)
    takes the message."""
    dns_server.zone.add_mx("dest6.test", 10, "mx.dest6.test")
    dns_server.zone.add_aaaa("mx.dest6.test", "::1")
    dns_server.zone.add_a("mx.dest6.test", "127.0.0.1")
    port = free_port()
    responder = Responder()
    config = settings(port=port)

    async def run() -> tuple[Any, ...]:
        session = await connect(
            "dest6.test", resolver=resolver_for(dns_server), settings=config, rng=random.Random(0)
        )
        async with session:
            outcomes = await session.send("", ["x@dest6.test"], b"Subject: y\r\n\r\nz\r\n")
            return session.attempts, session.destination, outcomes

    attempts, destination, outcomes = asyncio.run(serving(responder, port, ("127.0.0.1",), run))
    assert [(a.destination.address, a.destination.host) for a in attempts] == [
        ("::1", "mx.dest6.test")
    ]
    assert destination.address == "127.0.0.1"
    assert [o.status for o in outcomes] == [Status.DELIVERED]


def test_refusing_greeting_moves_to_the_next_mx(dns_server: ZoneServer) -> None:
    dns_server.zone.add_mx("two.test", 10, "first.two.test")
    dns_server.zone.add_mx("two.test", 20, "second.two.test")
    dns_server.zone.add_a("first.two.test", "127.0.0.1")
    dns_server.zone.add_a("second.two.test", "127.0.0.2")
    port = free_port()
    first = Responder(greeting="554 go away")
    second = Responder()
    config = settings(port=port)

    async def run() -> list[Any]:
        server = await asyncio.start_server(first.handle, "127.0.0.1", port)
        async with server:
            return await serving(
                second,
                port,
                ("127.0.0.2",),
                lambda: deliver_remote(
                    "two.test",
                    "",
                    ["p@two.test"],
                    b"\r\n",
                    resolver=resolver_for(dns_server),
                    settings=config,
                ),
            )

    outcomes = asyncio.run(run())
    assert [o.status for o in outcomes] == [Status.DELIVERED]
    assert outcomes[0].host == "second.two.test"
    assert first.connections == 1 and second.connections == 1


def test_nothing_reachable_is_temporary_null_mx_permanent(
    dns_server: ZoneServer, tmp_path: Path
) -> None:
    dns_server.zone.add_mx("nomail.test", 0, "")
    dns_server.zone.add_a("down.test", "127.0.0.1")
    resolver = resolver_for(dns_server)
    config = settings(port=free_port())

    async def run(domain: str) -> list[Any]:
        return await deliver_remote(
            domain, "", ["a@" + domain, "b@" + domain], b"x\r\n", resolver=resolver, settings=config
        )

    down = asyncio.run(run("down.test"))
    assert [o.status for o in down] == [Status.TEMPORARY] * 2
    assert "127.0.0.1" in down[0].reply
    nomail = asyncio.run(run("nomail.test"))
    assert [o.status for o in nomail] == [Status.PERMANENT] * 2
    assert "accepts no mail (RFC 7505)" in nomail[0].reply


def test_outgoingip_and_control_files(dns_server: ZoneServer, tmp_path: Path) -> None:
    port = free_port()
    control = tmp_path / "control"
    control.mkdir()
    (control / "me").write_text("me.test\n")
    (control / "smtproutes").write_text(f"dest.test:127.0.0.1:{port}\n")
    (control / "outgoingip").write_text("127.0.0.3\n")
    (control / "outgoingip6").write_text("::\n")
    (control / "timeoutconnect").write_text("7\n")
    config = RemoteSettings.from_control(Control(tmp_path))
    assert (config.helo, config.timeout_connect, config.timeout_remote) == ("me.test", 7.0, 1200.0)
    assert (config.outgoing_ip, config.outgoing_ip6) == ("127.0.0.3", None)
    (control / "helohost").write_text("out.test\n")
    assert RemoteSettings.from_control(Control(tmp_path)).helo == "out.test"
    responder = Responder()

    async def run() -> list[Any]:
        return await deliver_remote(
            "dest.test",
            "",
            ["a@dest.test"],
            b"x\r\n",
            resolver=resolver_for(dns_server),
            settings=config,
        )

    outcomes = asyncio.run(serving(responder, port, ("127.0.0.1",), run))
    assert [o.status for o in outcomes] == [Status.DELIVERED]
    assert responder.peers == ["127.0.0.3"]
    assert responder.commands[0] == "EHLO me.test"


def test_failed_starttls_moves_on_and_never_falls_back_to_plain(dns_server: ZoneServer) -> None:
    """A server that offers STARTTLS but cannot finish the handshake counts
    as unreachable: the next address is tried, the message is never sent in
    plain text to the server that offered TLS."""
    dns_server.zone.add_mx("tls.test", 10, "bad.tls.test")
    dns_server.zone.add_mx("tls.test", 20, "good.tls.test")
    dns_server.zone.add_a("bad.tls.test", "127.0.0.1")
    dns_server.zone.add_a("good.tls.test", "127.0.0.2")
    port = free_port()
    bad = Responder(extensions=["PIPELINING", "STARTTLS"], starttls="220 go ahead")
    good = Responder()
    config = settings(port=port)

    async def run() -> list[Any]:
        server = await asyncio.start_server(bad.handle, "127.0.0.1", port)
        async with server:
            return await serving(
                good,
                port,
                ("127.0.0.2",),
                lambda: deliver_remote(
                    "tls.test",
                    "",
                    ["p@tls.test"],
                    b"\r\n",
                    resolver=resolver_for(dns_server),
                    settings=config,
                ),
            )

    outcomes = asyncio.run(run())
    assert [o.status for o in outcomes] == [Status.DELIVERED]
    assert outcomes[0].host == "good.tls.test"
    assert "STARTTLS" in bad.commands and bad.messages == []
