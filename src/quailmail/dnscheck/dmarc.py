"""The DMARC record (RFC 7489) and the ADSP record (RFC 5617) of a domain."""

from __future__ import annotations

from quailmail.auth.adsp import AdspPractice, AdspRecordError, parse_adsp
from quailmail.auth.dmarc import Policy, discover_record, organizational_domain
from quailmail.auth.results import Result
from quailmail.core.dns import DnsStatus, Resolver
from quailmail.dnscheck.findings import Finding, error, ok, text, warning


async def check_dmarc(domain: str, resolver: Resolver) -> list[Finding]:
    found = await discover_record(domain, resolver)
    name = f"_dmarc.{found.domain or domain}"
    if found.record is None:
        if found.problem is Result.NONE:
            return [warning("dmarc", name, f"no DMARC policy: {found.reason}")]
        return [error("dmarc", name, found.reason, found.text)]
    record = found.record
    raw = found.text
    findings: list[Finding] = []
    where = "" if found.domain == domain else f" (from the organizational domain {found.domain})"
    summary = f"p={record.p.value} sp={record.subdomain_policy.value} pct={record.pct}{where}"
    if record.p is Policy.NONE:
        findings.append(warning("dmarc", name, f"{summary}: monitoring only", raw))
    else:
        findings.append(ok("dmarc", name, summary, raw))
    if record.pct < 100:
        findings.append(warning("dmarc", name, f"pct={record.pct}: policy on part of mail", raw))
    findings.extend(warning("dmarc", name, note, raw) for note in record.warnings)
    if not record.rua:
        findings.append(warning("dmarc", name, "no rua=: no aggregate reports will come", raw))
    for uri in (*record.rua, *record.ruf):
        findings.extend(await _report_destination(found.domain or domain, uri.mailbox, resolver))
    return findings


async def _report_destination(
    domain: str, mailbox: str | None, resolver: Resolver
) -> list[Finding]:
    """RFC 7489 §7.1: reports to another organizational domain are sent only if
    that domain publishes `<domain>._report._dmarc.<its domain>`."""
    if mailbox is None or "@" not in mailbox:
        return []
    target = mailbox.rpartition("@")[2].lower().rstrip(".")
    if organizational_domain(target) == organizational_domain(domain):
        return []
    name = f"{domain}._report._dmarc.{target}"
    answer = await resolver.txt(name)
    if answer.status is DnsStatus.TEMPFAIL:
        return [error("dmarc", name, f"lookup failed: {answer.reason}")]
    if any(text(r).replace(" ", "").upper().startswith("V=DMARC1") for r in answer.records):
        return [ok("dmarc", name, f"{target} accepts reports for {domain}")]
    return [error("dmarc", name, f"{target} does not authorize reports for {domain} (§7.1)")]


async def check_adsp(domain: str, resolver: Resolver) -> list[Finding]:
    name = f"_adsp._domainkey.{domain}"
    answer = await resolver.txt(name)
    if answer.status is DnsStatus.TEMPFAIL:
        return [error("adsp", name, f"lookup failed: {answer.reason}")]
    if not answer.records:
        return [ok("adsp", name, "no ADSP record (historic; RFC 5617 was retired)")]
    if len(answer.records) > 1:
        return [error("adsp", name, f"{len(answer.records)} ADSP records; receivers ignore them")]
    raw = text(answer.records[0])
    try:
        record = parse_adsp(raw)
    except AdspRecordError as exc:
        return [error("adsp", name, f"not an ADSP record: {exc}", raw)]
    meaning = {
        AdspPractice.UNKNOWN: "dkim=unknown: may sign some mail",
        AdspPractice.ALL: "dkim=all: all mail is signed by the domain",
        AdspPractice.DISCARDABLE: "dkim=discardable: unsigned mail may be discarded",
    }[record.practice]
    return [ok("adsp", name, meaning, raw)]
