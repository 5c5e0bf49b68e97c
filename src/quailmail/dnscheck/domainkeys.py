"""The DomainKeys policy record `_domainkey.DOMAIN` (RFC 4870 §3.6)."""

from __future__ import annotations

from quailmail.auth.domainkeys.policy import parse_policy
from quailmail.core.dns import DnsStatus, Resolver
from quailmail.dnscheck.findings import Finding, error, ok, text, warning

CHECK = "domainkeys"


async def check_policy(domain: str, resolver: Resolver) -> list[Finding]:
    name = f"_domainkey.{domain}"
    answer = await resolver.txt(name)
    if answer.status is DnsStatus.TEMPFAIL:
        return [error(CHECK, name, f"lookup failed: {answer.reason}")]
    if not answer.records:
        return [ok(CHECK, name, "no DomainKeys policy record (o=~ assumed: signs some mail)")]
    raw = text(answer.records[0])
    policy = parse_policy(domain, raw)
    if policy is None:
        return [error(CHECK, name, "policy record is not a tag list", raw)]
    findings = [ok(CHECK, name, policy.describe(), raw)]
    if policy.testing:
        findings.append(warning(CHECK, name, "t=y left on: receivers ignore the policy", raw))
    return findings
