"""`quail check-dns`: read a domain's mail records and say what is wrong.

Each check is handed the resolver (the CLI builds it) and returns findings;
`check_domain` runs them in the order an admin reads a zone: sender policy
(SPF, Sender ID), signing keys (DKIM selectors, DomainKeys policy, ADSP),
DMARC, then where mail goes (MX and its addresses).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from quailmail.auth.keys import PrivateKey
from quailmail.core.dns import DnsStatus, Resolver
from quailmail.dnscheck.dkim import check_selector
from quailmail.dnscheck.dmarc import check_adsp, check_dmarc
from quailmail.dnscheck.domainkeys import check_policy
from quailmail.dnscheck.findings import Finding, Level, warning
from quailmail.dnscheck.mx import check_mx
from quailmail.dnscheck.spf import check_senderid, check_spf

# The selectors the seeds use (qmail-dk's "private", dknewkey's "default"),
# tried when none is named.
USUAL_SELECTORS = ("default", "private")

__all__ = ["USUAL_SELECTORS", "Finding", "Level", "check_domain"]


async def check_domain(
    domain: str,
    resolver: Resolver,
    *,
    selectors: Sequence[str] = (),
    keys: Mapping[str, PrivateKey] | None = None,
) -> list[Finding]:
    keys = keys or {}
    findings = await check_spf(domain, resolver)
    findings += await check_senderid(domain, resolver)
    if selectors:
        for selector in selectors:
            findings += await check_selector(domain, selector, resolver, keys.get(selector))
    else:
        found = False
        for selector in USUAL_SELECTORS:
            answer = await resolver.txt(f"{selector}._domainkey.{domain}")
            if answer.status is DnsStatus.ANSWER:
                found = True
                findings += await check_selector(domain, selector, resolver)
        if not found:
            names = ", ".join(USUAL_SELECTORS)
            findings.append(
                warning("dkim", domain, f"no selector given and none of {names} published")
            )
    findings += await check_policy(domain, resolver)
    findings += await check_adsp(domain, resolver)
    findings += await check_dmarc(domain, resolver)
    findings += await check_mx(domain, resolver)
    return findings
