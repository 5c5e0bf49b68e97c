"""Postfix and the scheduler, end to end: a running `quail serve` delivers
to Postfix through smtproutes (signed on the way), and what Postfix relays
to quailmail reaches a Maildir.  Needs root and Postfix (skipped otherwise)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from quailmail.dns.zoneserver import ZoneServer
from test_delivery import _published_key, maildir, message, queue_ids, send, wait_for

from dnsfixtures import has_ipv6_loopback
from peers.postfix import Postfix
from serverfixtures import QUAIL, Running

pytestmark = pytest.mark.peer
HOSTS = [
    "127.0.0.1",
    pytest.param("::1", marks=pytest.mark.skipif(not has_ipv6_loopback(), reason="no ::1")),
]


@pytest.mark.parametrize("host", HOSTS)
def test_quail_serve_delivers_signed_to_postfix(
    server_factory: Callable[..., Running],
    postfix_factory: Callable[..., Postfix],
    dns_server: ZoneServer,
    host: str,
) -> None:
    postfix = postfix_factory(users=["user"], tls=True)
    literal = f"[{host}]"

    def setup(root: Path) -> None:
        (root / "control" / "smtproutes").write_text(f"dest.test:{literal}:{postfix.port}\n")
        (root / "control" / "dnsservers").write_text(dns_server.spec + "\n")
        _published_key(root, dns_server)

    source = server_factory(setup, name="source", deliver=True)
    send(source, "joe@sender.test", ["user@dest.test"], message("to postfix"))
    (stored,) = postfix.wait_delivered("user")
    assert b"Subject: to postfix" in stored
    assert b"with ESMTPS id" in stored  # STARTTLS to Postfix
    path = Path(postfix.maildir("user")) / "new"
    (file,) = sorted(path.iterdir())
    done = subprocess.run(
        [QUAIL, "verify", "--json", "--dns", dns_server.spec, str(file)],
        capture_output=True,
        check=False,
    )
    verdict = json.loads(done.stdout)
    assert verdict["dkim"]["result"] == "pass", verdict
    assert verdict["domainkeys"]["result"] == "pass", verdict
    wait_for(lambda: not queue_ids(source), what="the source queue to empty")


def test_postfix_relays_to_quail_which_delivers(
    server_factory: Callable[..., Running], postfix_factory: Callable[..., Postfix]
) -> None:
    server = server_factory(deliver=True)
    postfix = postfix_factory(relay={"mx.test": server.smtp}, users=["sender"])
    postfix.send("sender@dest.test", ["postmaster@mx.test"], message("via postfix"))
    box = server.root / "alias" / "Maildir"
    wait_for(lambda: maildir(box), what="delivery through Postfix and quailmail")
    (got,) = maildir(box)
    assert b"Delivered-To: postmaster@mx.test\n" in got
    assert b"by postfix.test (Postfix)" in got
    assert got.endswith(b"last line via postfix\n")
