"""check_host() of RFC 7208 §4 and the identities it is asked about.

Asynchronous and pure apart from the `Resolver` handed in: `check_mailfrom`
(the MAIL FROM identity, §2.4), `check_helo` (§2.3) and `check_host` itself;
Sender ID (`senderid.py`) runs the same evaluation on its own records.
"""

from __future__ import annotations

import ipaddress

from quailmail.auth.memo import AnswerMemo
from quailmail.auth.spf.evaluate import (
    MAX_DNS_TERMS,
    MAX_VOID_LOOKUPS,
    Abort,
    Evaluation,
    LocalPolicy,
    Outcome,
    evaluate,
    explain,
    split_sender,
    well_formed,
)
from quailmail.auth.spf.macro import expand
from quailmail.auth.spf.record import parse_explanation
from quailmail.auth.spf.result import HELO, MAILFROM, SpfResult, SpfVerdict
from quailmail.core.clock import Clock
from quailmail.core.dns import Resolver

__all__ = [
    "DEFAULT_EXPLANATION",
    "TIME_LIMIT",
    "Address",
    "check_helo",
    "check_host",
    "check_mailfrom",
    "client_address",
    "run_check",
    "split_sender",
]

_NOT_KEPT = frozenset({SpfResult.TEMPERROR, SpfResult.FAIL})  # by a memo
TIME_LIMIT = 20.0  # §4.6.4: at least 20 s for the whole check, then temperror
DEFAULT_EXPLANATION = "SPF fail - not authorized"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def client_address(ip: str | Address) -> Address:
    """The client's address; an IPv4-mapped IPv6 address is taken as the
    IPv4 address it maps (§5: "MUST still be considered an IPv4 address").
    Raises ValueError for text that is not an address."""
    address = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


async def check_host(
    ip: str | Address,
    domain: str,
    sender: str,
    resolver: Resolver,
    *,
    helo: str = "",
    receiver: str = "unknown",
    identity: str = MAILFROM,
    default_explanation: str = DEFAULT_EXPLANATION,
    clock: Clock | None = None,
    time_limit: float | None = TIME_LIMIT,
    max_dns_terms: int = MAX_DNS_TERMS,
    max_void_lookups: int = MAX_VOID_LOOKUPS,
) -> SpfVerdict:
    """RFC 7208 §4 check_host(<ip>, <domain>, <sender>).

    `sender` is the whole mailbox (a missing local-part reads as
    "postmaster", §4.3); `helo` fills %{h}, `receiver` %{r} (§7.3).
    `default_explanation` (a macro-string, §6.2) explains a fail whose
    record has no usable exp=.  `clock` gives %{t} (the system's if None).
    `time_limit` bounds the whole check (§4.6.4): past it, the next DNS
    term ends the check with temperror.
    The limits of §4.6.4 may be raised (a record checker counting how far
    past 10 a policy goes); a receiver keeps the RFC's.
    Raises ValueError only for an `ip` that is not an address.
    """
    return await run_check(
        ip,
        domain,
        sender,
        resolver,
        helo=helo,
        receiver=receiver,
        identity=identity,
        scope=MAILFROM,
        default_explanation=default_explanation,
        clock=clock,
        time_limit=time_limit,
        max_dns_terms=max_dns_terms,
        max_void_lookups=max_void_lookups,
    )


async def check_mailfrom(
    ip: str | Address,
    mail_from: str,
    helo: str,
    resolver: Resolver,
    *,
    receiver: str = "unknown",
    default_explanation: str = DEFAULT_EXPLANATION,
    clock: Clock | None = None,
    time_limit: float | None = TIME_LIMIT,
    local: LocalPolicy | None = None,
    memo: AnswerMemo[SpfVerdict] | None = None,
) -> SpfVerdict:
    """The MAIL FROM identity (§2.4); a null reverse-path ("") is checked
    as postmaster@<helo>.  `local` adds a receiver's own rules and best
    guess (qmail-spf's spfrules / spfguess; see LocalPolicy).  `memo`
    reuses the verdict of the same inputs while its DNS answers stand
    (auth/memo.py); not with a `clock` of the caller's, and never a
    temperror (to be tried again) or a fail (its explanation may name the
    time, `%{t}`)."""
    sender = mail_from or f"postmaster@{helo}"
    if memo is not None and clock is None:
        return await memo.through(
            (str(ip), sender, helo, receiver, default_explanation, time_limit, local),
            resolver,
            lambda recorder: check_mailfrom(
                ip, mail_from, helo, recorder, receiver=receiver,
                default_explanation=default_explanation, time_limit=time_limit, local=local,
            ),
            lambda verdict: verdict.result not in _NOT_KEPT,
        )  # fmt: skip
    return await run_check(
        ip,
        split_sender(sender)[1],
        sender,
        resolver,
        helo=helo,
        receiver=receiver,
        identity=MAILFROM,
        scope=MAILFROM,
        default_explanation=default_explanation,
        clock=clock,
        time_limit=time_limit,
        local=local,
    )


