"""The DKIM-Signature header field: parse and validate (RFC 6376 §3.5, §6.1.1).

Validation failures come back as a `SignatureError` carrying the status
letter a verifier reports (libdkim's mapping: a tag that does not parse or a
required tag missing is BAD_SYNTAX, v= other than 1 is STAT_INCOMPAT, an
expired x= is SIG_EXPIRED, a name too long to look up is DOMAIN_TOO_LONG).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from quailmail.auth.dkim.status import DkimStatus
from quailmail.auth.tagvalue import TagValueError, parse_tag_list, strip_fws

ALGORITHMS = {
    # a= → (key type, hash name); RFC 6376 §3.3, RFC 8463 §3
    "rsa-sha256": ("rsa", "sha256"),
    "rsa-sha1": ("rsa", "sha1"),
    "ed25519-sha256": ("ed25519", "sha256"),
}
CANONS = ("simple", "relaxed")
REQUIRED = ("v", "a", "b", "bh", "d", "h", "s")
_REQUIRED = frozenset(REQUIRED)

# RFC 6376 §3.5 d= and s= are domain-name / selector syntax: LDH labels
# (underscore tolerated in selectors, as seen in the field).
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?\Z")
_DIGITS = re.compile(r"[0-9]{1,76}\Z")  # §3.5: l=, t=, x= are at most 76 digits


class SignatureError(Exception):
    def __init__(self, status: DkimStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(slots=True)  # not frozen: built per signature on the hot path; never mutated
class DkimSignature:
    raw: bytes  # the whole header field, as received
    tags: dict[str, str]
    algorithm: str
    key_type: str
    hash_name: str
    b: bytes
    bh: bytes
    b_text: str  # b= without FWS, for header.b
    domain: str
    selector: str
    headers: tuple[str, ...]  # h=, lowercase
    header_canon: str
    body_canon: str
    identity: str  # i=, defaulting to "@" + d
    length: int | None
    timestamp: int | None
    expiration: int | None

    @property
    def key_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


def _b64(value: str, tag: str) -> bytes:
    try:
        return base64.b64decode(
            strip_fws(value) if " " in value or "\t" in value or "\n" in value else value,
            validate=True,
        )
    except (binascii.Error, ValueError):
        raise SignatureError(DkimStatus.BAD_SYNTAX, f"{tag}= is not valid base64") from None


def _number(tags: dict[str, str], tag: str) -> int | None:
    if tag not in tags:
        return None
    value = strip_fws(tags[tag])
    if not _DIGITS.match(value):
        raise SignatureError(DkimStatus.BAD_SYNTAX, f"{tag}= is not a number")
    return int(value)


def parse_signature(raw: bytes, *, now: float | None = None) -> DkimSignature:
    """Parse and check one DKIM-Signature field (`raw` without the final CRLF)."""
    text = raw.partition(b":")[2].decode("utf-8", "surrogateescape")
    try:
        tags = parse_tag_list(text)
    except TagValueError as exc:
        raise SignatureError(DkimStatus.BAD_SYNTAX, f"signature does not parse: {exc}") from None
    if "v" in tags and tags["v"] != "1":
        raise SignatureError(DkimStatus.STAT_INCOMPAT, f"unsupported version v={tags['v'][:20]}")
    if not tags.keys() >= _REQUIRED:
        missing = [tag for tag in REQUIRED if tag not in tags]
        raise SignatureError(
            DkimStatus.BAD_SYNTAX, f"signature lacks required tag {', '.join(missing)}"
        )
    algorithm = tags["a"].lower()
    if algorithm not in ALGORITHMS:
        raise SignatureError(DkimStatus.BAD_SYNTAX, f"unknown algorithm a={tags['a'][:30]}")
    key_type, hash_name = ALGORITHMS[algorithm]
    b_text = strip_fws(tags["b"])
    b = _b64(b_text, "b")
    bh = _b64(tags["bh"], "bh")
    if not b:
        raise SignatureError(DkimStatus.BAD_SYNTAX, "b= is empty")

    domain = tags["d"].strip().lower()
    if not _DOMAIN.match(domain):
        raise SignatureError(DkimStatus.BAD_SYNTAX, f"d={tags['d'][:60]} is not a domain name")
    domain = domain.rstrip(".")
    selector = tags["s"].strip().lower()
    if not _DOMAIN.match(selector):
        raise SignatureError(DkimStatus.BAD_SYNTAX, f"s={tags['s'][:60]} is not a selector")
    if len(selector) + len("._domainkey.") + len(domain) > 253:
        raise SignatureError(DkimStatus.DOMAIN_TOO_LONG, "selector name too long to look up")

    header_canon, slash, body_canon = tags.get("c", "simple").lower().partition("/")
    if not slash:
        body_canon = "simple"  # §3.5 c=: the body default is simple
    if header_canon not in CANONS or body_canon not in CANONS:
        raise SignatureError(DkimStatus.BAD_SYNTAX, f"unknown canonicalization c={tags['c']}")

    headers = tuple(strip_fws(tags["h"]).lower().split(":"))
    if "" in headers:
        raise SignatureError(DkimStatus.BAD_SYNTAX, "h= has an empty header name")
    if "from" not in headers:  # §5.4: From MUST be signed
        raise SignatureError(DkimStatus.BAD_SYNTAX, "h= does not include From")

    identity = tags.get("i", "").strip()
    if identity:
        _local, at, idomain = identity.rpartition("@")
        idomain = idomain.lower().rstrip(".")
        if not at or not (idomain == domain or idomain.endswith("." + domain)):
            raise SignatureError(DkimStatus.BAD_SYNTAX, "i= is not in the d= domain")  # §3.5 i=
    else:
        identity = "@" + domain

    if "q" in tags:
        methods = [strip_fws(m).lower() for m in tags["q"].split(":")]
        if "dns/txt" not in methods and "dns" not in methods:
            raise SignatureError(DkimStatus.BAD_SYNTAX, f"unsupported query method q={tags['q']}")

    length = _number(tags, "l")
    timestamp = _number(tags, "t")
    expiration = _number(tags, "x")
    if expiration is not None and timestamp is not None and expiration < timestamp:
        raise SignatureError(DkimStatus.BAD_SYNTAX, "x= is before t=")  # §3.5 x=
    if expiration is not None and now is not None and expiration < now:
        raise SignatureError(DkimStatus.SIG_EXPIRED, "signature expired (x= is past)")

    return DkimSignature(
        raw=raw,
        tags=tags,
        algorithm=algorithm,
        key_type=key_type,
        hash_name=hash_name,
        b=b,
        bh=bh,
        b_text=b_text,
        domain=domain,
        selector=selector,
        headers=headers,
        header_canon=header_canon,
        body_canon=body_canon,
        identity=identity,
        length=length,
        timestamp=timestamp,
        expiration=expiration,
    )
