"""Result words shared by every method (RFC 8601 §2.7)."""

from __future__ import annotations

import enum


class Result(enum.StrEnum):
    PASS = "pass"  # noqa: S105 (a result word, not a password)
    FAIL = "fail"
    NEUTRAL = "neutral"
    POLICY = "policy"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"
    NONE = "none"
