"""Bounces parse as RFC 3464 reports; retries spread out as qmail's do."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email.message import Message

from quailmail.deliver.bounce import Failure, make_bounce, wants_bounce
from quailmail.queue.retry import QUEUELIFETIME, expired, next_retry

ORIGINAL = b"From: joe@example.com\r\nTo: a@x.example\r\nSubject: hello\r\n\r\nbody\r\n"


def test_bounce_is_a_delivery_status_notification() -> None:
    when = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    data = make_bounce(
        original=ORIGINAL,
        sender="joe@example.com",
        failures=[
            Failure("a@x.example", "5.1.1", "550 5.1.1 no such user", "mx.x.example"),
            Failure("b@y.example", "5.4.4", "no host accepts mail for y.example"),
        ],
        reporting_mta="mx.test",
        arrival=when,
        now=when,
    )
    assert b"\n" not in data.replace(b"\r\n", b"")
    parsed = email.message_from_bytes(data)
    assert parsed["To"] == "joe@example.com" and parsed["From"] == "MAILER-DAEMON@mx.test"
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "delivery-status"
    parts = parsed.get_payload()
    assert isinstance(parts, list)
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    status = parts[1].get_payload()
    assert isinstance(status, list)
    blocks: list[Message] = status
    assert blocks[0]["Reporting-MTA"] == "dns; mx.test"
    assert [b["Final-Recipient"] for b in blocks[1:]] == [
        "rfc822; a@x.example",
        "rfc822; b@y.example",
    ]
    assert [b["Status"] for b in blocks[1:]] == ["5.1.1", "5.4.4"]
    assert blocks[1]["Remote-MTA"] == "dns; mx.x.example"
    assert b"Subject: hello" in data.split(b"text/rfc822-headers")[1]


def test_no_bounce_to_the_null_sender() -> None:
    assert wants_bounce("joe@example.com")
    assert not wants_bounce("")


def test_retries_spread_out_with_age() -> None:
    birth = 1_000_000.0
    first = next_retry(birth, birth, remote=True)
    assert first == birth + 400  # (0 + 20)^2 seconds after arrival
    assert next_retry(birth, birth, remote=False) == birth + 100
    day = next_retry(birth, birth + 86400, remote=True)
    week = next_retry(birth, birth + 6 * 86400, remote=True)
    assert day - (birth + 86400) < week - (birth + 6 * 86400)  # gaps grow
    attempts, now = 0, birth
    while not expired(birth, now):
        now = next_retry(birth, now, remote=True)
        attempts += 1
    assert 20 < attempts < 60  # a week of a dead host is a few dozen tries
    assert expired(birth, birth + QUEUELIFETIME + 1)
