"""The DomainKey-Signature header field (RFC 4870 §3.3): parsing and writing.

    DomainKey-Signature: a=rsa-sha1; c=simple; d=example.com; h=from:subject;
        q=dns; s=sel; b=base64...

Values are read with all whitespace removed, as libdomainkeys' dkparselist()
does: none of the defined tags can hold whitespace, and b= is folded freely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from quailmail.auth.domainkeys.names import is_dns_name, is_selector
from quailmail.auth.domainkeys.status import DkProblem, DkStatus, shown
from quailmail.auth.results import Result
from quailmail.auth.tagvalue import TagValueError, parse_tag_list, strip_fws

Canon = Literal["simple", "nofws"]
CANONS: tuple[Canon, ...] = ("simple", "nofws")
FIELD_NAME = "DomainKey-Signature"
LNAME = FIELD_NAME.lower()


@dataclass(frozen=True, slots=True)
class DkSignature:
    domain: str  # d=, lower case, no trailing dot
    selector: str  # s=
    b: str  # b=, whitespace removed (base64)
    canon: Canon = "simple"  # c=
    headers: tuple[str, ...] | None = None  # h=, lower-cased names; None: tag absent


def parse_signature(value: str) -> DkSignature:
    """Parse the field's value (unfolded, after the colon).

    Raises DkProblem: a value that is not a tag list, or an a=, c= or q= we
    cannot use, is SYNTAX (libdomainkeys TC22-TC25, TC42); a missing d=, s= or
    b= is NOSIG (libdomainkeys TC21/TC40, the seeds' "missing a required
    field").  Both are "neutral" in RFC 8601 words: a signature is there but
    cannot be processed (§2.7.1).
    """
    try:
        raw = parse_tag_list(value)
    except TagValueError as exc:
        raise DkProblem(
            DkStatus.SYNTAX, f"signature: {shown(str(exc), 120)}", Result.NEUTRAL
        ) from None
    tags = {name: strip_fws(text) for name, text in raw.items()}
    for required in ("d", "s", "b"):
        if required not in tags:
            raise DkProblem(DkStatus.NOSIG, f"signature has no {required}= tag", Result.NEUTRAL)
    # a= and q= have one defined value each, and both may be left out
    # (Mail::DKIM: "it is quite common that q tag is missing - be merciful").
    algorithm = tags.get("a", "rsa-sha1").lower()
    if algorithm != "rsa-sha1":
        raise DkProblem(DkStatus.SYNTAX, f"unknown algorithm a={shown(algorithm)}", Result.NEUTRAL)
    query = tags.get("q", "dns").lower()
    if query != "dns":
        raise DkProblem(DkStatus.SYNTAX, f"unknown query method q={shown(query)}", Result.NEUTRAL)
    canon = tags.get("c", "simple").lower()
    if canon == "simple":
        c: Canon = "simple"
    elif canon == "nofws":
        c = "nofws"
    else:
        raise DkProblem(
            DkStatus.SYNTAX, f"unknown canonicalization c={shown(canon)}", Result.NEUTRAL
        )
    domain = tags["d"].lower().removesuffix(".")
    if not is_dns_name(domain):
        raise DkProblem(DkStatus.SYNTAX, f"d= is not a domain: {shown(domain)}", Result.NEUTRAL)
    selector = tags["s"]
    if not is_selector(selector):
        raise DkProblem(DkStatus.SYNTAX, f"s= is not a selector: {shown(selector)}", Result.NEUTRAL)
    headers = None
    if "h" in tags:
        # Empty entries (h=from::to) name nothing; Mail::DKIM ignores them too.
        headers = tuple(name.lower() for name in tags["h"].split(":") if name)
    return DkSignature(domain=domain, selector=selector, b=tags["b"], canon=c, headers=headers)


def format_signature(
    *, canon: Canon, domain: str, selector: str, headers: list[str] | None, b: str
) -> str:
    """The field as Mail::DKIM writes it: tags in the order a, c, d, h, q, s, b,
    separated by "; ", on one line (the DomainKeys signature does not cover
    its own field, so the layout is free; this one matches the vectors)."""
    h_tag = f"h={':'.join(headers)}; " if headers is not None else ""
    return f"{FIELD_NAME}: a=rsa-sha1; c={canon}; d={domain}; {h_tag}q=dns; s={selector}; b={b}"
