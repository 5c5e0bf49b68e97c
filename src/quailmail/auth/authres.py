"""Rendering results as header fields, in one place.

- RFC 8601 `Authentication-Results:` (the seeds' form:
  `Authentication-Results: bltweb.net; domainkeys=pass (ok); dkim=pass (ok)`),
  with header.d / header.s / header.b properties (RFC 6008 §4: header.b is a
  prefix of the signature, long enough to tell signatures apart).
- s/qmail's `X-Authentication-Results: SENDER dkim=pass|fail (reason) MTA`
  (qmail-dkverify, ../shared/seeds/004_*).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol

from quailmail.auth.results import Result

HEADER_B_CHARS = 12
_UNSAFE_COMMENT = re.compile(r"[()\\\r\n]")


class Verdict(Protocol):
    """What a DKIM signature or DomainKeys result shows (duck-typed, so the
    methods do not depend on one another)."""

    @property
    def result(self) -> Result: ...

    @property
    def reason(self) -> str: ...

    @property
    def domain(self) -> str | None: ...

    @property
    def selector(self) -> str | None: ...

    @property
    def header_b(self) -> str | None: ...


def comment(text: str) -> str:
    """A reason as an RFC 5322 comment: no parentheses or line breaks inside."""
    return "(" + _UNSAFE_COMMENT.sub(" ", text).strip() + ")" if text else ""


def _value(text: str) -> str:
    # RFC 8601 §2.2 pvalue: a token, or quoted when it is not one.
    if re.fullmatch(r"[A-Za-z0-9._@+/=-]+", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def method(name: str, verdict: Verdict) -> str:
    """One resinfo: `dkim=pass (ok) header.d=… header.s=… header.b=…`."""
    parts = [f"{name}={verdict.result.value}"]
    if verdict.reason:
        parts.append(comment(verdict.reason))
    if verdict.domain:
        parts.append(f"header.d={_value(verdict.domain)}")
    if verdict.selector:
        parts.append(f"header.s={_value(verdict.selector)}")
    if verdict.header_b:
        parts.append(f"header.b={_value(verdict.header_b[:HEADER_B_CHARS])}")
    return " ".join(parts)


def none_method(name: str, reason: str) -> str:
    return f"{name}={Result.NONE.value} {comment(reason)}".rstrip()


def authentication_results(authserv_id: str, resinfos: Iterable[str]) -> str:
    """The whole field (no line ending), e.g. for `quail verify` and the receiver."""
    items = [r for r in resinfos if r]
    body = "; ".join(items) if items else "none"
    return f"Authentication-Results: {authserv_id}; {body}"


def x_authentication_results(sender: str, verdict_result: Result, reason: str, mta: str) -> str:
    """s/qmail's form: the reason is given only when the signature failed."""
    word = "pass" if verdict_result is Result.PASS else "fail"
    why = f" {comment(reason)}" if word == "fail" and reason else ""
    return f"X-Authentication-Results: {sender} dkim={word}{why} {mta}"
