"""Postfix (Debian) as a peer on loopback, both directions.

- Postfix → quailmail: a real `quail serve`; a private Postfix whose
  transport_maps send mx.test to it (`smtp:[127.0.0.1]:PORT`, `[::1]` too).
  The message must be in quail's queue with its envelope and Postfix's
  Received line, and Postfix must log it sent (over STARTTLS).
- quailmail → Postfix: the remote delivery library (`deliver.remote`) with
  an smtproutes entry for dest.test, into Postfix's virtual(8) Maildir.  The
  message arrives byte for byte (after CRLF → LF, below the fields Postfix
  adds), over STARTTLS when offered; 550 5.1.1 from Postfix is PERMANENT,
  a 450 from an access table TEMPORARY, each recipient on its own.

Needs root (Postfix's master) and Postfix; skipped with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator

import pytest

from quailmail.deliver.remote import (
    RecipientOutcome,
    RemoteSettings,
    Status,
    connect,
    deliver_remote,
    parse_smtproutes,
)
from quailmail.dns.resolver import DnsResolver
from quailmail.dns.zoneserver import ZoneServer

from dnsfixtures import has_ipv6_loopback, resolver_for
from peers._base import skip_missing
from peers.postfix import Postfix, start_postfix
from serverfixtures import Running

pytestmark = pytest.mark.peer
needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no ::1")
HOSTS = ["127.0.0.1", pytest.param("::1", marks=needs_ipv6)]

SENDER = "sender@example.com"
DEFER = "defer@dest.test"
ACCESS = {DEFER: "450 4.2.0 try later"}
USERS = ("user", "second", "mixed", "plain")


def message(subject: str, to: str = "user@dest.test") -> bytes:
    """A message Postfix passes untouched: every field it would add is there,
    with lines that test dot-stuffing, 8-bit text and an mbox-style From."""
    return (
        f"From: Sender <{SENDER}>\r\n"
        f"To: <{to}>\r\n"
        f"Subject: {subject}\r\n"
        f"Date: Sat, 01 Mar 2025 12:00:00 +0000\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@example.com>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "hello\r\n"
        ".leading dot\r\n"
        "..two dots\r\n"
        ".\r\n"
        "From the start of a line\r\n"
        "caf\u00e9 \u2014 8 bit\r\n"
        "\r\n"
        "end\r\n"
    ).encode()


def lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def route(host: str, port: int, domain: str = "dest.test") -> RemoteSettings:
    literal = f"[{host}]"
    return RemoteSettings(
        helo="client.test",
        routes=parse_smtproutes(f"{domain}:{literal}:{port}\n".encode()),
        timeout_connect=5.0,
        timeout_remote=30.0,
    )


def queued_as(outcome: RecipientOutcome) -> str:
    found = re.search(r"queued as ([0-9A-F]+)", outcome.reply)
    assert found is not None, outcome
    return found.group(1)


@pytest.fixture(scope="module")
def dest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postfix]:
    """One Postfix for the module's delivery tests: dest.test with STARTTLS,
    users `USERS` (one per test, so Maildirs do not mix), `defer@` 450."""
    with skip_missing():
        instance = start_postfix(
            tmp_path_factory.mktemp("postfix"), users=USERS, recipient_access=ACCESS, tls=True
        )
    with instance:
        yield instance


@pytest.fixture
def resolver(dns_server: ZoneServer) -> DnsResolver:
    # smtproutes needs no DNS; the resolver is there so a lookup would fail
    # fast on loopback instead of asking the system's servers.
    return resolver_for(dns_server)


# -- Postfix → quailmail ------------------------------------------------------


@pytest.mark.parametrize("host", HOSTS)
def test_postfix_relays_to_quail(
    server: Running, postfix_factory: Callable[..., Postfix], host: str
) -> None:
    """One transaction to quail: postmaster@ is queued, an unknown user gets
    quail's 550 5.1.1, which Postfix bounces to the sender (a user of its
    own, so the bounce stays on loopback)."""
    hop = f"{host}[{host}]:{server.smtp}"
    postfix = postfix_factory(relay={"mx.test": f"[{host}]:{server.smtp}"}, users=["sender"])
    sender, unknown = "sender@dest.test", "zz9-plural-z-alpha@mx.test"
    data = message("to quail", to="postmaster@mx.test")
    queue_id = postfix.send(sender, ["postmaster@mx.test", unknown], data)

    sent = postfix.status(queue_id, "postmaster@mx.test")
    assert f"relay={hop}," in sent and "status=sent (250 2.0.0 ok " in sent, sent
    bounced = postfix.status(queue_id, unknown)
    assert f"relay={hop}," in bounced and "status=bounced" in bounced, bounced
    assert f"host {host}[{host}] said: 550 5.1.1 sorry, no mailbox here by that name" in bounced
    assert "(in reply to RCPT TO command)" in bounced
    postfix.wait_log(rf"TLS connection established to {re.escape(hop)}: TLSv1")
    (bounce,) = postfix.wait_delivered("sender")
    assert b"Subject: Undelivered Mail Returned to Sender" in bounce
    assert f"<{unknown}>: host {host}[{host}] said: 550 5.1.1".encode() in bounce

    listed = server.quail("queue", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    entries = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(entries) == 1
    (entry,) = entries
    assert entry["sender"] == sender
    assert [r["address"] for r in entry["recipients"]] == ["postmaster@mx.test"]
    assert f"250 2.0.0 ok {entry['id']}" in sent  # quail's queue id, in Postfix's log

    shown = server.quail("queue", "show", entry["id"])
    assert shown.returncode == 0, shown.stderr
    headers = shown.stdout.decode()
    # Postfix's own Received line, below quail's (which says TLS was used).
    postfix_received = headers.index(f"by postfix.test (Postfix) with ESMTP id {queue_id}")
    assert headers.index("using TLS") < postfix_received
    assert "Subject: to quail" in headers


# -- quailmail → Postfix ------------------------------------------------------


@pytest.mark.parametrize("host", HOSTS)
def test_quail_delivers_to_postfix_with_starttls(
    dest: Postfix, resolver: DnsResolver, host: str
) -> None:
    user = "user" if host == "127.0.0.1" else "second"
    recipient = f"{user}@dest.test"
    first, second = message(f"one {host}", recipient), message(f"two {host}", recipient)

    async def go() -> tuple[list[RecipientOutcome], list[RecipientOutcome], str | None]:
        settings = route(host, dest.port)
        async with await connect("dest.test", resolver=resolver, settings=settings) as session:
            assert session.destination.address == host
            one = await session.send(SENDER, [recipient], first)
            two = await session.send("", [recipient], second)  # RSET, null sender
            return one, two, session.tls_version

    one, two, tls_version = asyncio.run(go())
    assert [o.status for o in one + two] == [Status.DELIVERED, Status.DELIVERED]
    assert one[0].reply.startswith("250 2.0.0 Ok: queued as")
    assert tls_version is not None and tls_version.startswith("TLS")

    delivered = dest.wait_delivered(user, 2)
    by_subject = {m.split(b"Subject: ", 1)[1].split(b"\n", 1)[0]: m for m in delivered}
    for data, outcome, return_path in ((first, one[0], SENDER), (second, two[0], "")):
        subject = data.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0]
        stored = by_subject[subject]
        assert stored.endswith(lf(data)), stored  # intact, below Postfix's fields
        added = stored[: -len(lf(data))].decode()
        assert added.startswith(f"Return-Path: <{return_path}>\n")
        assert f"Delivered-To: {recipient}\n" in added
        assert f"with ESMTPS id {queued_as(outcome)}" in added
        assert "status=sent (delivered to maildir)" in dest.status(queued_as(outcome), recipient)
    dest.wait_log(
        rf"Anonymous TLS connection established from unknown\[{re.escape(host)}\]: {tls_version}"
    )


def test_recipients_get_their_own_outcome(dest: Postfix, resolver: DnsResolver) -> None:
    recipients = ["mixed@dest.test", "nobody@dest.test", DEFER]
    outcomes = asyncio.run(
        deliver_remote(
            "dest.test",
            SENDER,
            recipients,
            message("mixed", "mixed@dest.test"),
            resolver=resolver,
            settings=route("127.0.0.1", dest.port),
        )
    )
    assert [o.recipient for o in outcomes] == recipients
    assert [o.status for o in outcomes] == [Status.DELIVERED, Status.PERMANENT, Status.TEMPORARY]
    assert outcomes[1].reply.startswith("550 5.1.1 <nobody@dest.test>: Recipient address rejected")
    assert "User unknown in virtual mailbox table" in outcomes[1].reply
    assert outcomes[2].reply == f"450 4.2.0 <{DEFER}>: Recipient address rejected: try later"
    assert {o.host for o in outcomes} == {"127.0.0.1"}
    (stored,) = dest.wait_delivered("mixed")
    assert stored.endswith(lf(message("mixed", "mixed@dest.test")))
    log = dest.status(queued_as(outcomes[0]), "mixed@dest.test")
    assert "status=sent" in log


@pytest.mark.parametrize(
    ("recipient", "status", "reply"),
    [
        ("nobody@dest.test", Status.PERMANENT, "550 5.1.1 <nobody@dest.test>: "),
        (DEFER, Status.TEMPORARY, f"450 4.2.0 <{DEFER}>: Recipient address rejected: try later"),
    ],
)
def test_refused_recipient(
    dest: Postfix, resolver: DnsResolver, recipient: str, status: Status, reply: str
) -> None:
    """The only recipient refused: no message is sent, the RCPT reply decides."""
    (outcome,) = asyncio.run(
        deliver_remote(
            "dest.test",
            SENDER,
            [recipient],
            message("refused", recipient),
            resolver=resolver,
            settings=route("127.0.0.1", dest.port),
        )
    )
    assert outcome.status is status
    assert outcome.reply.startswith(reply)
    dest.wait_log(rf"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.1\]: {reply[:3]} .*{recipient}")


def test_plain_when_postfix_offers_no_starttls(
    postfix_factory: Callable[..., Postfix], resolver: DnsResolver
) -> None:
    postfix = postfix_factory(users=["plain"], tls=False)
    data = message("plain", "plain@dest.test")

    async def go() -> tuple[list[RecipientOutcome], str | None]:
        settings = route("127.0.0.1", postfix.port)
        async with await connect("dest.test", resolver=resolver, settings=settings) as session:
            return await session.send(SENDER, ["plain@dest.test"], data), session.tls_version

    outcomes, tls_version = asyncio.run(go())
    assert [o.status for o in outcomes] == [Status.DELIVERED]
    assert tls_version is None
    (stored,) = postfix.wait_delivered("plain")
    assert stored.endswith(lf(data))
    assert f"with ESMTP id {queued_as(outcomes[0])}" in stored.decode()
    assert "TLS connection established" not in postfix.log()
