"""A progress bar on standard error for long `quail` operations.

Drawn only when standard error is a terminal (a log or a pipe gets one
final line); redrawn at most ten times a second.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30


class Progress:
    def __init__(self, what: str, total: int, stream: TextIO | None = None) -> None:
        self.what = what
        self.total = max(total, 0)
        self.count = 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self._drawn = 0.0

    def line(self) -> str:
        share = self.count / self.total if self.total else 1.0
        filled = int(WIDTH * min(share, 1.0))
        bar = "#" * filled + "-" * (WIDTH - filled)
        return f"[{bar}] {self.count}/{self.total} {self.what}"

    def update(self, count: int) -> None:
        self.count = count
        now = time.monotonic()
        if self.tty and (now - self._drawn >= 0.1 or count >= self.total):
            self._drawn = now
            self.stream.write("\r" + self.line())
            self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\r" + self.line() + "\n")
        elif self.total > 1:
            self.stream.write(self.line() + "\n")
        self.stream.flush()
