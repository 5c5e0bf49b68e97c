"""MX hosts and their addresses: where mail for the domain goes, over which IP
family (the seeds' IPv6 patches: a host without AAAA cannot take mail over IPv6)."""

from __future__ import annotations

from quailmail.core.dns import DnsStatus, Resolver
from quailmail.dnscheck.findings import Finding, error, ok, warning

CHECK = "mx"


async def _addresses(host: str, resolver: Resolver) -> list[Finding]:
    a = await resolver.a(host)
    aaaa = await resolver.aaaa(host)
    if DnsStatus.TEMPFAIL in (a.status, aaaa.status):
        reason = a.reason if a.status is DnsStatus.TEMPFAIL else aaaa.reason
        return [error(CHECK, host, f"address lookup failed: {reason}")]
    v4, v6 = list(a.records), list(aaaa.records)
    shown = " ".join(v6 + v4)
    if not v4 and not v6:
        return [error(CHECK, host, "no A or AAAA record: mail cannot be delivered here")]
    if not v6:
        return [warning(CHECK, host, "IPv4 only: no AAAA record", shown)]
    if not v4:
        return [warning(CHECK, host, "IPv6 only: IPv4-only senders cannot reach it", shown)]
    return [ok(CHECK, host, "reachable over IPv6 and IPv4", shown)]


async def check_mx(domain: str, resolver: Resolver) -> list[Finding]:
    answer = await resolver.mx(domain)
    if answer.status is DnsStatus.TEMPFAIL:
        return [error(CHECK, domain, f"MX lookup failed: {answer.reason}")]
    if answer.status is DnsStatus.NXDOMAIN:
        return [error(CHECK, domain, "the domain does not exist")]
    if not answer.records:
        findings = [warning(CHECK, domain, "no MX record: mail goes to the domain's own address")]
        return findings + await _addresses(domain, resolver)
    shown = " ".join(f"{r.preference} {r.exchange or '.'}" for r in answer.records)
    if any(r.exchange == "" for r in answer.records):
        if len(answer.records) == 1:
            return [ok(CHECK, domain, "null MX: the domain accepts no mail (RFC 7505)", shown)]
        return [error(CHECK, domain, "null MX mixed with other MX records (RFC 7505 §3)", shown)]
    findings = [ok(CHECK, domain, f"{len(answer.records)} MX host(s)", shown)]
    for record in answer.records:
        findings.extend(await _addresses(record.exchange, resolver))
    return findings
