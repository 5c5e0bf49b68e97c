"""One bounce per message, as qmail-send sends it, against real `quail
serve` processes: the failures of a message (local, remote, too old) are
reported together once no recipient is left to try, and not before.

The lost local users are aliases (`lost1`, `lost2`) whose `.qmail` program
says what qmail-local says of a missing mailbox and exits 100: the receiver
takes them, and delivery fails for good."""

from __future__ import annotations

import email
import email.policy
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

from quailmail.config.users import add_user
from scriptedsmtp import Script, ScriptedSmtp
from test_delivery import flush, log_of, maildir, message, queue_ids, restart, send, wait_for
from test_delivery_failures import routed, scripted  # noqa: F401 - the fixture

from serverfixtures import Running, free_port

LOST = ("lost1", "lost2")
BOUNCE_LOGGED = re.compile(r": bounce \S+ queued to <")


def lost(root: Path) -> None:
    """Aliases that fail for good at delivery, as a missing mailbox does."""
    for name in LOST:
        (root / "alias" / f".qmail-{name}").write_text(
            "|echo 'Sorry, no mailbox here by that name. (#5.1.1)'; exit 100\n"
        )


def also_lost(setup: Callable[[Path], None]) -> Callable[[Path], None]:
    def both(root: Path) -> None:
        setup(root)
        lost(root)

    return both


def reports(server: Running) -> list[tuple[email.message.EmailMessage, str]]:
    """Every bounce in the alias Maildir (postmaster's), once the queue is
    empty: each report was queued before its recipients were marked, so
    none is still to come."""
    wait_for(lambda: not queue_ids(server), what="the queue to empty")
    found = []
    for raw in maildir(server.root / "alias" / "Maildir"):
        report = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(report, email.message.EmailMessage)
        if report.get_content_type() != "multipart/report":
            continue
        (status,) = [p for p in report.walk() if p.get_content_type() == "message/delivery-status"]
        found.append((report, status.as_string()))
    return found


def recipients_of(status: str) -> list[str]:
    return re.findall(r"Final-Recipient: rfc822; (\S+)", status)


def test_two_unknown_local_users_get_one_bounce(server_factory: Callable[..., Running]) -> None:
    def setup(root: Path) -> None:
        add_user(root, "joe@example.com", "pw")
        (root / "control" / "rcpthosts").write_text("mx.test\nexample.com\n")
        (root / "control" / "bouncefrom").write_text("bounces\n")  # qmail-send's
        (root / "control" / "bouncehost").write_text("mail.example.net\n")
        lost(root)

    server = server_factory(setup, deliver=True)
    rcpts = ["lost1@mx.test", "joe@example.com", "lost2@mx.test"]
    send(server, "postmaster@mx.test", rcpts, message("two lost"))
    ((report, status),) = reports(server)
    assert report["To"] == "postmaster@mx.test"
    assert report["From"] == "bounces@mail.example.net"
    assert sorted(recipients_of(status)) == ["lost1@mx.test", "lost2@mx.test"]
    assert status.count("Status: 5.1.1") == 2
    assert "joe@example.com" not in report.as_string().split("text/rfc822-headers")[0]
    assert len(maildir(server.root / "domains" / "example.com" / "joe" / "Maildir")) == 1
    assert len(BOUNCE_LOGGED.findall(log_of(server))) == 1
    assert "for 2 recipients" in log_of(server)


def test_local_and_remote_failures_share_one_bounce(
    server_factory: Callable[..., Running],
    scripted: Callable[..., ScriptedSmtp],  # noqa: F811
) -> None:
    refuse = "550 5.1.1 <nobody@dest.test>: no such user"
    remote = scripted(Script(rcpt=lambda a: refuse if a.startswith("nobody") else "250 ok"))
    server = server_factory(also_lost(routed(remote.port)), deliver=True)
    rcpts = ["lost1@mx.test", "nobody@dest.test", "ann@dest.test"]
    send(server, "postmaster@mx.test", rcpts, message("mixed"))
    ((report, status),) = reports(server)
    assert report["To"] == "postmaster@mx.test"
    assert report["From"] == "MAILER-DAEMON@mx.test"  # no bouncefrom, bouncehost
    assert sorted(recipients_of(status)) == ["lost1@mx.test", "nobody@dest.test"]
    assert "Remote-MTA: dns; 127.0.0.1" in status
    assert "Diagnostic-Code: smtp; 550 5.1.1 <nobody@dest.test>: no such user" in status
    assert "Diagnostic-Code: x-quailmail; Sorry, no mailbox here by that name." in status
    assert [r for _, r, _ in remote.script.accepted] == [["ann@dest.test"]]
    assert len(BOUNCE_LOGGED.findall(log_of(server))) == 1


