"""Message framing shared by the signers and verifiers.

Mail on the wire uses CRLF; messages read from files often use LF.  Both are
accepted: headers are normalized to CRLF when they are split, and the body is
normalized chunk by chunk while it is hashed (`crlf_chunks`), so that a large
message is never held twice in memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from quailmail.core.kept import kept_by_text

CRLF = b"\r\n"
# Body chunks handed to hashers: big enough that per-chunk Python overhead
# vanishes, small enough that the transient normalized copy stays modest.
CHUNK = 1 << 20


class Header:
    """One header field.  `raw` is the whole field (name, colon, value, any
    folding) with CRLF line breaks and without the terminating CRLF."""

    __slots__ = ("lname", "name", "raw")

    def __init__(self, name: str, raw: bytes) -> None:
        self.name = name  # as written, without surrounding whitespace
        self.lname = name.lower()
        self.raw = raw

    def __repr__(self) -> str:
        return f"Header({self.name!r}, {self.raw!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Header) and (self.name, self.raw) == (other.name, other.raw)

    def __hash__(self) -> int:
        return hash((self.name, self.raw))

    @property
    def value(self) -> bytes:
        """Everything after the first colon, folding kept."""
        return self.raw.partition(b":")[2]

    def text(self) -> str:
        """The value unfolded and stripped, for parsing tag lists and addresses."""
        return self.value.replace(b"\r\n", b"").decode("utf-8", "surrogateescape").strip(" \t")


class Message:
    """Parsed header section plus where the body starts in `data`.

    The header fields are kept as (name, raw) pairs with an index by
    lowercase name; `Header` objects are made only when `headers` is asked
    for, since DKIM verification needs just the index (per-message path)."""

    __slots__ = ("_by_name", "_fields", "_headers", "body_offset", "crlf", "data", "linesep")

    def __init__(
        self,
        data: bytes,
        fields: list[tuple[str, bytes]],
        by_name: dict[str, list[bytes]],
        body_offset: int,
        linesep: bytes,
        *,
        crlf: bool | None = None,
    ) -> None:
        self.data = data
        self._fields = fields
        self._by_name = by_name
        self._headers: list[Header] | None = None
        self.body_offset = body_offset
        # Line ending the message itself uses, so that added header fields match.
        self.linesep = linesep
        # True when every line ends in CRLF (known from SMTP, or found out once,
        # so that DKIM and DomainKeys do not each look again); None: not yet known.
        self.crlf = crlf

    @property
    def headers(self) -> list[Header]:
        if self._headers is None:
            self._headers = [Header(name, raw) for name, raw in self._fields]
        return self._headers

    def body_chunks(self) -> Iterator[bytes]:
        """The body, raw (line endings as in `data`), in chunks."""
        data = self.data
        if len(data) - self.body_offset <= CHUNK:
            if self.body_offset < len(data):
                yield data[self.body_offset :]
            return
        view = memoryview(data)
        for start in range(self.body_offset, len(data), CHUNK):
            yield bytes(view[start : start + CHUNK])

    def crlf_body(self) -> Iterator[bytes]:
        """The body in chunks with every line ending CRLF, for the hashers."""
        if self.crlf is None:
            # Two counts over the body, done once per message: cheaper than a
            # check per chunk per method, and most mail needs no conversion.
            start = self.body_offset
            self.crlf = self.data.count(b"\n", start) == self.data.count(b"\r\n", start)
        if self.crlf:
            return self.body_chunks()
        return crlf_chunks(self.body_chunks())

    def fields_by_name(self) -> dict[str, list[bytes]]:
        """Lowercase name → the raw fields of that name, top to bottom
        (signers and verifiers pick fields from the bottom up)."""
        return self._by_name


def to_crlf(data: bytes) -> bytes:
    """LF and CRLF line endings both become CRLF; bare CR is left alone."""
    if data.count(b"\n") == data.count(b"\r\n"):
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def crlf_chunks(chunks: Iterator[bytes] | list[bytes]) -> Iterator[bytes]:
    """Normalize a stream of chunks to CRLF, minding a CR split from its LF."""
    carry = b""
    for raw in chunks:
        chunk = carry + raw if carry else raw
        carry = b""
        if chunk.endswith(b"\r"):
            carry = b"\r"
            chunk = chunk[:-1]
        if chunk:
            yield to_crlf(chunk)
    if carry:
        yield carry


def parse_message(data: bytes, *, crlf: bool = False) -> Message:
    """Split the header section off `data` (CRLF or LF line endings).

    The header section ends at the first empty line (RFC 5322 §2.1); a message
    without one is all header.  Lines that are neither a field nor a
    continuation (an mbox "From " line, garbage) are skipped: no signature can
    cover them by name.  `crlf=True` says the caller knows every line ends in
    CRLF (the SMTP receiver refuses bare LF), which spares looking.
    """
    end = data.find(b"\r\n\r\n")
    if (
        end > 0
        and data[:2] != b"\r\n"
        and (crlf or data.count(b"\n", 0, end) == data.count(b"\r\n", 0, end))
    ):
        # The usual case: CRLF header lines, then the first empty line.
        return _framed(data, data[:end], end + 4, CRLF, crlf)
    first_nl = data.find(b"\n")
    linesep = b"\n" if first_nl > 0 and data[first_nl - 1] != 0x0D else CRLF
    pos = 0
    size = len(data)
    head_end = body_offset = size
    while pos < size:
        nl = data.find(b"\n", pos)
        if nl < 0:
            break
        if nl == pos or (nl == pos + 1 and data[pos] == 0x0D):
            head_end, body_offset = pos, nl + 1
            break
        pos = nl + 1
    if body_offset == size and head_end == size:
        # No empty line: drop the final line break of the last header.
        head_end = size - (2 if data.endswith(b"\r\n") else 1 if data.endswith(b"\n") else 0)
    else:
        head_end = max(0, head_end - (2 if data[:head_end].endswith(b"\r\n") else 1))
    return _framed(data, to_crlf(data[:head_end]), body_offset, linesep, crlf)


_FIELD_BREAK = re.compile(rb"\r\n(?![ \t])")


# RFC 5322 §3.6.8 ftext, then the obsolete WSP before the colon (§4.5.8).
_FIELD_NAME = re.compile(rb"[!-9;-~]+[ \t]*")


def _split(block: bytes) -> tuple[list[tuple[str, bytes]], dict[str, list[bytes]]]:
    """(name, raw) per field, and the raws by lowercase name.

    A line that is neither a field nor a continuation is skipped, and so is a
    continuation line at the very top (it belongs to no field)."""
    fields: list[tuple[str, bytes]] = []
    index: dict[str, list[bytes]] = {}
    if not block:
        return fields, index
    match = _FIELD_NAME.fullmatch
    for raw in _FIELD_BREAK.split(block):
        colon = raw.find(b":")
        if colon > 0 and match(raw, 0, colon):
            name = raw[:colon]
            if raw[colon - 1] in (0x20, 0x09):  # "Subject :" (obsolete syntax)
                name = name.rstrip(b" \t")
            text = name.decode("ascii")
            fields.append((text, raw))
            lname = text.lower()
            same = index.get(lname)
            if same is None:
                index[lname] = [raw]
            else:
                same.append(raw)
    return fields, index


def _framed(data: bytes, block: bytes, body_offset: int, linesep: bytes, crlf: bool) -> Message:
    fields, index = _split(block)
    return Message(data, fields, index, body_offset, linesep, crlf=True if crlf else None)


def sender_domain(headers: Sequence[Header]) -> str | None:
    """The domain of the first parseable Sender:, else From: -- the signing
    domain qmail-dk picks, and the one whose DomainKeys policy is asked."""
    for lname in ("sender", "from"):
        for header in headers:
            if header.lname == lname:
                parsed = address_domain(header.text())
                if parsed is not None:
                    return parsed[1]
    return None


KEPT_FIELD_MAX = 998  # RFC 5322 §2.1.1's line: longer field values are never kept


@kept_by_text(KEPT_FIELD_MAX)  # a sender's fields repeat
def address_domain(value: str) -> tuple[str, str] | None:
    """(local-part, domain) of the first address in a From:/Sender: value.

    Enough of RFC 5322 for sender identification: angle-addr or addr-spec,
    display names and comments skipped, quoted local parts kept.
    """
    text = strip_comments(value)
    lt = text.rfind("<")
    if lt >= 0:
        gt = text.find(">", lt)
        addr = text[lt + 1 : gt if gt >= 0 else len(text)]
    else:
        addr = text.split(",")[0]
    addr = addr.strip()
    if addr.count("@") == 0:
        return None
    local, _, domain = addr.rpartition("@")
    local = local.strip()
    domain = domain.strip().rstrip(".").lower()
    if not local or not domain or " " in domain:
        return None
    return local, domain


def strip_comments(value: str) -> str:
    """The text with RFC 5322 comments removed (quoted strings and escapes respected)."""
    if "(" not in value:
        return value  # no comment can start: the text is kept as it is
    out: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    for ch in value:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(ch)
            continue
        if ch == "\\":
            escaped = True
            if depth == 0:
                out.append(ch)
            continue
        if quoted:
            if ch == '"':
                quoted = False
            out.append(ch)
            continue
        if ch == '"' and depth == 0:
            quoted = True
            out.append(ch)
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)
