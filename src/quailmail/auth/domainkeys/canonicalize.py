"""What a DomainKeys signature covers, canonicalized (RFC 4870 §3.4.2).

Unlike DKIM there is one hash over one stream: the signed header fields, then
the body, with the empty line between them counted as the body's first line.

- simple (§3.4.2.1): every line as it is, ending in CRLF; empty lines at the
  end of the body are dropped, and when the body is nothing but empty lines
  the header/body separator goes too.
- nofws (§3.4.2.2): the same after deleting every space and tab, header
  continuations unwrapped (their CRLFs deleted); a line that holds only
  whitespace becomes empty and so can be a trailing empty line.  Bare CRs
  are deleted as well, as both libdomainkeys and Mail::DKIM do.

An unterminated last line gets its CRLF ("Append CRLF to the resulting line",
as libdomainkeys does); Mail::DKIM hashes it without one.  Mail received over
SMTP always ends in CRLF, so only files can tell the two apart.

The body is taken chunk by chunk (CRLF already, `Message.crlf_body`) and never joined.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from quailmail.auth.domainkeys.signature import Canon
from quailmail.auth.message import CRLF, Header

_BARE_CR = re.compile(rb"\r(?!\n)")
# RFC 4870 defines one algorithm, rsa-sha1: SHA-1 is the protocol, not a choice.
PREHASHED_SHA1 = Prehashed(hashes.SHA1())  # noqa: S303


def canonical_header(header: Header, canon: Canon) -> bytes:
    if canon == "nofws":
        return header.raw.translate(None, b" \t\r\n") + CRLF
    return header.raw + CRLF


def select_headers(headers: Sequence[Header], names: Sequence[str] | None) -> list[Header]:
    """The fields a signature with h=`names` covers, in message order.

    RFC 4870 §3.4.2.1: lines are presented "in the order [they occur] in the
    complete email" and, with h=, only the listed fields; §3.3 (h=): every
    occurrence of a listed name is included.  libdomainkeys does exactly this.
    Mail::DKIM instead presents them in h= order, which is the same whenever
    h= lists the fields in message order, as every signer we know writes it.
    """
    if names is None:
        return list(headers)
    wanted = set(names)
    return [header for header in headers if header.lname in wanted]


class BodyCanonicalizer:
    """Streams the body part of the hash input: feed CRLF-normalized chunks,
    then `finish()`.  Holds back only the current partial line and a count of
    empty lines not yet known to be followed by text."""

    def __init__(self, canon: Canon) -> None:
        self._nofws = canon == "nofws"
        # The header/body separator is an empty line like any other (§3.4.2.1).
        self._empty = 1
        self._carry = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._carry + chunk if self._carry else chunk
        cut = data.rfind(CRLF)
        if cut < 0:
            self._carry = data
            return b""
        self._carry = data[cut + 2 :]
        return self._lines(data[: cut + 2])

    def finish(self) -> bytes:
        carry, self._carry = self._carry, b""
        return self._lines(carry + CRLF) if carry else b""

    def _lines(self, block: bytes) -> bytes:
        """`block` is whole lines, each ending in CRLF."""
        if self._nofws:
            # Only now is every CR that is not part of a CRLF known to be bare.
            block = _BARE_CR.sub(b"", block.translate(None, b" \t"))
        start = _trailing_empty_lines(block)
        if start == 0:  # nothing but empty lines (so far)
            self._empty += len(block) // 2
            return b""
        out = CRLF * self._empty + block[:start] + CRLF
        # The first CRLF of the run ends the last line with text in it.
        self._empty = (len(block) - start) // 2 - 1
        return out


def digest(headers: Iterable[Header], body_chunks: Iterable[bytes], canon: Canon) -> bytes:
    """SHA-1 of the canonicalized headers and body, which rsa-sha1 (the only
    a= RFC 4870 defines) then signs as a prehashed digest.  `body_chunks`
    have CRLF line endings already (`Message.crlf_body`)."""
    hasher = hashlib.sha1()  # noqa: S324 (see PREHASHED_SHA1)
    for header in headers:
        hasher.update(canonical_header(header, canon))
    body = BodyCanonicalizer(canon)
    for chunk in body_chunks:
        hasher.update(body.feed(chunk))
    hasher.update(body.finish())
    return hasher.digest()


def _trailing_empty_lines(block: bytes) -> int:
    """Where the run of CRLFs that ends `block` starts (`block` ends in CRLF).

    In CRLF-normalized data every LF follows a CR, so the CR/LF tail is CRLF
    pairs except for bare CRs, and the run starts after the last bare CR,
    which is the first CR of the last "CR CR".  Linear, unlike a regular
    expression anchored at the end, which a body of many empty lines would
    make quadratic.
    """
    text_end = len(block.rstrip(b"\r\n"))
    double = block.rfind(b"\r\r", text_end)
    return text_end if double < 0 else double + 1
