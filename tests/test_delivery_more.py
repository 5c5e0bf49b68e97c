"""More of the scheduler end to end: forwards and loops, signed bounces,
double bounces, connection reuse, and `quail queue delete|flush`."""

from __future__ import annotations

import email
import email.policy
import time
from collections.abc import Callable
from pathlib import Path

from quailmail.auth.keys import generate, private_key_pem, record_value
from quailmail.dns.zoneserver import ZoneServer
from scriptedsmtp import Script, ScriptedSmtp
from test_delivery import log_of, maildir, message, queue_ids, send, wait_for
from test_delivery_failures import routed, scripted  # noqa: F401 - the fixture

from serverfixtures import Running, free_port


def test_forward_and_loop_detection(server_factory: Callable[..., Running]) -> None:
    """`&address` lines forward (queued with our Delivered-To); a forward
    back to the same address meets its own Delivered-To and bounces."""

    def setup(root: Path) -> None:
        (root / "alias" / ".qmail-fwd").write_text("&postmaster@mx.test\n")
        (root / "alias" / ".qmail-loop").write_text("&loop@mx.test\n")

    server = server_factory(setup, deliver=True)
    send(server, "a@example.org", ["fwd@mx.test"], message("forwarded"))
    box = server.root / "alias" / "Maildir"
    wait_for(lambda: maildir(box), what="the forwarded message")
    (got,) = maildir(box)
    assert b"Delivered-To: postmaster@mx.test\n" in got
    assert b"Delivered-To: fwd@mx.test\n" in got

    done = server.quail("inject", "-f", "postmaster@mx.test", "loop@mx.test", stdin=message("loop"))
    assert done.returncode == 0, done.stderr
    wait_for(lambda: len(maildir(box)) == 2, what="the loop's bounce")
    bounce = next(m for m in maildir(box) if b"failure notice" in m)
    assert b"looping" in bounce and b"Status: 5.4.6" in bounce
    wait_for(lambda: not queue_ids(server), what="the queue to empty")


def test_bounce_to_a_remote_sender_is_signed(
    server_factory: Callable[..., Running],
    scripted: Callable[..., ScriptedSmtp],  # noqa: F811
    dns_server: ZoneServer,
) -> None:
    remote = scripted(Script())
    key = generate("rsa", 2048)

    def setup(root: Path) -> None:
        routed(remote.port, dnsservers=dns_server.spec)(root)
        (root / "control" / "smtproutes").write_text(f"sender.test:127.0.0.1:{remote.port}\n")
        keys = root / "control" / "domainkeys" / "mx.test"
        keys.mkdir(parents=True)
        (keys / "default").write_bytes(private_key_pem(key))
        (root / "control" / "dksign").write_text(str(keys.parent / "%" / "default") + "\n")
        dns_server.zone.add_txt("default._domainkey.mx.test", record_value(key))

    server = server_factory(setup, deliver=True)
    done = server.quail("inject", "-f", "joe@sender.test", "nobody@mx.test", stdin=message("gone"))
    assert done.returncode == 0, done.stderr
    wait_for(lambda: remote.script.accepted, what="the bounce at the sender's server")
    ((sender, rcpts, data),) = remote.script.accepted
    assert (sender, rcpts) == ("", ["joe@sender.test"])
    head = data.split(b"\r\n\r\n", 1)[0]
    assert b"DKIM-Signature:" in head and b"d=mx.test" in head
    assert b"DomainKey-Signature:" in head
    path = server.root / "bounce.eml"
    path.write_bytes(data)
    verdict = server.quail("verify", "--json", "--dns", dns_server.spec, str(path))
    assert b'"result": "pass"' in verdict.stdout, verdict.stdout


def test_double_bounce_goes_to_doublebounceto(server_factory: Callable[..., Running]) -> None:
    server = server_factory(deliver=True)
    done = server.quail("inject", "-f", "", "nobody@mx.test", stdin=message("orphan"))
    assert done.returncode == 0, done.stderr
    box = server.root / "alias" / "Maildir"
    wait_for(lambda: maildir(box), what="the double bounce")
    (got,) = maildir(box)
    assert got.startswith(b"Return-Path: <#@[]>\n")
    report = email.message_from_bytes(got, policy=email.policy.default)
    assert report["To"] == "postmaster@mx.test"
    assert "nobody@mx.test" in report.as_string()
    wait_for(lambda: not queue_ids(server), what="the queue to empty")


def test_one_connection_carries_many_messages(
    server_factory: Callable[..., Running],
    scripted: Callable[..., ScriptedSmtp],  # noqa: F811
) -> None:
    remote = scripted(Script())

    def setup(root: Path) -> None:
        routed(remote.port)(root)
        (root / "control" / "workers").write_text("1\n")
        (root / "control" / "concurrencyremote").write_text("1\n")

    server = server_factory(setup, deliver=True)
    for i in range(10):
        send(server, "joe@sender.test", ["ann@dest.test"], message(f"m{i}"))
    wait_for(lambda: len(remote.script.accepted) == 10, what="ten deliveries")
    assert remote.script.connections < 10  # kept open between messages (RSET)


def test_queue_delete_and_flush_wait(server_factory: Callable[..., Running]) -> None:
    closed = free_port()
    server = server_factory(routed(closed), deliver=True)
    for i in range(3):
        send(server, "joe@sender.test", ["ann@dest.test"], message(f"d{i}"))
    wait_for(lambda: log_of(server).count("deferred") >= 3, what="three deferrals")
    ids = queue_ids(server)
    assert len(ids) == 3
    done = server.quail("queue", "delete", ids[0], ids[1])
    assert done.returncode == 0, done.stderr
    assert queue_ids(server) == [ids[2]]
    assert server.quail("queue", "delete", "0000000000000z").returncode == 1
    # flush --wait: nothing can be delivered, so it reports the time out.
    started = time.monotonic()
    waited = server.quail("queue", "flush", "--wait", "1")
    assert waited.returncode == 1 and time.monotonic() - started < 10
    server.stop()
    # With no server running, delete changes the shard itself.
    done = server.quail("queue", "delete", ids[2])
    assert done.returncode == 0, done.stderr
    assert queue_ids(server) == []
