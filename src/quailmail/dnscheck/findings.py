"""What `quail check-dns` reports: one finding per thing it read."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class Level(enum.StrEnum):
    OK = "ok"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Finding:
    check: str  # spf, senderid, dkim, domainkeys, adsp, dmarc, mx
    name: str  # the DNS name read
    level: Level
    reason: str  # one line
    record: str | None = None  # the record as read, when there was one

    def as_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "name": self.name,
            "level": self.level.value,
            "reason": self.reason,
            "record": self.record,
        }


def ok(check: str, name: str, reason: str, record: str | None = None) -> Finding:
    return Finding(check, name, Level.OK, reason, record)


def warning(check: str, name: str, reason: str, record: str | None = None) -> Finding:
    return Finding(check, name, Level.WARNING, reason, record)


def error(check: str, name: str, reason: str, record: str | None = None) -> Finding:
    return Finding(check, name, Level.ERROR, reason, record)


def text(data: bytes) -> str:
    return data.decode("utf-8", "replace")
