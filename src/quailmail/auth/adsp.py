"""DKIM Author Domain Signing Practices (RFC 5617, historic since 2013).

    _adsp._domainkey.sample.com  TXT  "dkim=all"

The seeds publish these (`'_adsp._domainkey.sample.com:dkim=all:3600`); the
practice says whether all of a domain's mail carries a DKIM signature by the
author's own domain (`all`), whether mail without one may be thrown away
(`discardable`), or neither (`unknown`).  Results are RFC 5617 §5.4's words,
evidence for the policy layer, which decides.

The lookup (§4.3): the author domain must exist (NXDOMAIN ends with
`nxdomain`; here A, AAAA and MX are asked at once, and any answer or NODATA
shows the name exists), then `_adsp._domainkey.<domain>` is fetched in
parallel.  A SERVFAIL or timeout is `temperror`.  Several TXT records there
leave the result undefined (§4.3), reported as `permerror`, as IIJ's enma
does.  A record that is not valid ADSP MUST be ignored "(considered
equivalent to a NODATA result)" (§4.1), so it gives `none`, with the reason.
"""

from __future__ import annotations

import asyncio
import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from quailmail.auth.tagvalue import TagValueError, parse_tag_list
from quailmail.core.dns import DnsResult, DnsStatus, Resolver

# RFC 4871 §3.2 hyphenated-word, the syntax of every dkim= value (§4.2.1).
_HYPHENATED_WORD = re.compile(r"[A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?\Z")


class AdspPractice(enum.StrEnum):
    UNKNOWN = "unknown"  # the domain might sign some or all mail
    ALL = "all"  # all mail carries an Author Domain Signature
    DISCARDABLE = "discardable"  # ... and mail without one may be discarded


class AdspStatus(enum.StrEnum):
    """RFC 5617 §5.4 results (the `dkim-adsp=` word of RFC 8601 headers)."""

    NONE = "none"  # no ADSP record
    PASS = "pass"  # noqa: S105 (a result word): a valid Author Domain Signature
    UNKNOWN = "unknown"  # none valid; dkim=unknown
    FAIL = "fail"  # none valid; dkim=all
    DISCARD = "discard"  # none valid; dkim=discardable
    NXDOMAIN = "nxdomain"  # the author domain does not exist
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


class AdspRecordError(ValueError):
    """Not a valid ADSP record (§4.2.1); the text says why."""


@dataclass(frozen=True, slots=True)
class AdspRecord:
    practice: AdspPractice
    value: str  # the dkim= value as published (lowercase)


@dataclass(frozen=True, slots=True)
class AdspResult:
    result: AdspStatus
    domain: str  # the author domain
    reason: str = ""
    record: AdspRecord | None = None


def parse_adsp(text: str) -> AdspRecord:
    """Parse an ADSP record; raise AdspRecordError when it is not one.

    §4.2.1: a tag-list (RFC 4871 §3.2) that starts with `dkim=` (lowercase,
    "so the first four characters of the record are lowercase 'dkim'");
    unknown tags are ignored.  A value other than unknown/all/discardable is
    an `x-adsp-dkim-tag` for future extension and reads as `unknown`, as in
    Mail::DKIM: it promises nothing.
    """
    if not text.startswith("dkim"):
        raise AdspRecordError(f"record does not start with dkim=: {text[:40]!r}")
    try:
        tags = parse_tag_list(text)
    except TagValueError as error:
        raise AdspRecordError(str(error)) from None
    if next(iter(tags)) != "dkim":
        raise AdspRecordError(f"record does not start with dkim=: {text[:40]!r}")
    value = tags["dkim"]
    if not _HYPHENATED_WORD.match(value):
        raise AdspRecordError(f"dkim={value[:40]!r} is not a practice word")
    value = value.lower()
    try:
        practice = AdspPractice(value)
    except ValueError:
        practice = AdspPractice.UNKNOWN
    return AdspRecord(practice, value)


async def check_adsp(
    author_domain: str, dkim: Iterable[tuple[str, bool]], resolver: Resolver
) -> AdspResult:
    """The ADSP result for mail from `author_domain`, given the DKIM
    signatures as (d=, passed) pairs (see `dmarc.dkim_identifiers`)."""
    domain = author_domain.rstrip(".").lower()
    if not domain:
        return AdspResult(AdspStatus.PERMERROR, domain, "no author domain")
    # §2.7 Author Domain Signature: a valid signature whose d= is the author
    # domain itself (not a parent).  It satisfies every practice, so no
    # lookup is needed (§5.4 pass).
    if any(ok and d.rstrip(".").lower() == domain for d, ok in dkim):
        return AdspResult(AdspStatus.PASS, domain, "valid author domain signature")

    name = f"_adsp._domainkey.{domain}"
    mx, a, aaaa, txt = await asyncio.gather(
        resolver.mx(domain), resolver.a(domain), resolver.aaaa(domain), resolver.txt(name)
    )
    scope: tuple[DnsResult[Any], ...] = (mx, a, aaaa)
    if not any(r.status in (DnsStatus.ANSWER, DnsStatus.NODATA) for r in scope):
        failed = next((r for r in scope if r.status is DnsStatus.TEMPFAIL), None)
        if failed is not None:
            why = failed.reason or "temporary DNS failure"
            return AdspResult(AdspStatus.TEMPERROR, domain, f"{domain}: {why}")
        return AdspResult(AdspStatus.NXDOMAIN, domain, f"{domain} does not exist")

    if txt.status is DnsStatus.TEMPFAIL:
        return AdspResult(
            AdspStatus.TEMPERROR, domain, f"{name}: {txt.reason or 'temporary DNS failure'}"
        )
    if not txt.ok or not txt.records:
        return AdspResult(AdspStatus.NONE, domain, f"no ADSP record at {name}")
    if len(txt.records) > 1:
        return AdspResult(AdspStatus.PERMERROR, domain, f"{len(txt.records)} TXT records at {name}")
    text = txt.records[0].decode("utf-8", "replace")
    try:
        record = parse_adsp(text)
    except AdspRecordError as error:
        return AdspResult(AdspStatus.NONE, domain, f"{name} ignored: {error}")

    status = {
        AdspPractice.UNKNOWN: AdspStatus.UNKNOWN,
        AdspPractice.ALL: AdspStatus.FAIL,
        AdspPractice.DISCARDABLE: AdspStatus.DISCARD,
    }[record.practice]
    return AdspResult(
        status, domain, f"no valid author domain signature; dkim={record.value}", record
    )
