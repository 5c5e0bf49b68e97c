"""Rendering results as header fields, in one place.

- RFC 8601 `Authentication-Results:` (the seeds' form:
  `Authentication-Results: bltweb.net; domainkeys=pass (ok); dkim=pass (ok)`),
  with header.d / header.s / header.b properties (RFC 6008 §4: header.b is a
  prefix of the signature, long enough to tell signatures apart).
- DMARC (`dmarc=fail (p=reject dis=reject) header.from=example.com`) and
  ADSP (`dkim-adsp=discard (…) header.from=…`) resinfos.
- s/qmail's `X-Authentication-Results: SENDER dkim=pass|fail (reason) MTA`
  (qmail-dkverify, ../shared/seeds/004_*).
- SPF and Sender ID: the `spf=` and `sender-id=` resinfos (RFC 8601 §2.7.2)
  and the `Received-SPF:` field of RFC 7208 §9.1.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from quailmail.auth.results import Result
from quailmail.auth.spf.result import HELO, SpfResult, SpfVerdict

if TYPE_CHECKING:
    from quailmail.auth.adsp import AdspResult
    from quailmail.auth.dkim import DkimResult
    from quailmail.auth.dmarc import DmarcResult
    from quailmail.auth.domainkeys import DomainKeysResult

HEADER_B_CHARS = 12
COMMENT_CHARS = 300  # a reason longer than this is cut: the field stays readable
VALUE_CHARS = 255  # a property value (a domain is at most 253)
FOLD_AT = 78  # RFC 5322 §2.1.1: lines SHOULD be at most 78 characters
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")
_TOKEN = re.compile(r"[A-Za-z0-9._@+/=-]+")


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
    """A reason as an RFC 5322 comment: no parentheses or line breaks inside,
    printable ASCII only (what a signature or record brought in otherwise is
    `?`), at most COMMENT_CHARS."""
    if not text:
        return ""
    text = text[:COMMENT_CHARS]
    if not (text.isascii() and text.isprintable()):
        text = _NOT_PRINTABLE.sub("?", text.replace("\r", " ").replace("\n", " "))
    text = text.replace("(", " ").replace(")", " ").replace("\\", " ")
    return "(" + text.strip() + ")"


def _value(text: str) -> str:
    # RFC 8601 §2.2 pvalue: a token, or quoted when it is not one; printable
    # ASCII only, at most VALUE_CHARS.
    if _TOKEN.fullmatch(text) and len(text) <= VALUE_CHARS:
        return text
    text = _NOT_PRINTABLE.sub("?", text[:VALUE_CHARS])
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


def domainkeys_and_dkim(dk: DomainKeysResult, dkim: DkimResult) -> list[str]:
    """`domainkeys=…` first, then one `dkim=…` per signature (or `dkim=none`),
    as the seeds print them: `domainkeys=pass (ok); dkim=pass (ok)`."""
    out = [method("domainkeys", dk)]
    if dkim.signatures:
        out.extend(method("dkim", s) for s in dkim.signatures)
    else:
        out.append(none_method("dkim", dkim.reason))
    return out


def dmarc(result: DmarcResult) -> str:
    """`dmarc=fail (p=reject dis=reject) header.from=example.com`.

    RFC 7489 §11.2 registers the method, its five results and header.from
    (the RFC5322.From domain).  The comment is OpenDMARC's and Gmail's: the
    published policy (`sp=` too when the record has one) and the disposition
    asked for after pct sampling; without a record it gives the reason.
    """
    parts = [f"dmarc={result.result.value}"]
    record = result.record
    if record is not None:
        policy = f"p={record.p}" + (f" sp={record.sp}" if record.sp is not None else "")
        parts.append(comment(f"{policy} dis={result.disposition}"))
    elif result.reason:
        parts.append(comment(result.reason))
    if result.from_domain:
        parts.append(f"header.from={_value(result.from_domain)}")
    return " ".join(parts)


def adsp(result: AdspResult, header_from: str | None = None) -> str:
    """`dkim-adsp=fail (reason) header.from=user@example.com`.

    RFC 5617 §5.4 defines header.from as the From field's address; when the
    caller does not hand it in, the author domain stands for it."""
    parts = [f"dkim-adsp={result.result.value}"]
    if result.reason:
        parts.append(comment(result.reason))
    shown = header_from or result.domain
    if shown:
        parts.append(f"header.from={_value(shown)}")
    return " ".join(parts)


def authentication_results(authserv_id: str, resinfos: Iterable[str], *, fold: bool = True) -> str:
    """The whole field (no line ending), for the receiver, and with
    `fold=False` on one line for `quail verify`'s output.

    On one line when it fits in FOLD_AT characters, as the seeds show it;
    else folded before each resinfo, and a resinfo longer than a line at its
    spaces, all of which are CFWS or FWS (RFC 8601 §2.2), so no line comes
    near RFC 5322's 998.  A fold is a CRLF put before one of the field's
    spaces: unfolded (RFC 5322 §2.2.3), the field is its one-line form."""
    items = [r for r in resinfos if r] or ["none"]
    line = f"Authentication-Results: {authserv_id}; " + "; ".join(items)
    if not fold or len(line) <= FOLD_AT:
        return line
    lines = [f"Authentication-Results: {authserv_id};"]
    for number, item in enumerate(items, 1):
        piece = item + ";" if number < len(items) else item
        lines.append(piece if len(piece) < FOLD_AT else "\r\n ".join(_fold_words(piece)))
    return "\r\n ".join(lines)


def _fold_words(text: str) -> list[str]:
    """`text` cut at spaces into pieces of about FOLD_AT characters (the
    space each was cut at goes with the fold); a word longer than that
    stays whole."""
    out: list[str] = []
    limit = FOLD_AT - 8
    while len(text) > limit:
        cut = text.rfind(" ", 0, limit + 1)
        if cut <= 0:
            cut = text.find(" ", limit)
            if cut < 0:
                break
        out.append(text[:cut])
        text = text[cut + 1 :]
    out.append(text)
    return out


def x_authentication_results(sender: str, verdict_result: Result, reason: str, mta: str) -> str:
    """s/qmail's form: the reason is given only when the signature failed."""
    word = "pass" if verdict_result is Result.PASS else "fail"
    why = f" {comment(reason)}" if word == "fail" and reason else ""
    return f"X-Authentication-Results: {sender} dkim={word}{why} {mta}"


