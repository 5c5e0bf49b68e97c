"""An SMTP reply: what handlers return and only the server writes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    """`code` (RFC 5321 §4.2), `enhanced` status (RFC 3463, "5.1.1"), `text`."""

    code: int
    enhanced: str
    text: str
