"""The client's unread bytes, and the cutting of command lines from them.

One `bytes` object and a read offset: a read is appended once, lines are
sliced out, and the message readers take the unread rest as one block
(``bytes`` slicing from offset 0 to the end is free).
"""

from __future__ import annotations

from typing import Final

TOO_LONG: Final = b"\xff line too long"
"""Returned by `line()` (compared by identity) for a line over the limit."""


class InputBuffer:
    __slots__ = ("_buf", "_discarding", "_pos")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0
        self._discarding = False  # inside the rest of an over-long line

    def __len__(self) -> int:
        return len(self._buf) - self._pos

    def append(self, data: bytes) -> None:
        if self._pos:
            self._buf = self._buf[self._pos :] + data
            self._pos = 0
        else:
            self._buf += data  # b"" + data is data itself: no copy

    def clear(self) -> int:
        """Drop what is unread; returns how many octets that was."""
        n = len(self)
        self._buf, self._pos = b"", 0
        return n

    def startswith_upper(self, prefix: bytes) -> bool:
        return self._buf[self._pos : self._pos + len(prefix)].upper() == prefix

    def line(self, limit: int) -> bytes | None:
        """The next line without its LF or CRLF, `TOO_LONG`, or None for more
        input.  ``limit`` counts the line end (RFC 5321 §4.5.3.1.4).  A line
        found too long before its end is refused at once and its rest is
        skipped up to the next LF, so the client's next command is read
        (resync) and memory stays bounded."""
        while True:
            buf, pos = self._buf, self._pos
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if self._discarding:
                    self.clear()
                elif len(buf) - pos >= limit:  # with its line end it would exceed
                    self._discarding = True
                    self.clear()
                    return TOO_LONG
                return None
            self._pos = nl + 1
            if self._discarding:
                self._discarding = False
                continue
            if nl + 1 - pos > limit:
                return TOO_LONG
            end = nl - 1 if nl > pos and buf[nl - 1] == 0x0D else nl
            return buf[pos:end]

    def rest(self, most: int = -1) -> bytes:
        """Up to ``most`` unread octets (all when -1), without consuming them."""
        buf, pos = self._buf, self._pos
        end = len(buf) if most < 0 else min(len(buf), pos + most)
        return buf if pos == 0 and end == len(buf) else buf[pos:end]

    def consume(self, n: int) -> None:
        self._pos += n
        if self._pos >= len(self._buf):
            self._buf, self._pos = b"", 0
