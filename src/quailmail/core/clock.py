"""Time as a parameter: pure code takes a Clock, the CLI builds the real one."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class FixedClock:
    """A clock stopped at one instant (`quail verify --at`, tests)."""

    def __init__(self, at: float) -> None:
        self.at = at

    def now(self) -> float:
        return self.at
