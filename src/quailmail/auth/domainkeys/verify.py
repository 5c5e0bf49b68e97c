"""DomainKeys verification (RFC 4870): one message in, one verdict out.

Evidence is gathered in the order libdomainkeys' dk_end() gathers it, so the
first problem found is the one its letter would name: the signature's tags,
the sending address and d=, the key record, then the hash.  When the message
is unsigned or the verdict is not OK, the sending domain's policy record is
looked up and attached: it is evidence for the policy layer, not a verdict.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, replace

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import padding

from quailmail.auth.domainkeys.canonicalize import PREHASHED_SHA1, digest, select_headers
from quailmail.auth.domainkeys.keyrecord import (
    DkKey,
    granularity_matches,
    parse_key_record,
    says_testing,
)
from quailmail.auth.domainkeys.names import covers, is_dns_name
from quailmail.auth.domainkeys.policy import DkPolicy, domain_policy
from quailmail.auth.domainkeys.sender import sending_address
from quailmail.auth.domainkeys.signature import LNAME, parse_signature
from quailmail.auth.domainkeys.status import DkProblem, DkStatus, DomainKeysResult, shown
from quailmail.auth.message import Message, sender_domain
from quailmail.auth.results import Result
from quailmail.core.dns import DnsStatus, Resolver

_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


@dataclass(slots=True)
class _Evidence:
    """What is known so far; every verdict reports all of it."""

    domain: str | None = None
    selector: str | None = None
    b: str | None = None
    sender: str | None = None
    sender_field: str | None = None
    sender_domain: str | None = None
    testing: bool = False

    def verdict(self, status: DkStatus, result: Result, reason: str) -> DomainKeysResult:
        if self.testing:
            reason = f"{reason}; key in testing mode (t=y)"
        return DomainKeysResult(
            status=status,
            result=result,
            reason=reason,
            domain=self.domain,
            selector=self.selector,
            sender=self.sender,
            header_b=self.b,
            testing=self.testing,
            sender_field=self.sender_field,
        )


async def verify_domainkeys(
    message: Message, resolver: Resolver, *, min_key_bits: int = 0
) -> DomainKeysResult:
    """Verify the message's first DomainKey-Signature; never raises.

    No key is too short by default, as in libdomainkeys: RFC 8301's 1024-bit
    floor is DKIM's, and the seeds' toasters sign DomainKeys with 384- and
    768-bit keys (`dknewkey`'s default), which their DKVERIFY="DEGIJKfh"
    would otherwise refuse as E.  `min_key_bits` sets a floor of our own.

    Only the first (topmost) DomainKey-Signature field is verified: it is the
    one added last, and it is the one libdomainkeys checks ("check the
    outermost (first encountered) signature"), so the DKVERIFY letters mean
    what they meant under qmail-dk.  Mail::DKIM verifies every one and reports
    the first that passes: a message whose first signature fails and whose
    second passes is B here and pass there.
    """
    try:
        return await _verify(message, resolver, min_key_bits)
    except Exception as exc:
        # A bug of ours must not lose the message or crash the session: it
        # is libdomainkeys' INTERNAL ("K"), a temporary error, with the cause.
        return DomainKeysResult(
            DkStatus.INTERNAL,
            Result.TEMPERROR,
            f"internal error: {type(exc).__name__}: {shown(str(exc), 200)}",
        )


async def _verify(message: Message, resolver: Resolver, min_key_bits: int) -> DomainKeysResult:
    index = next((i for i, h in enumerate(message.headers) if h.lname == LNAME), None)
    if index is None:
        result = DomainKeysResult(DkStatus.NOSIG, Result.NONE, "no signature")
        return await _with_policy(result, sender_domain(message.headers), resolver)
    # The signature covers the fields below it (RFC 4870 §3.3 h=, §3.4.2.1);
    # fields above were added after signing, by relays.
    below = message.headers[index + 1 :]
    evidence = _Evidence()
    try:
        result = await _check(message, index, resolver, min_key_bits, evidence)
    except DkProblem as problem:
        result = evidence.verdict(problem.status, problem.result, problem.reason)
    if result.status is DkStatus.OK:
        return result
    return await _with_policy(result, evidence.sender_domain or sender_domain(below), resolver)


async def _check(
    message: Message, index: int, resolver: Resolver, min_key_bits: int, evidence: _Evidence
) -> DomainKeysResult:
    """Raises DkProblem for every verdict but OK and BADSIG."""
    below = message.headers[index + 1 :]
    signature = parse_signature(message.headers[index].text())
    evidence.domain, evidence.selector = signature.domain, signature.selector
    # header.b only when it can be one (RFC 6008: base64); a hostile b= must
    # not reach a header we write.
    evidence.b = signature.b if _BASE64.fullmatch(signature.b) else None
    signer = sending_address(below, where=" under the signature")
    evidence.sender, evidence.sender_field = shown(signer.address, 320), signer.field
    evidence.sender_domain = signer.domain
    if signature.headers is not None and signer.field not in signature.headers:
        # The address the signature vouches for must be signed; Mail::DKIM
        # takes the identity from the signed fields only and fails the same
        # message ("bad identity"); libdomainkeys would not notice.
        raise DkProblem(
            DkStatus.SYNTAX, f"h= does not cover the {signer.field} header", Result.NEUTRAL
        )
    if not covers(signature.domain, signer.domain):
        # libdomainkeys: SYNTAX (TC26); Mail::DKIM: "invalid" (bad identity).
        raise DkProblem(
            DkStatus.SYNTAX,
            f"d={signature.domain} is not the sender's domain {shown(signer.domain)} or a parent",
            Result.NEUTRAL,
        )
    try:
        signed = base64.b64decode(signature.b, validate=True)
    except (binascii.Error, ValueError):
        return evidence.verdict(DkStatus.BADSIG, Result.FAIL, "b= is not valid base64")

    key = await _fetch_key(signature.selector, signature.domain, resolver, min_key_bits, evidence)
    if not granularity_matches(key.granularity, signer.local):
        raise DkProblem(
            DkStatus.BADKEY,
            f"key is for {shown(key.granularity)}@ only (g=), not {shown(signer.local)}@",
        )
    hashed = digest(select_headers(below, signature.headers), message.crlf_body(), signature.canon)
    try:
        key.key.verify(signed, hashed, padding.PKCS1v15(), PREHASHED_SHA1)
    except InvalidSignature:
        return evidence.verdict(DkStatus.BADSIG, Result.FAIL, "signature did not verify")
    return evidence.verdict(DkStatus.OK, Result.PASS, "ok")


async def _fetch_key(
    selector: str, domain: str, resolver: Resolver, min_key_bits: int, evidence: _Evidence
) -> DkKey:
    name = f"{selector}._domainkey.{domain}"
    if not is_dns_name(name):
        raise DkProblem(DkStatus.SYNTAX, "s= and d= make a name too long for DNS", Result.NEUTRAL)
    answer = await resolver.txt(name)
    if answer.status is DnsStatus.TEMPFAIL:
        detail = f": {answer.reason}" if answer.reason else ""
        raise DkProblem(DkStatus.CANTVRFY, f"key lookup {name} failed temporarily{detail}")
    if answer.status is not DnsStatus.ANSWER or not answer.records:
        raise DkProblem(DkStatus.NOKEY, f"no key record at {name}")
    # The first TXT record is the key, as in Mail::DKIM; a selector with
    # several is misconfigured.
    text = answer.records[0].decode("utf-8", "surrogateescape")
    evidence.testing = says_testing(text)
    return parse_key_record(text, min_key_bits=min_key_bits)


async def _with_policy(
    result: DomainKeysResult, domain: str | None, resolver: Resolver
) -> DomainKeysResult:
    if domain is None:
        return result
    policy: DkPolicy | None = await domain_policy(domain, resolver)
    if policy is None:
        return result
    return replace(result, reason=f"{result.reason}; {policy.describe()}", policy=policy)
