"""DMARC evaluation (RFC 7489 §6.6): find the policy, check alignment, decide.

Evidence comes in, one verdict goes out: the SPF result and the domain it was
evaluated for (MAIL FROM, or HELO for a null sender, RFC 7208 §2.4), the DKIM
signatures as (d=, passed) pairs, and a resolver.  The result carries the
record and where it was found, the policy that applies, the disposition after
`pct` sampling, both alignment verdicts and a reason; deciding what to do
with the message is the policy layer's job.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from quailmail.auth.dkim import DkimResult
from quailmail.auth.dmarc.alignment import aligned, normalize_domain
from quailmail.auth.dmarc.author import is_domain_name
from quailmail.auth.dmarc.orgdomain import organizational_domain
from quailmail.auth.dmarc.record import (
    DmarcRecord,
    DmarcRecordError,
    Policy,
    is_dmarc_record,
    parse_record,
)
from quailmail.auth.memo import AnswerMemo
from quailmail.auth.results import Result
from quailmail.core.dns import DnsStatus, Resolver

SpfInput = tuple[str, str | None]  # (RFC 7208 result word, the domain it is for)
DkimInput = tuple[str, bool]  # (d=, the signature verified)


class Sampler(Protocol):
    """Where pct sampling draws from; tests hand in a seeded random.Random."""

    def random(self) -> float: ...


_SYSTEM_RANDOM = random.SystemRandom()


@dataclass(frozen=True, slots=True)
class Discovery:
    """What policy discovery found (§6.6.3): a record, or why there is none."""

    record: DmarcRecord | None
    domain: str | None  # where the record was found (or the lookup failed)
    problem: Result | None  # NONE, TEMPERROR or PERMERROR when record is None
    reason: str = ""
    text: str | None = None  # the TXT record as published


@dataclass(frozen=True, slots=True)
class DmarcResult:
    result: Result  # pass, fail, none, temperror, permerror (§11.2)
    from_domain: str
    reason: str = ""
    record: DmarcRecord | None = None
    record_domain: str | None = None  # the From domain or its organizational domain
    policy: Policy | None = None  # p=, or sp= for a subdomain (§6.3)
    disposition: Policy = Policy.NONE  # what the owner asks for this message, after pct
    spf_aligned: bool = False
    dkim_aligned: bool = False
    dkim_domain: str | None = None  # the passing, aligned d=
    sampled_out: bool = False  # a failing message pct left out of the policy (§6.6.4)


def dkim_identifiers(result: DkimResult) -> list[DkimInput]:
    """(d=, passed) for each signature of a DKIM verification."""
    return [(sig.domain, sig.result is Result.PASS) for sig in result.signatures if sig.domain]


async def discover_record(from_domain: str, resolver: Resolver) -> Discovery:
    """§6.6.3: `_dmarc.<From domain>`, else `_dmarc.<organizational domain>`.

    TXT records that do not start with v=DMARC1 are discarded (step 4);
    several DMARC records at one name mean no policy (step 5: "DMARC
    processing is not applied"); a failed lookup is temperror, and a record
    that cannot be used (no valid p= and no rua= to fall back on) permerror
    (§11.2: "such as encountering a syntactically incorrect DMARC record").
    """
    domain = normalize_domain(from_domain)
    org = organizational_domain(domain)
    candidates = [domain] if org == domain else [domain, org]
    for candidate in candidates:
        name = f"_dmarc.{candidate}"
        answer = await resolver.txt(name)
        if answer.status is DnsStatus.TEMPFAIL:
            why = answer.reason or "temporary DNS failure"
            return Discovery(None, candidate, Result.TEMPERROR, f"{name}: {why}")
        texts = [raw.decode("utf-8", "replace") for raw in answer.records] if answer.ok else []
        found = [text for text in texts if is_dmarc_record(text)]
        if len(found) > 1:
            return Discovery(
                None, candidate, Result.NONE, f"{len(found)} DMARC records at {name}, none applies"
            )
        if found:
            try:
                record = parse_record(found[0])
            except DmarcRecordError as error:
                return Discovery(None, candidate, Result.PERMERROR, f"{name}: {error}", found[0])
            return Discovery(record, candidate, None, "", found[0])
    looked = " or ".join(f"_dmarc.{c}" for c in candidates)
    return Discovery(None, None, Result.NONE, f"no DMARC record at {looked}")


async def evaluate(
    from_domain: str,
    *,
    spf: SpfInput | None,
    dkim: Iterable[DkimInput],
    resolver: Resolver,
    rng: Sampler | None = None,
    memo: AnswerMemo[DmarcResult] | None = None,
) -> DmarcResult:
    """The DMARC verdict for a message whose RFC5322.From domain is `from_domain`.

    `memo` reuses the verdict of the same inputs while the DNS answers it
    read stand (auth/memo.py); never with an `rng` of the caller's, never a
    temperror, and never a fail that pct sampling decided."""
    if memo is not None and rng is None:
        pairs = tuple(dkim)
        return await memo.through(
            (from_domain, spf, pairs),
            resolver,
            lambda recorder: evaluate(from_domain, spf=spf, dkim=pairs, resolver=recorder),
            _keepable,
        )
    domain = from_domain.lower().removesuffix(".")
    if not is_domain_name(domain):
        return DmarcResult(
            Result.PERMERROR, domain, f"From domain is not a domain name: {from_domain[:60]!r}"
        )
    found = await discover_record(domain, resolver)
    if found.record is None or found.domain is None:
        problem = found.problem if found.problem is not None else Result.NONE
        return DmarcResult(problem, domain, found.reason, record_domain=found.domain)
    return decide(domain, found.record, found.domain, spf=spf, dkim=dkim, rng=rng)


def _keepable(verdict: DmarcResult) -> bool:
    """Neither a temperror nor a fail that pct sampling decided."""
    record = verdict.record
    sampled = verdict.result is Result.FAIL and record is not None and record.pct < 100
    return verdict.result is not Result.TEMPERROR and not sampled


def decide(
    from_domain: str,
    record: DmarcRecord,
    record_domain: str,
    *,
    spf: SpfInput | None,
    dkim: Iterable[DkimInput],
    rng: Sampler | None = None,
) -> DmarcResult:
    """Pure part of the evaluation, once the record is known (§6.6.2, §6.6.4)."""
    from_domain = normalize_domain(from_domain)
    record_domain = normalize_domain(record_domain)
    # §6.3 sp: "applies only to subdomains of the domain queried", i.e. when
    # the record came from the organizational domain (§6.6.3 step 3).
    policy = record.p if record_domain == from_domain else record.subdomain_policy
    pairs = list(dkim)

    # §6.6.2 / §4.2: a pass of either method that aligns is enough.
    spf_word = spf[0].strip().lower() if spf is not None else None
    spf_domain = spf[1] if spf is not None else None
    spf_aligned = bool(
        spf_word == "pass" and spf_domain and aligned(spf_domain, from_domain, record.aspf)
    )
    dkim_domain = next((d for d, ok in pairs if ok and aligned(d, from_domain, record.adkim)), None)
    dkim_aligned_domain = normalize_domain(dkim_domain) if dkim_domain is not None else None

    def result(verdict: Result, reason: str, **extra: Any) -> DmarcResult:
        return DmarcResult(
            verdict, from_domain, reason, record=record, record_domain=record_domain,
            policy=policy, spf_aligned=spf_aligned, dkim_aligned=dkim_domain is not None,
            dkim_domain=dkim_aligned_domain, **extra,
        )  # fmt: skip

    if dkim_aligned_domain is not None or spf_aligned:
        said = []
        if dkim_aligned_domain is not None:
            said.append(f"DKIM d={dkim_aligned_domain} aligned")
        if spf_aligned and spf_domain:
            said.append(f"SPF {normalize_domain(spf_domain)} aligned")
        return result(Result.PASS, ", ".join(said))

    disposition, sampled_out = _sample(policy, record.pct, rng)
    reason = f"{_spf_story(spf_word, spf_domain, record)}; {_dkim_story(pairs, record)}"
    if sampled_out:
        reason += f"; not in the pct={record.pct} sample"
    return result(Result.FAIL, reason, disposition=disposition, sampled_out=sampled_out)


def _sample(policy: Policy, pct: int, rng: Sampler | None) -> tuple[Policy, bool]:
    """§6.6.4: apply the policy to pct% of failing mail.  Out of the sample,
    reject is read as quarantine and quarantine as none ("the Mail Receiver
    SHOULD treat the email as though the 'quarantine' policy applies")."""
    if policy is Policy.NONE or pct >= 100:
        return policy, False
    if pct > 0 and (rng or _SYSTEM_RANDOM).random() * 100 < pct:
        return policy, False
    return (Policy.QUARANTINE if policy is Policy.REJECT else Policy.NONE), True


def _spf_story(word: str | None, domain: str | None, record: DmarcRecord) -> str:
    if word is None:
        return "no SPF result"
    if word != "pass":
        return f"SPF {word}"
    if not domain:
        return "SPF pass without a domain"
    return f"SPF {normalize_domain(domain)} not aligned (aspf={record.aspf})"


def _dkim_story(pairs: list[DkimInput], record: DmarcRecord) -> str:
    passed = [normalize_domain(d) for d, ok in pairs if ok]
    if passed:
        return f"DKIM d={','.join(passed)} not aligned (adkim={record.adkim})"
    return "no DKIM signature passed" if pairs else "no DKIM signature"
