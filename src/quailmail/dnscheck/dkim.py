"""DKIM selector records, and whether a private key matches what is published.

Key sizes as RFC 8301 §3.2 sets them: verifiers refuse RSA keys under 1024
bits, so a 384- or 512-bit key (libdomainkeys' dknewkey made 384) is broken,
768 is refused, 1024 passes but 2048 is what signers should use.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import rsa

from quailmail.auth.dkim.keyrecord import KeyRecordError, parse_key_record
from quailmail.auth.keys import KeyProblem, PrivateKey, parse_public_key, public_key_bytes
from quailmail.core.dns import DnsStatus, Resolver
from quailmail.dnscheck.findings import Finding, error, ok, text, warning

CHECK = "dkim"


async def check_selector(
    domain: str, selector: str, resolver: Resolver, key: PrivateKey | None = None
) -> list[Finding]:
    name = f"{selector}._domainkey.{domain}"
    answer = await resolver.txt(name)
    if answer.status is DnsStatus.TEMPFAIL:
        return [error(CHECK, name, f"lookup failed: {answer.reason}")]
    if not answer.records:
        return [error(CHECK, name, f"no key record for selector {selector}")]
    if len(answer.records) > 1:
        return [error(CHECK, name, f"{len(answer.records)} TXT records; verifiers take one")]
    raw = text(answer.records[0])
    try:
        record = parse_key_record(answer.records[0])
    except KeyRecordError as exc:
        return [error(CHECK, name, f"key record does not parse: {exc.reason}", raw)]
    findings: list[Finding] = []
    if record.key_type not in ("rsa", "ed25519"):
        return [error(CHECK, name, f"unknown key type k={record.key_type}", raw)]
    if not record.p:
        return [warning(CHECK, name, "key revoked (empty p=): signatures with it fail", raw)]
    try:
        public = parse_public_key(record.key_type, record.p)
    except KeyProblem as exc:
        return [error(CHECK, name, f"p= is not a usable key: {exc}", raw)]
    if isinstance(public, rsa.RSAPublicKey):
        bits = public.key_size
        if bits <= 512:
            findings.append(error(CHECK, name, f"{bits}-bit RSA key: broken, factorable", raw))
        elif bits < 1024:
            findings.append(
                error(CHECK, name, f"{bits}-bit RSA key: verifiers refuse it (RFC 8301)", raw)
            )
        elif bits < 2048:
            findings.append(warning(CHECK, name, f"{bits}-bit RSA key: 2048 is recommended", raw))
        else:
            findings.append(ok(CHECK, name, f"{bits}-bit RSA key", raw))
    else:
        findings.append(ok(CHECK, name, "Ed25519 key (RFC 8463)", raw))
    if record.testing:
        findings.append(warning(CHECK, name, "t=y: key still in testing mode", raw))
    if record.hashes is not None and "sha256" not in record.hashes:
        findings.append(warning(CHECK, name, "h= excludes sha256 (RFC 8301 requires it)", raw))
    if key is not None:
        if key.public_record_value() == record.p or public_key_bytes(
            key.key.public_key()
        ) == public_key_bytes(public):
            findings.append(ok(CHECK, name, "p= matches the private key", raw))
        else:
            findings.append(error(CHECK, name, "p= does not match the private key", raw))
    return findings
