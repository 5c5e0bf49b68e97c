"""Authentication-Results claiming our authserv-id are removed (RFC 8601 §5),
others kept; the message is otherwise untouched."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from quailmail.dns.zoneserver import ZoneServer
from quailmail.policy.authenv import effective_env
from quailmail.policy.base import Message
from quailmail.policy.forged_authres import authserv_id, strip_claims

from policysmtp import by_subject, compile_rules, fields, proxied, queued, transaction, trust_proxy
from serverfixtures import Running

OURS = b"Received: from x by mx.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
BODY = b"Authentication-Results: mx.test; dkim=pass (in the body: kept)\r\n\r\nend\r\n"


def message(*chunks: bytes) -> Message:
    data = b"".join(chunks)
    return Message("a@example.org", ["b@mx.test"], [OURS, *chunks], len(data))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b" mx.test; none", "mx.test"),
        (b" MX.Test ; dkim=pass", "MX.Test"),
        (b' "mx.test"; spf=pass', "mx.test"),
        (b" (a comment (nested)) mx.test 1; none", "mx.test"),
        (b"\r\n\tmx.test;\r\n dkim=pass", "mx.test"),
        (b" ;none", None),
        (b"", None),
    ],
)
def test_authserv_id(value: bytes, expected: str | None) -> None:
    assert authserv_id(value) == expected


def test_claims_removed_others_and_body_kept() -> None:
    header = (
        b"Authentication-Results: mx.test; dkim=pass\r\n"
        b"From: a@example.org\r\n"
        b"authentication-results: (forged)\r\n MX.TEST.; spf=pass\r\n"
        b"Authentication-Results: other.example; dkim=fail\r\n"
        b"Authentication-Results: mx.test.example; dkim=pass\r\n"
        b'Authentication-Results: "mx.test"; dmarc=pass\r\n'
        b"Subject: s\r\n"
    )
    msg = message(header[:50], header[50:130], header[130:] + b"\r\n" + BODY[:20], BODY[20:])
    size = msg.size
    assert strip_claims(msg, "mx.test") == 3
    data = msg.data()
    assert data.startswith(OURS)
    assert data[len(OURS) :] == (
        b"From: a@example.org\r\n"
        b"Authentication-Results: other.example; dkim=fail\r\n"
        b"Authentication-Results: mx.test.example; dkim=pass\r\n"
        b"Subject: s\r\n\r\n" + BODY
    )
    assert msg.size < size
    assert msg.size == len(data) - len(OURS)


def test_nothing_to_remove_leaves_the_chunks_alone() -> None:
    chunks = [b"From: a@example.org\r\n", b"\r\n", BODY]
    msg = message(*chunks)
    assert strip_claims(msg, "mx.test") == 0
    assert msg.chunks[1:] == chunks


def test_message_without_body_and_empty_header() -> None:
    msg = message(b"Authentication-Results: mx.test; none\r\nSubject: x\r\n")
    assert strip_claims(msg, "mx.test") == 1
    assert msg.data() == OURS + b"Subject: x\r\n"
    msg = message(b"\r\n" + BODY)  # no header at all
    assert strip_claims(msg, "mx.test") == 0


def test_auth_set_and_unset() -> None:
    env = {"DKVERIFY": "B", "AUTH_UNSET_DKVERIFY": "", "AUTH_SET_SPFBEHAVIOR": "0", "X": "1"}
    assert effective_env(env, False) == {"DKVERIFY": "B", "X": "1"}
    assert effective_env(env, True) == {"SPFBEHAVIOR": "0", "X": "1"}


def test_forged_results_removed_end_to_end(
    server_factory: Callable[..., Running], dns_server: ZoneServer
) -> None:
    def setup(root: Path) -> None:
        trust_proxy(root)
        (root / "control" / "dnsservers").write_text(dns_server.spec + "\n")
        compile_rules(root, ':allow,DKVERIFY=""\n')

    server = server_factory(setup)
    forged = (
        b"Authentication-Results: mx.test; dkim=pass header.d=bank.example\r\n"
        b"Authentication-Results: upstream.example; spf=pass smtp.mailfrom=a@example.org\r\n"
        b"From: a@bank.example\r\nTo: postmaster@mx.test\r\nSubject: forged\r\n"
        b"Authentication-Results: Mx.Test;\r\n dmarc=pass header.from=bank.example\r\n"
        b"\r\nAuthentication-Results: mx.test; a body line stays\r\n"
    )
    with proxied(server.smtp, "192.0.2.20") as client:
        assert transaction(client, "a@example.org", ["postmaster@mx.test"], forged).accepted
    queued_message = by_subject(queued(server.root))["forged"]
    results = fields(queued_message, b"Authentication-Results")
    assert len(results) == 2
    assert results[0].startswith(b"mx.test; domainkeys=none")  # ours, on top
    assert b"dkim=none" in results[0]
    assert results[1] == b"upstream.example; spf=pass smtp.mailfrom=a@example.org"
    header, body = queued_message.split(b"\r\n\r\n", 1)
    assert body == b"Authentication-Results: mx.test; a body line stays\r\n"
    lines = re.sub(rb"\r\n[ \t]", b" ", header).split(b"\r\n")  # unfolded
    received = [i for i, line in enumerate(lines) if line.startswith(b"Received:")]
    upstream = lines.index(
        b"Authentication-Results: upstream.example; spf=pass smtp.mailfrom=a@example.org"
    )
    assert lines[0].startswith(b"Authentication-Results: mx.test;")
    assert received == [1] and upstream > 1
