"""The selector record `<s>._domainkey.<d>` (RFC 4870 §3.2.3).

    k=rsa; t=y; g=joe; n=notes; p=MIGfMA0GCSqGSIb3DQEB...

Tags: g= granularity (the local part the key may sign for), k= key type (rsa,
the default and only one), n= notes, p= the key (empty: revoked), t=y testing.
Unknown tags are ignored, so a DKIM record (`v=DKIM1; k=rsa; p=...`), which
shares the format, serves DomainKeys too.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import rsa

from quailmail.auth.domainkeys.status import DkProblem, DkStatus, shown
from quailmail.auth.keys import KeyProblem, parse_public_key
from quailmail.auth.results import Result
from quailmail.auth.tagvalue import TagValueError, parse_tag_list, strip_fws


@dataclass(frozen=True, slots=True)
class DkKey:
    key: rsa.RSAPublicKey
    testing: bool = False  # t=y
    granularity: str = ""  # g=, "" when absent or empty (any local part)

    @property
    def bits(self) -> int:
        return self.key.key_size


def parse_key_record(text: str, *, min_key_bits: int = 0) -> DkKey:
    """The usable key in a selector record's TXT data, or DkProblem saying why not.

    The order of the checks is libdomainkeys' dk_end(): tag list (BADKEY),
    p= absent (NOKEY, TC27), p= empty (REVOKED, TC27), key data (BADKEY).
    """
    try:
        tags = parse_tag_list(text)
    except TagValueError as exc:
        raise DkProblem(DkStatus.BADKEY, f"key record: {shown(str(exc), 120)}") from None
    k = strip_fws(tags.get("k", "rsa")).lower()
    if k != "rsa":
        raise DkProblem(DkStatus.BADKEY, f"key record: unknown key type k={shown(k)}")
    testing = _testing(tags)
    if "p" not in tags:
        raise DkProblem(DkStatus.NOKEY, "key record has no p= tag")
    p = strip_fws(tags["p"])
    if not p:
        raise DkProblem(DkStatus.REVOKED, "key revoked (empty p=)")
    try:
        public = parse_public_key("rsa", p)
    except KeyProblem as exc:
        raise DkProblem(DkStatus.BADKEY, f"key record: {shown(str(exc), 120)}") from None
    if not isinstance(public, rsa.RSAPublicKey):  # parse_public_key("rsa", …) promises RSA
        raise DkProblem(DkStatus.BADKEY, "key record: p= is not an RSA key")
    if public.key_size < min_key_bits:
        # Our local policy, not the sender's fault in RFC 4870 terms: RFC 8601
        # §2.7.1 "policy" (the signature was not acceptable to the ADMD).
        raise DkProblem(
            DkStatus.BADKEY,
            f"{public.key_size}-bit key is below the {min_key_bits}-bit minimum (policy)",
            Result.POLICY,
        )
    return DkKey(key=public, testing=testing, granularity=strip_fws(tags.get("g", "")))


def says_testing(text: str) -> bool:
    """Whether a record has t=y, judged alone so that a verdict on a testing
    key can say so whatever else is wrong with the record (libdomainkeys,
    too, sets its testing flag before judging the rest)."""
    try:
        return _testing(parse_tag_list(text))
    except TagValueError:
        return False


def _testing(tags: dict[str, str]) -> bool:
    # t= is a colon-separated flag list in DKIM (RFC 6376 §3.6.1); DomainKeys
    # records only ever hold "y", which reads the same either way.
    return "y" in [flag.strip().lower() for flag in tags.get("t", "").split(":")]


def granularity_matches(granularity: str, local_part: str) -> bool:
    """RFC 4870 §3.2.3: a non-empty g= "MUST exactly match the local part of
    the sending address".

    A `*` is taken as DKIM's wildcard (RFC 4871 §3.6.1), as Mail::DKIM does,
    because the same record commonly serves both and `g=*` is DKIM's default.
    libdomainkeys compares case-insensitively and only up to the local part's
    length, a laxness we do not copy.
    """
    if not granularity:
        return True
    if "*" not in granularity:
        return granularity == local_part
    head, _, tail = granularity.partition("*")
    return (
        len(local_part) >= len(head) + len(tail)
        and local_part.startswith(head)
        and local_part.endswith(tail)
    )
