"""DomainKeys verdicts: libdomainkeys' DK_STAT_* codes, qmail-dk's letters, RFC 8601 words.

qmail-dk (and the qmail-smtpd DKIM patch) turns a libdomainkeys status into a
letter, `'A' + DK_STAT_value`, and DKVERIFY lists the letters to refuse
(upper case: 5xx) or defer (lower case: 4xx).  The numbering is therefore part
of the configuration users already have and must never change.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from quailmail.auth.results import Result

if TYPE_CHECKING:
    from quailmail.auth.domainkeys.policy import DkPolicy


class DkStatus(enum.IntEnum):
    """libdomainkeys 0.69 `DK_STAT` (domainkeys.h); letter = 'A' + value."""

    OK = 0
    BADSIG = 1
    NOSIG = 2
    NOKEY = 3
    BADKEY = 4
    CANTVRFY = 5
    SYNTAX = 6
    NORESOURCE = 7
    ARGS = 8
    REVOKED = 9
    INTERNAL = 10
    # libdomainkeys 0.69 also has DK_STAT_GRANULARITY (11, 'L'), which the
    # seeds' A-K tables and older qmail-dk builds do not know; a g= mismatch is
    # reported as BADKEY here (the key is not usable for this sender).

    @property
    def letter(self) -> str:
        """The DKVERIFY letter, upper case (qmail-dk: 'A' + DK_STAT value)."""
        return chr(ord("A") + self.value)

    @property
    def stat_name(self) -> str:
        """The name qmail-dk's texts use, e.g. `DK_STAT_BADSIG`."""
        return f"DK_STAT_{self.name}"

    @property
    def result(self) -> Result:
        """The usual RFC 8601 word for this status.  A verdict may carry a more
        precise one (see `DomainKeysResult.result`)."""
        return _WORDS[self]

    @property
    def status_text(self) -> str:
        """The short text qmail-dk writes in `DomainKey-Status:` (seeds' "message tag")."""
        return _TEXTS[self]

    @classmethod
    def from_letter(cls, letter: str) -> DkStatus:
        """The status a DKVERIFY letter names (either case)."""
        if len(letter) != 1 or not "A" <= letter.upper() <= "K":
            raise ValueError(f"not a DomainKeys status letter: {letter!r}")
        return cls(ord(letter.upper()) - ord("A"))


# RFC 8601 §2.7.1 (shared by dkim and domainkeys).  NOKEY and REVOKED are
# permanent: the domain says there is no usable key (RFC 4870 §3.2.3: an empty
# p= means revoked).  CANTVRFY, NORESOURCE and INTERNAL are ours or the DNS's
# passing trouble, so a later attempt may succeed: temperror.
_WORDS: dict[DkStatus, Result] = {
    DkStatus.OK: Result.PASS,
    DkStatus.BADSIG: Result.FAIL,
    DkStatus.NOSIG: Result.NONE,
    DkStatus.NOKEY: Result.PERMERROR,
    DkStatus.BADKEY: Result.PERMERROR,
    DkStatus.CANTVRFY: Result.TEMPERROR,
    DkStatus.SYNTAX: Result.PERMERROR,
    DkStatus.NORESOURCE: Result.TEMPERROR,
    DkStatus.ARGS: Result.PERMERROR,
    DkStatus.REVOKED: Result.PERMERROR,
    DkStatus.INTERNAL: Result.TEMPERROR,
}

# The "message tag" column of qmail-dk's table (seeds 002), as libdomainkeys'
# dktest prints it after "DomainKey-Status:".
_TEXTS: dict[DkStatus, str] = {
    DkStatus.OK: "good",
    DkStatus.BADSIG: "bad",
    DkStatus.NOSIG: "no signature",
    DkStatus.NOKEY: "no key",
    DkStatus.BADKEY: "bad key",
    DkStatus.CANTVRFY: "no key",
    DkStatus.SYNTAX: "bad format",
    DkStatus.NORESOURCE: "no resources",
    DkStatus.ARGS: "bad format",
    DkStatus.REVOKED: "revoked",
    DkStatus.INTERNAL: "bad format",
}


def shown(text: str, limit: int = 60) -> str:
    """`text` cut to `limit` and safe to print or put in a header comment:
    control characters, non-ASCII and the lone surrogates that undecodable
    header bytes become are written as escapes.  Every piece of a message or
    a DNS record that ends up in a reason passes through here."""
    text = text[:limit]
    if text.isascii() and text.isprintable():
        return text
    return ascii(text)[1:-1]


class DkProblem(ValueError):
    """Why a signature, key record or message cannot be verified.

    Raised by the parsers and caught by the verifier, which turns it into a
    `DomainKeysResult`.  `result` overrides the status' usual RFC 8601 word
    where RFC 8601 §2.7.1 names the case more precisely than the letter does.
    """

    def __init__(self, status: DkStatus, reason: str, result: Result | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.result = result if result is not None else status.result


@dataclass(frozen=True, slots=True)
class DomainKeysResult:
    """One DomainKeys verdict with its evidence.

    `result` is normally `status.result`; it differs where one letter covers
    cases RFC 8601 §2.7.1 words differently: a signature header that cannot
    be processed (missing or malformed tags, d= not the sender's domain) is
    `neutral` although its letter is C or G; a signature with no From:/Sender:
    to check it against is `permerror` ("a required header field being
    absent") although its letter is C; a key refused only by our
    `min_key_bits` is `policy` although its letter is E.
    """

    status: DkStatus
    result: Result
    reason: str
    domain: str | None = None  # d=
    selector: str | None = None  # s=
    sender: str | None = None  # the signing address (Sender: if present, else From:)
    header_b: str | None = None  # b=, whitespace removed, for RFC 8601 header.b
    testing: bool = False  # the key record says t=y (RFC 4870 §3.2.3)
    policy: DkPolicy | None = None  # _domainkey.<sender domain>, looked up when not OK
    sender_field: str | None = None  # "sender" or "from": where `sender` came from

    @property
    def letter(self) -> str:
        return self.status.letter
