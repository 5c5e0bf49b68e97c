"""The failure cases of delivery, each against real `quail serve` processes:
a destination down then up, 4xx then 2xx, 5xx and its DSN, queuelifetime,
AAAA unreachable then A, a key that cannot be read, kill -9 mid-delivery."""

from __future__ import annotations

import email
import email.policy
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from quailmail.dns.zoneserver import ZoneServer
from scriptedsmtp import Script, ScriptedSmtp
from test_delivery import (
    _destination,
    _published_key,
    flush,
    log_of,
    maildir,
    message,
    queue_ids,
    restart,
    send,
    wait_for,
)

from dnsfixtures import has_ipv6_loopback
from serverfixtures import Running, free_port


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedSmtp]]:
    started: list[ScriptedSmtp] = []

    def start(script: Script, host: str = "127.0.0.1", port: int = 0) -> ScriptedSmtp:
        server = ScriptedSmtp(script, host, port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def routed(port: int, relay: str = "127.0.0.1", **extra: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        (root / "control" / "smtproutes").write_text(f"dest.test:{relay}:{port}\n")
        for name, value in extra.items():
            (root / "control" / name).write_text(value + "\n")

    return setup


def bounce_report(box: Path) -> tuple[email.message.EmailMessage, str]:
    wait_for(lambda: maildir(box), what="the bounce")
    (raw,) = maildir(box)
    report = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(report, email.message.EmailMessage)
    assert report.get_content_type() == "multipart/report"
    parts = [p for p in report.walk() if p.get_content_type() == "message/delivery-status"]
    return report, parts[0].as_string()


def test_destination_down_then_up(server_factory: Callable[..., Running]) -> None:
    dest = server_factory(_destination, name="dest", deliver=True)
    dest.stop()
    source = server_factory(routed(dest.smtp), name="source", deliver=True)
    send(source, "joe@sender.test", ["ann@dest.test"], message("later"))
    wait_for(lambda: "deferred" in log_of(source), what="a deferral")
    assert len(queue_ids(source)) == 1
    dest = restart(dest)
    try:
        flush(source)
        box = dest.root / "domains" / "dest.test" / "ann" / "Maildir"
        wait_for(lambda: maildir(box), what="delivery after the flush")
        wait_for(lambda: not queue_ids(source), what="the source queue to empty")
    finally:
        dest.stop()


def test_4xx_then_2xx(
    server_factory: Callable[..., Running], scripted: Callable[..., ScriptedSmtp]
) -> None:
    remote = scripted(Script(final=lambda n: "451 4.3.0 try again later" if n == 0 else "250 ok"))
    source = server_factory(routed(remote.port), name="source", deliver=True)
    send(source, "joe@sender.test", ["ann@dest.test"], message("retry"))
    wait_for(lambda: "deferred" in log_of(source), what="a deferral")
    assert "451 4.3.0 try again later" in log_of(source)
    assert not remote.script.accepted
    flush(source)
    wait_for(lambda: remote.script.accepted, what="the second attempt")
    ((sender, rcpts, data),) = remote.script.accepted
    assert (sender, rcpts) == ("joe@sender.test", ["ann@dest.test"])
    assert data.endswith(b"body line one\r\n.leading dot\r\nlast line retry\r\n")
    wait_for(lambda: not queue_ids(source), what="the source queue to empty")


def test_5xx_bounces_with_a_dsn(
    server_factory: Callable[..., Running], scripted: Callable[..., ScriptedSmtp]
) -> None:
    refuse = "550 5.1.1 <nobody@dest.test>: no such user"
    remote = scripted(Script(rcpt=lambda a: refuse if a.startswith("nobody") else "250 ok"))
    source = server_factory(routed(remote.port), name="source", deliver=True)
    send(source, "postmaster@mx.test", ["ann@dest.test", "nobody@dest.test"], message("half"))
    report, status = bounce_report(source.root / "alias" / "Maildir")
    assert report["To"] == "postmaster@mx.test"
    assert "Final-Recipient: rfc822; nobody@dest.test" in status
    assert "ann@dest.test" not in status  # delivered, so not in the report
    assert "Action: failed" in status
    assert "Status: 5.1.1" in status
    assert "Remote-MTA: dns; 127.0.0.1" in status
    assert "Diagnostic-Code: smtp; 550 5.1.1 <nobody@dest.test>: no such user" in status
    assert [r for _, r, _ in remote.script.accepted] == [["ann@dest.test"]]
    wait_for(lambda: not queue_ids(source), what="the source queue to empty")


def test_queuelifetime_passed_bounces(server_factory: Callable[..., Running]) -> None:
    closed = free_port()  # nobody listens here
    source = server_factory(routed(closed, queuelifetime="1"), name="source", deliver=True)
    send(source, "postmaster@mx.test", ["ann@dest.test"], message("old"))
    wait_for(lambda: "deferred" in log_of(source), what="a deferral")
    time.sleep(1.5)
    flush(source)
    report, status = bounce_report(source.root / "alias" / "Maildir")
    assert "Final-Recipient: rfc822; ann@dest.test" in status
    assert "Status: 4." in status  # what kept failing was temporary
    assert "too long" in report.as_string()
    wait_for(lambda: not queue_ids(source), what="the source queue to empty")


def test_aaaa_unreachable_then_a(
    server_factory: Callable[..., Running],
    scripted: Callable[..., ScriptedSmtp],
    dns_server: ZoneServer,
) -> None:
    if not has_ipv6_loopback():
        pytest.skip("no ::1 here")
    port = free_port()  # free on ::1 and 127.0.0.1; only 127.0.0.1 will answer
    remote = scripted(Script(), "127.0.0.1", port)
    dns_server.zone.add_aaaa("relay.test", "::1")
    dns_server.zone.add_a("relay.test", "127.0.0.1")
    setup = routed(port, "relay.test", dnsservers=dns_server.spec)
    source = server_factory(setup, name="source", deliver=True)
    send(source, "joe@sender.test", ["ann@dest.test"], message("v4"))
    wait_for(lambda: remote.script.accepted, what="delivery over IPv4")
    assert dns_server.count("relay.test", "AAAA") >= 1
    wait_for(lambda: not queue_ids(source), what="the source queue to empty")


def test_unreadable_key_keeps_the_message_queued(
    server_factory: Callable[..., Running],
    scripted: Callable[..., ScriptedSmtp],
    dns_server: ZoneServer,
) -> None:
    remote = scripted(Script())
    keys = Path()

    def setup(root: Path) -> None:
        nonlocal keys
        routed(remote.port, dnsservers=dns_server.spec)(root)
        _published_key(root, dns_server)
        keys = root / "control" / "domainkeys" / "sender.test" / "default"
        keys.rename(keys.with_name("good"))
        keys.mkdir()  # exists, cannot be read as a key

    source = server_factory(setup, name="source", deliver=True)
    send(source, "joe@sender.test", ["ann@dest.test"], message("keyless"))
    wait_for(lambda: "signing failed" in log_of(source), what="the signing failure in the log")
    assert str(keys) in log_of(source)
    assert len(queue_ids(source)) == 1
    assert not remote.script.accepted
    keys.rmdir()
    keys.with_name("good").rename(keys)
    flush(source)
    wait_for(lambda: remote.script.accepted, what="delivery once the key is fixed")
    data = remote.script.accepted[0][2]
    assert (
        data.startswith(b"DKIM-Signature:") or b"\r\nDKIM-Signature:" in data.split(b"\r\n\r\n")[0]
    )


def test_kill_9_during_delivery_loses_nothing(
    server_factory: Callable[..., Running], scripted: Callable[..., ScriptedSmtp]
) -> None:
    remote = scripted(Script(delay=0.05))
    source = server_factory(routed(remote.port), name="source", deliver=True)
    tags = [f"k{i}" for i in range(40)]
    for tag in tags:
        send(source, "joe@sender.test", ["ann@dest.test"], message(tag))
    wait_for(lambda: len(remote.script.accepted) >= 5, what="deliveries under way")
    source.process.send_signal(signal.SIGKILL)
    source.process.wait()
    source = restart(source)
    try:

        def arrived() -> set[str]:
            found = set()
            for _, _, data in list(remote.script.accepted):
                found.add(data.rsplit(b"last line ", 1)[1].strip().decode())
            return found

        wait_for(lambda: arrived() >= set(tags), timeout=60, what="every message")
        wait_for(lambda: not queue_ids(source), what="the source queue to empty")
        counts: dict[str, int] = {}
        for _, _, data in remote.script.accepted:
            tag = data.rsplit(b"last line ", 1)[1].strip().decode()
            counts[tag] = counts.get(tag, 0) + 1
        # At most a duplicate: once before the kill (outcome not yet
        # recorded), once after; never more, and only those in flight.
        assert max(counts.values()) <= 2
        assert sum(counts.values()) - len(tags) <= 20  # concurrencyremote
    finally:
        source.stop()