# -- SPF and Sender ID ---------------------------------------------------------------------

_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def spf_comment(verdict: SpfVerdict) -> str:
    """What the verdict means, in the words receivers have long used."""
    sender, ip, why = verdict.sender, verdict.client_ip, verdict.reason
    result = verdict.result
    if result is SpfResult.PASS:
        return f"domain of {sender} designates {ip} as permitted sender"
    if result is SpfResult.FAIL:
        return f"domain of {sender} does not designate {ip} as permitted sender"
    if result is SpfResult.SOFTFAIL:
        return f"domain of transitioning {sender} does not designate {ip} as permitted sender"
    if result is SpfResult.NEUTRAL:
        return f"{ip} is neither permitted nor denied by domain of {sender}"
    if result is SpfResult.NONE:
        return f"domain of {sender} does not designate permitted sender hosts"
    if result is SpfResult.TEMPERROR:
        return f"temporary error in processing during lookup of {sender}: {why}"
    return f"permanent error in processing domain of {sender}: {why}"


# A verdict repeats when the receiver reuses it (auth/memo.py): its
# renderings are kept by the verdict itself (a frozen, hashable value).
@functools.lru_cache(maxsize=1024)
def spf_method(verdict: SpfVerdict) -> str:
    """`spf=pass (…) smtp.mailfrom=…` (RFC 8601 §2.7.2); the HELO identity
    is reported as smtp.helo."""
    parts = [f"spf={verdict.result.value}", comment(spf_comment(verdict))]
    if verdict.identity == HELO:
        parts.append(f"smtp.helo={_value(verdict.helo)}")
    else:
        parts.append(f"smtp.mailfrom={_value(verdict.sender)}")
    return " ".join(parts)


def senderid_method(verdict: SpfVerdict, field: str = "from") -> str:
    """`sender-id=pass (…) header.from=…` (RFC 8601 §2.7.2): `field` is the
    header field the PRA was taken from (RFC 4407 §2)."""
    parts = [f"sender-id={verdict.result.value}", comment(spf_comment(verdict))]
    if verdict.sender:
        parts.append(f"header.{field.lower()}={_value(verdict.sender)}")
    return " ".join(parts)


def _kv(text: str) -> str:
    # RFC 7208 §9.1: key-value-pair = key [CFWS] "=" ( dot-atom / quoted-string )
    if _DOT_ATOM.fullmatch(text):
        return text
    clean = text.replace("\r", " ").replace("\n", " ")
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


@functools.lru_cache(maxsize=1024)
def received_spf(verdict: SpfVerdict, *, fold: bool = False) -> str:
    """The `Received-SPF:` field of RFC 7208 §9.1 (no line ending): the
    result, a comment, then receiver, client-ip, envelope-from, helo,
    identity, and mechanism or problem where there is one.  With `fold`,
    folded at its spaces (CFWS and FWS all) into lines of about FOLD_AT, as
    the receiver writes it into a message; unfolded, the one-line form."""
    pairs = [
        ("receiver", verdict.receiver),
        ("client-ip", verdict.client_ip),
        ("envelope-from", verdict.sender),
    ]
    if verdict.helo:
        pairs.append(("helo", verdict.helo))
    pairs.append(("identity", verdict.identity))
    if verdict.mechanism:
        pairs.append(("mechanism", verdict.mechanism))
    if verdict.problem:
        pairs.append(("problem", verdict.problem))
    why = comment(f"{verdict.receiver}: {spf_comment(verdict)}")
    body = "; ".join(f"{key}={_kv(value)}" for key, value in pairs)
    line = f"Received-SPF: {verdict.result.value} {why} {body};"
    if not fold or len(line) <= FOLD_AT:
        return line
    return "\r\n ".join(_fold_words(line))
