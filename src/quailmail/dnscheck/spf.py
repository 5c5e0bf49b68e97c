"""The SPF record (RFC 7208) and the Sender ID records (RFC 4406) of a domain.

Limits are counted by evaluating the policy for an address no policy lists
(192.0.2.1, TEST-NET-1, RFC 5737): every term is then walked, includes and
redirect followed, with the limits raised so the checker can say how far
past 10 lookups or 2 void lookups a policy goes.
"""

from __future__ import annotations

from quailmail.auth.spf import (
    MAX_DNS_TERMS,
    MAX_VOID_LOOKUPS,
    SpfResult,
    SpfSyntaxError,
    check_host,
    parse_record,
)
from quailmail.auth.spf.record import select_spf1, senderid_scopes
from quailmail.core.dns import DnsStatus, Resolver
from quailmail.dnscheck.findings import Finding, error, ok, text, warning

NOWHERE = "192.0.2.1"  # RFC 5737 TEST-NET-1: listed by no real policy
_ALL_ADVICE = {
    SpfResult.PASS: (error, "+all: every host on the Internet passes as this domain"),
    SpfResult.NEUTRAL: (warning, "?all: unlisted hosts get neutral, nothing is asserted"),
    SpfResult.SOFTFAIL: (
        warning,
        "~all: mail from unlisted hosts is only marked (softfail); "
        "use -all once every sender is listed",
    ),
    SpfResult.FAIL: (ok, "-all: mail from unlisted hosts fails"),
}


async def check_spf(domain: str, resolver: Resolver) -> list[Finding]:
    answer = await resolver.txt(domain)
    if answer.status is DnsStatus.TEMPFAIL:
        return [error("spf", domain, f"lookup failed: {answer.reason}")]
    try:
        raw = select_spf1(answer.records)
    except SpfSyntaxError as exc:
        shown = " | ".join(text(r) for r in answer.records if r[:6].lower() == b"v=spf1")
        return [error("spf", domain, f"{exc}: receivers answer permerror (RFC 7208 §4.5)", shown)]
    if raw is None:
        return [warning("spf", domain, "no SPF record: nobody can tell forged senders")]
    try:
        record = parse_record(raw)
    except SpfSyntaxError as exc:
        return [error("spf", domain, f"syntax error: {exc}", raw)]
    findings: list[Finding] = []
    final = next((m for m in record.mechanisms if m.kind == "all"), None)
    if final is not None:
        make, advice = _ALL_ADVICE[final.qualifier]
        findings.append(make("spf", domain, advice, raw))
    elif record.redirect is None:
        findings.append(warning("spf", domain, "no 'all': unlisted hosts get neutral", raw))
    verdict = await check_host(
        NOWHERE,
        domain,
        f"postmaster@{domain}",
        resolver,
        max_dns_terms=100,
        max_void_lookups=100,
    )
    if verdict.result in (SpfResult.PERMERROR, SpfResult.TEMPERROR):
        why = f"evaluation ends in {verdict.result}: {verdict.reason}"
        findings.append(error("spf", domain, why, raw))
    if verdict.lookups > MAX_DNS_TERMS:
        why = f"{verdict.lookups} DNS lookups, over the limit of {MAX_DNS_TERMS} (§4.6.4)"
        findings.append(error("spf", domain, why, raw))
    elif verdict.void_lookups > MAX_VOID_LOOKUPS:
        why = f"{verdict.void_lookups} void lookups, over the limit of {MAX_VOID_LOOKUPS}"
        findings.append(error("spf", domain, why, raw))
    else:
        findings.append(ok("spf", domain, f"{verdict.lookups} of {MAX_DNS_TERMS} DNS lookups", raw))
    return findings


async def check_senderid(domain: str, resolver: Resolver) -> list[Finding]:
    answer = await resolver.txt(domain)
    if answer.status is DnsStatus.TEMPFAIL:
        return [error("senderid", domain, f"lookup failed: {answer.reason}")]
    spf2 = [r for r in answer.records if senderid_scopes(r) is not None]
    if not spf2:
        if any(r[:6].lower() == b"v=spf1" for r in answer.records):
            return [
                ok("senderid", domain, "no spf2.0 record: Sender ID reads v=spf1 (RFC 4406 §3.4)")
            ]
        return [warning("senderid", domain, "no spf2.0 or v=spf1 record")]
    findings: list[Finding] = []
    seen: dict[str, int] = {}
    for data in spf2:
        raw = text(data)
        try:
            record = parse_record(raw)
        except SpfSyntaxError as exc:
            findings.append(error("senderid", domain, f"syntax error: {exc}", raw))
            continue
        scopes = ",".join(sorted(record.scopes)) or "none"
        findings.append(ok("senderid", domain, f"spf2.0 record for scopes {scopes}", raw))
        for scope in record.scopes:
            seen[scope] = seen.get(scope, 0) + 1
    findings.extend(
        error("senderid", domain, f"{n} spf2.0 records for scope {scope}: permerror")
        for scope, n in sorted(seen.items())
        if n > 1
    )
    return findings
