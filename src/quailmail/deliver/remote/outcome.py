"""What remote delivery reports: one outcome per recipient, three-valued."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


class Status(enum.Enum):
    """RFC 5321 §4.2.1: 2yz delivered, 4yz try again later, 5yz bounce."""

    DELIVERED = "delivered"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"

    @classmethod
    def from_code(cls, code: int) -> Status:
        if 200 <= code < 300:
            return cls.DELIVERED
        if code >= 500:
            return cls.PERMANENT
        return cls.TEMPORARY


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    """``reply`` is the remote's text (``550 5.1.1 no such user``) or our own
    reason when no server answered; ``host`` is the MX (or relay) that said it."""

    recipient: str
    status: Status
    reply: str
    host: str = ""


class DeliveryError(Exception):
    """The whole delivery failed before any recipient got an answer of its
    own: no usable route, no server reachable, a refused transaction."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent

    @property
    def status(self) -> Status:
        return Status.PERMANENT if self.permanent else Status.TEMPORARY

    def outcomes(self, recipients: Sequence[str], host: str = "") -> list[RecipientOutcome]:
        return [RecipientOutcome(r, self.status, self.reason, host) for r in recipients]
