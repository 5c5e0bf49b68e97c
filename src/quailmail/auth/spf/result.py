"""SPF results: the words of RFC 7208 §2.6 and what a check found out."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class SpfResult(enum.StrEnum):
    """RFC 7208 §2.6; the same words serve Sender ID (RFC 4406 §4)."""

    NONE = "none"  # no record, or no domain to ask about (§2.6.1)
    NEUTRAL = "neutral"  # the domain states nothing about the client (§2.6.2)
    PASS = "pass"  # noqa: S105 (a result word, not a password)
    FAIL = "fail"  # the client is not authorized (§2.6.4)
    SOFTFAIL = "softfail"  # probably not authorized (§2.6.5)
    TEMPERROR = "temperror"  # a transient DNS error; try later (§2.6.6)
    PERMERROR = "permerror"  # the records cannot be interpreted (§2.6.7)


# Qualifiers of a directive (§4.6.2); no qualifier means "+".
QUALIFIERS = {
    "+": SpfResult.PASS,
    "-": SpfResult.FAIL,
    "~": SpfResult.SOFTFAIL,
    "?": SpfResult.NEUTRAL,
}

# The identities of RFC 7208 §2.3 / §2.4 (also the `identity=` of
# Received-SPF, §9.1), and Sender ID's purported responsible address.
MAILFROM = "mailfrom"
HELO = "helo"
PRA = "pra"


@dataclass(frozen=True, slots=True)
class SpfVerdict:
    """The outcome of one check_host() (RFC 7208 §4) and its evidence.

    `mechanism` is the directive that decided, as written in the record
    (`-all`, `include:_spf.example.com`), or None when none matched.
    `explanation` is set for `fail` only (§6.2).  `reason` says why in a
    few words (for errors: the problem, Received-SPF's `problem=`).
    `lookups` counts the DNS-querying terms evaluated and `void_lookups` the
    empty answers among them (the limits of §4.6.4: 10 and 2).
    """

    result: SpfResult
    domain: str  # the domain whose record was asked first ("" if none)
    sender: str  # the <sender> checked: postmaster@helo for a null sender
    client_ip: str  # IPv4-mapped IPv6 shown as IPv4 (§5)
    helo: str = ""
    identity: str = MAILFROM
    receiver: str = "unknown"
    mechanism: str | None = None
    explanation: str = ""
    reason: str = ""
    lookups: int = 0
    void_lookups: int = 0

    @property
    def problem(self) -> str | None:
        """The error, for Received-SPF's `problem=` (RFC 7208 §9.1)."""
        if self.result in (SpfResult.PERMERROR, SpfResult.TEMPERROR):
            return self.reason or None
        return None