async def explain_verdict(verdict: SpfVerdict, text: str, resolver: Resolver) -> str:
    """`text`, an explain-string (§6.2), expanded for `verdict`'s inputs as a
    fail's explanation is, whatever the result (qmail-spf gives its `spfexp`
    to every result it refuses).  Raises MacroError when `text` is not an
    explain-string."""
    spec = parse_explanation(text)
    check = Evaluation.start(
        resolver,
        client_address(verdict.client_ip),
        verdict.sender,
        helo=verdict.helo,
        receiver=verdict.receiver,
    )
    return expand(spec, await check.values(spec, verdict.domain or check.sender_domain))


async def check_helo(
    ip: str | Address,
    helo: str,
    resolver: Resolver,
    *,
    receiver: str = "unknown",
    default_explanation: str = DEFAULT_EXPLANATION,
    clock: Clock | None = None,
    time_limit: float | None = TIME_LIMIT,
) -> SpfVerdict:
    """The HELO identity (§2.3): check_host(ip, helo, postmaster@helo)."""
    return await check_host(
        ip,
        helo,
        f"postmaster@{helo}",
        resolver,
        helo=helo,
        identity=HELO,
        receiver=receiver,
        default_explanation=default_explanation,
        clock=clock,
        time_limit=time_limit,
    )


async def run_check(
    ip: str | Address,
    domain: str,
    sender: str,
    resolver: Resolver,
    *,
    helo: str,
    receiver: str,
    identity: str,
    scope: str,
    default_explanation: str,
    clock: Clock | None,
    time_limit: float | None,
    max_dns_terms: int = MAX_DNS_TERMS,
    max_void_lookups: int = MAX_VOID_LOOKUPS,
    local: LocalPolicy | None = None,
) -> SpfVerdict:
    address = client_address(ip)
    # ipaddress takes IPv4 only in its canonical form, so the text is the
    # str() of the address, spared (a third of a microsecond per check counts).
    ip_text = (
        ip
        if isinstance(ip, str) and address.version == 4 and "." in ip and ":" not in ip
        else str(address)
    )
    if domain.endswith("."):
        domain = domain[:-1]
    check = Evaluation.start(
        resolver,
        address,
        sender,
        helo=helo,
        receiver=receiver,
        scope=scope,
        clock=clock,
        time_limit=time_limit,
    )
    check.max_terms, check.max_voids = max_dns_terms, max_void_lookups
    top = bool(local)
    if top:
        check.policy = local
    explanation = ""
    mechanism = None
    try:
        outcome = await evaluate(check, domain, rules=top, guess=top)
        result = outcome.result
        mechanism = outcome.mechanism.text if outcome.mechanism else None
        reason = _reason(result, outcome, domain)
        if result is SpfResult.FAIL:
            explanation = await explain(check, outcome, default_explanation)
    except Abort as abort:
        result, reason = abort.result, abort.reason
    return SpfVerdict(
        result=result,
        domain=domain,
        sender=check.sender,
        client_ip=ip_text,
        helo=helo,
        identity=identity,
        receiver=check.receiver,
        mechanism=mechanism,
        explanation=explanation,
        reason=reason,
        lookups=check.lookups,
        void_lookups=check.voids,
    )


def _reason(result: SpfResult, outcome: Outcome, domain: str) -> str:
    if result is SpfResult.NONE:
        if outcome.record is None and not well_formed(domain):
            return f"no domain to check: {domain!r}"
        return f"no SPF record for {domain}"
    if outcome.mechanism is None:
        return "no mechanism matched"
    if outcome.source is not None:  # a receiver's own rule, not the domain's
        return f"matched {outcome.mechanism.text} ({outcome.source})"
    return f"matched {outcome.mechanism.text}"