def test_a_failure_waits_for_the_deferred_recipient(
    server_factory: Callable[..., Running],
    scripted: Callable[..., ScriptedSmtp],  # noqa: F811
) -> None:
    """qmail-send injects the bounce only when no recipient of the message
    is left to try (job_close → pqdone → messdone): a failure beside a
    deferred recipient is reported once that one is delivered.  A kill -9
    meanwhile loses nothing: the failed recipient is still pending, so it
    is tried again after the restart and fails again."""
    remote = scripted(Script(final=lambda n: "451 4.3.0 try again later" if n < 2 else "250 ok"))
    server = server_factory(also_lost(routed(remote.port)), deliver=True)
    send(server, "postmaster@mx.test", ["lost1@mx.test", "ann@dest.test"], message("waits"))
    wait_for(lambda: "<ann@dest.test>: deferred" in log_of(server), what="the deferral")
    wait_for(lambda: "<lost1@mx.test>: failed" in log_of(server), what="the failure")
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    server = restart(server)  # everything pending is tried at once
    try:
        wait_for(lambda: log_of(server).count("<ann@dest.test>: deferred") == 2, what="retry")
        wait_for(lambda: log_of(server).count("<lost1@mx.test>: failed") == 2, what="again")
        assert not BOUNCE_LOGGED.search(log_of(server))
        assert not maildir(server.root / "alias" / "Maildir")
        assert len(queue_ids(server)) == 1
        flush(server)
        wait_for(lambda: remote.script.accepted, what="the deferred recipient's delivery")
        ((report, status),) = reports(server)
        assert recipients_of(status) == ["lost1@mx.test"]  # ann was delivered
        assert "ann@dest.test" not in report.as_string().split("text/rfc822-headers")[0]
        assert len(BOUNCE_LOGGED.findall(log_of(server))) == 1
    finally:
        server.stop()


def test_too_old_joins_the_other_failures(server_factory: Callable[..., Running]) -> None:
    closed = free_port()  # nobody listens here
    server = server_factory(also_lost(routed(closed, queuelifetime="1")), deliver=True)
    send(server, "postmaster@mx.test", ["lost1@mx.test", "ann@dest.test"], message("old"))
    wait_for(lambda: "<ann@dest.test>: deferred" in log_of(server), what="a deferral")
    wait_for(lambda: "<lost1@mx.test>: failed" in log_of(server), what="the failure")
    time.sleep(1.5)  # past queuelifetime
    flush(server)
    ((report, status),) = reports(server)
    assert sorted(recipients_of(status)) == ["ann@dest.test", "lost1@mx.test"]
    assert "Status: 5.1.1" in status and "Status: 4." in status
    assert "too long" in report.as_string()
    assert len(BOUNCE_LOGGED.findall(log_of(server))) == 1


def test_null_sender_two_failures_one_double_bounce(server_factory: Callable[..., Running]) -> None:
    server = server_factory(lost, deliver=True)
    send(server, "", ["lost1@mx.test", "lost2@mx.test"], message("orphans"))
    ((report, status),) = reports(server)
    (raw,) = maildir(server.root / "alias" / "Maildir")
    assert raw.startswith(b"Return-Path: <#@[]>\n")
    assert report["To"] == "postmaster@mx.test"
    assert sorted(recipients_of(status)) == ["lost1@mx.test", "lost2@mx.test"]
    assert len(BOUNCE_LOGGED.findall(log_of(server))) == 1
