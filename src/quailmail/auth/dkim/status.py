"""DKIM status letters as the seeds and libdkim define them.

qmail's DKVERIFY names statuses by letter: 'A' minus libdkim's DKIM_* return
code (DKIM_SUCCESS 0 → A, DKIM_FAIL -1 → B, … DKIM_STAT_INCOMPAT -17 → R), the
table in ../shared/seeds/001_*.  Each status carries the RFC 8601 result word
it reports as; a status whose word depends on the case (a policy refusal) is
given its word by the verifier.
"""

from __future__ import annotations

import enum

from quailmail.auth.results import Result


class DkimStatus(enum.Enum):
    # name = (letter, seeds' status text, result word)
    OK = ("A", "OK", Result.PASS)
    FAIL = ("B", "FAIL", Result.FAIL)
    BAD_SYNTAX = ("C", "BAD_SYNTAX", Result.PERMERROR)
    SIG_BAD = ("D", "SIG BAD", Result.FAIL)
    SIG_BAD_TESTING = ("E", "SIG BAD (testing)", Result.FAIL)
    SIG_EXPIRED = ("F", "SIG EXPIRED", Result.PERMERROR)
    SELECTOR_INVALID = ("G", "SELECTOR INVALID", Result.PERMERROR)
    SELECTOR_MISMATCH = ("H", "SELECTOR MISMATCH", Result.PERMERROR)
    SELECTOR_REVOKED = ("I", "SELECTOR REVOKED", Result.PERMERROR)
    DOMAIN_TOO_LONG = ("J", "DOMAIN TOO LONG", Result.PERMERROR)
    DNS_TEMP_FAIL = ("K", "DNS TEMP FAIL", Result.TEMPERROR)
    DNS_PERM_FAIL = ("L", "DNS PERM FAIL", Result.PERMERROR)
    PUBLIC_KEY_INVALID = ("M", "PUBLIC KEY INVALID", Result.PERMERROR)
    NO_SIG = ("N", "NO SIG", Result.NONE)
    NO_VALID_SIG = ("O", "NO VALID SIG", Result.FAIL)
    BAD_BODY_HASH = ("P", "BAD BODY HASH", Result.FAIL)
    ALGORITHM_MISMATCH = ("Q", "ALGORITHM MISMATCH", Result.PERMERROR)
    STAT_INCOMPAT = ("R", "STAT INCOMPAT", Result.PERMERROR)
    # Beyond the seeds' table: libdkim's DKIM_UNSIGNED_FROM (-18), a From
    # field the signature does not cover (an added one, RFC 6376 §8.15).  A
    # DKVERIFY written for the seeds does not list it, so such mail is
    # accepted there, as it was by the patched qmail; the result is fail.
    UNSIGNED_FROM = ("S", "UNSIGNED FROM", Result.FAIL)

    @property
    def letter(self) -> str:
        return self.value[0]

    @property
    def text(self) -> str:
        return self.value[1]

    @property
    def result(self) -> Result:
        return self.value[2]

    @classmethod
    def from_letter(cls, letter: str) -> DkimStatus:
        for status in cls:
            if status.letter == letter.upper():
                return status
        raise ValueError(f"no DKIM status letter {letter!r}")
