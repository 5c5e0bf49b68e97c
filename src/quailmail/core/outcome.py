"""Three-valued outcome of a check or a delivery (ARCHITECTURE.md, "Contracts").

ok, temporary (4xx: retry later) or permanent (5xx: bounce), always with the
reason a log line or a bounce will show.  Never a bare bool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["ok", "temporary", "permanent"]


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Kind
    reason: str = ""

    @classmethod
    def ok(cls, reason: str = "") -> Outcome:
        return cls("ok", reason)

    @classmethod
    def temporary(cls, reason: str) -> Outcome:
        return cls("temporary", reason)

    @classmethod
    def permanent(cls, reason: str) -> Outcome:
        return cls("permanent", reason)

    @property
    def is_ok(self) -> bool:
        return self.kind == "ok"
