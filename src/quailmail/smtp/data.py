"""The message stream after 354 (DATA) and after BDAT, read in blocks.

DATA ends only at CRLF "." CRLF (RFC 5321 §4.1.1.4).  Every other line-end
form that some server once took for an end — ``\\n.\\n``, ``\\n.\\r\\n``,
``\\r.\\r\\n``, ``\\r\\n.\\r``, … (SEC Consult's SMTP smuggling, December
2023) — is data here, and since each contains a CR or LF outside a CRLF pair,
the message carrying it is refused once the real end arrives (RFC 5321 §2.3.8:
CR and LF only as CRLF).  Nothing after a fake end is ever read as a command.

The work per block is a handful of C-speed scans (``find``, ``count``,
``replace``) — no Python loop over lines.  Between blocks at most four bytes
are carried: the longest suffix that could begin the terminator.
"""

from __future__ import annotations

from quailmail.core.reply import Reply
from quailmail.smtp import replies

_TERMINATOR = b"\r\n.\r\n"
# Proper prefixes of the terminator, longest first: the longest one a block
# ends with is carried into the next block.  No CRLF or "\r\n." pattern can
# straddle that cut (each starts with CR; the bytes after a pattern's CR are
# LF and ".", never the CR a carried prefix starts with).
_PREFIXES = (b"\r\n.\r", b"\r\n.", b"\r\n", b"\r")


class _Checks:
    """Refusal state shared by both readers: bare CR/LF, NUL, size."""

    __slots__ = ("bare", "chunks", "max_size", "nul", "over", "refuse_nul", "size")

    def __init__(self, max_size: int, refuse_nul: bool) -> None:
        self.max_size = max_size
        self.refuse_nul = refuse_nul
        self.chunks: list[bytes] = []
        self.size = 0
        self.bare = False
        self.nul = False
        self.over = False

    @property
    def refused(self) -> bool:
        return self.bare or self.nul or self.over

    def refusal(self) -> Reply:
        """The reply to a refused message, by the first reason that holds."""
        if self.bare:
            return replies.BARE_LINE_END
        if self.nul:
            return replies.NUL_IN_DATA
        return replies.MESSAGE_TOO_BIG

    def _scan(self, buf: bytes, start: int, end: int) -> None:
        if not self.bare:
            pairs = buf.count(b"\r\n", start, end)
            if buf.count(b"\r", start, end) != pairs or buf.count(b"\n", start, end) != pairs:
                self.bare = True
        if self.refuse_nul and not self.nul and buf.find(b"\x00", start, end) >= 0:
            self.nul = True

    def _keep(self, block: bytes) -> None:
        """Count ``block``; keep it unless the message is refused already.
        Past the size limit blocks are only counted (RFC 1870 §6.3: read to
        the end, then 552)."""
        self.size += len(block)
        if self.max_size and self.size > self.max_size:
            self.over = True
        if self.refused:
            self.chunks.clear()
        elif block:
            self.chunks.append(block)


class DotReader(_Checks):
    """DATA: finds the terminator, undoes dot-stuffing (RFC 5321 §4.5.2)."""

    __slots__ = ("_skip", "_tail")

    def __init__(self, max_size: int = 0, refuse_nul: bool = True) -> None:
        super().__init__(max_size, refuse_nul)
        # A virtual CRLF before the first line, so that ".\r\n" right after
        # 354 ends an empty message and a first line "..x" loses its dot,
        # with the same searches as every other line.  Dropped from output.
        self._tail = b"\r\n"
        self._skip = 2

    def feed(self, data: bytes) -> int:
        """Read ``data``.  Returns -1 when all of it was message (more is
        needed), else how many octets of ``data`` the message used up to and
        including its terminator; what follows is the client's next command."""
        if not data:
            return -1
        tail = self._tail
        buf = tail + data if tail else data
        end = buf.find(_TERMINATOR)
        if end >= 0:
            self._take(buf, end + 2)  # the last line's CRLF is message
            self._tail = b""
            return end + len(_TERMINATOR) - len(tail)
        cut = len(buf)
        for prefix in _PREFIXES:
            if buf.endswith(prefix):
                cut -= len(prefix)
                break
        self._take(buf, cut)
        self._tail = buf[cut:]
        return -1

    def _take(self, buf: bytes, end: int) -> None:
        if end <= 0:
            return
        self._scan(buf, 0, end)
        if self.refused:  # only count: as many octets as unstuffing would leave
            self.size += end - buf.count(b"\r\n.", 0, end) - self._skip
            self._skip = 0
            return
        out = (buf[:end] if end < len(buf) else buf).replace(b"\r\n.", b"\r\n")
        if self._skip:
            out = out[self._skip :]
            self._skip = 0
        self._keep(out)


class ChunkReader(_Checks):
    """BDAT chunks (RFC 3030): octets counted exactly, no dot-stuffing.  Unless
    the body is BINARYMIME, the same CR/LF and NUL rules as DATA apply, so a
    message is refused the same way whichever command carried it (and cannot
    carry a smuggling sequence on to a DATA-speaking next hop)."""

    __slots__ = ("_carry_cr", "binary")

    def __init__(self, max_size: int = 0, refuse_nul: bool = True, binary: bool = False) -> None:
        super().__init__(max_size, refuse_nul and not binary)
        self.binary = binary
        self._carry_cr = False

    def feed(self, piece: bytes) -> None:
        if not piece:
            return
        if not self.binary and not self.refused:
            start, end = 0, len(piece)
            if self._carry_cr:
                if piece[0] == 0x0A:
                    start = 1
                else:
                    self.bare = True
            self._carry_cr = piece[-1] == 0x0D
            if self._carry_cr:
                end -= 1
            if start < end:
                self._scan(piece, start, end)
        self._keep(piece)

    def finish(self) -> None:
        """After the LAST chunk: a CR at the very end is bare."""
        if self._carry_cr:
            self.bare = True
            self.chunks.clear()
