"""Bounces as RFC 3464 delivery status notifications.

A bounce goes to the envelope sender, from the null sender (so it can
never bounce back); a message whose sender is null gets none (RFC 5321
§6.1: no bounce of a bounce), and a bounce that cannot be delivered goes to
`doublebounceto` (qmail-send).  The report is multipart/report with a
human part (qmail's wording: "failure notice"), a message/delivery-status
part with one block per failed recipient, and the original headers as
text/rfc822-headers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

from quailmail.auth.message import parse_message


@dataclass(frozen=True, slots=True)
class Failure:
    recipient: str
    status: str  # RFC 3463 code, e.g. 5.1.1
    diagnostic: str  # the remote server's reply, or our reason
    remote_mta: str | None = None  # the host that refused, for Remote-MTA:


def make_bounce(
    *,
    original: bytes,
    sender: str,
    failures: list[Failure],
    reporting_mta: str,
    arrival: datetime,
    now: datetime,
    from_address: str | None = None,
) -> bytes:
    """The whole bounce message (CRLF line endings), to be queued from <>.
    `from_address`: its From: (qmail-send's `bouncefrom@bouncehost`),
    MAILER-DAEMON at the reporting MTA by default."""
    boundary = f"=_quailmail_{uuid.uuid4().hex}"
    headers = _header_block(original)
    human = [
        f"Hi. This is the quailmail program at {reporting_mta}.",
        "I'm afraid I wasn't able to deliver your message to the following addresses.",
        "This is a permanent error; I've given up. Sorry it didn't work out.",
        "",
    ]
    for failure in failures:
        human.append(f"<{failure.recipient}>:")
        human.append(_oneline(failure.diagnostic))
        human.append("")
    status = [f"Reporting-MTA: dns; {reporting_mta}", f"Arrival-Date: {format_datetime(arrival)}"]
    for failure in failures:
        status.append("")
        status.append(f"Final-Recipient: rfc822; {failure.recipient}")
        status.append("Action: failed")
        status.append(f"Status: {failure.status}")
        if failure.remote_mta:
            status.append(f"Remote-MTA: dns; {failure.remote_mta}")
        kind = "smtp" if failure.remote_mta else "x-quailmail"
        status.append(f"Diagnostic-Code: {kind}; {_oneline(failure.diagnostic)}")
        status.append(f"Last-Attempt-Date: {format_datetime(now)}")
    lines = [
        f"From: {from_address or f'MAILER-DAEMON@{reporting_mta}'}",
        f"To: {sender}",
        "Subject: failure notice",
        f"Date: {format_datetime(now)}",
        f"Message-ID: <{uuid.uuid4().hex}@{reporting_mta}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-formatted delivery status notification.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "",
        *human,
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        *status,
        "",
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "",
    ]
    text = "\r\n".join(lines).encode("utf-8") + b"\r\n" + headers + b"\r\n"
    return text + f"--{boundary}--\r\n".encode()


def wants_bounce(sender: str) -> bool:
    """No bounce to the null sender (a bounce of a bounce would loop)."""
    return sender not in ("", "<>") and not sender.startswith("#@[")


def _header_block(original: bytes) -> bytes:
    message = parse_message(original)
    return b"".join(h.raw + b"\r\n" for h in message.headers)


def _oneline(text: str) -> str:
    return " ".join(text.split())
