"""An SMTP reply: three-digit code, optional enhanced status code, text.

Handlers *return* replies (STYLE.md, chasquid); only the server renders them
onto the socket.  A multi-line reply is one `Reply` whose text holds ``\\n``
between lines (RFC 5321 §4.2.1: ``code-text`` on every line but the last,
``code SP text`` on the last).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# RFC 3463 §2: class "." subject "." detail; the class matches the reply's
# first digit (2, 4 or 5).
_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}\Z")


@dataclass(frozen=True, slots=True)
class Reply:
    """``Reply(250, "2.1.0", "ok")``; ``enhanced`` is None for replies that
    carry none (the greeting, EHLO, 334 challenges: RFC 2034 §3)."""

    code: int
    enhanced: str | None = None
    text: str = ""

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"reply code out of range: {self.code}")
        if self.enhanced is not None and (
            not _ENHANCED.match(self.enhanced) or self.enhanced[0] != str(self.code)[0]
        ):
            raise ValueError(f"bad enhanced status code {self.enhanced!r} for {self.code}")
        if "\r" in self.text:
            raise ValueError("reply text must not contain CR; use \\n between lines")

    @property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    @property
    def is_positive(self) -> bool:
        """2xx and 3xx: the command was accepted (or the next step invited)."""
        return self.code < 400

    @property
    def is_temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def render(self, *, enhanced: bool = True) -> bytes:
        """The reply as it goes on the wire, CRLF after every line.  With
        ENHANCEDSTATUSCODES the enhanced code prefixes every line (RFC 2034 §3)."""
        lines = self.lines
        last = len(lines) - 1
        out = []
        for i, line in enumerate(lines):
            sep = "-" if i < last else " "
            body = line
            if enhanced and self.enhanced:
                body = f"{self.enhanced} {line}" if line else self.enhanced
            out.append(f"{self.code}{sep}{body}\r\n")
        return "".join(out).encode("utf-8")
