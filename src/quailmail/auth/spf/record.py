"""SPF records: parsing (RFC 7208 §4.6, §5, §6, §12) and selection (§4.5).

`parse_record` is pure and reports a syntax error with its reason, so a
checker (`quail check-dns`) can say what is wrong; the evaluator parses each
record text once and keeps the result by text, since the same few records
come back with every message.  Sender ID's `spf2.0/<scopes>` records
(RFC 4406 §3) share the grammar and are parsed here too.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from quailmail.auth.spf.macro import (
    EXPLAIN_LETTERS,
    MacroError,
    MacroString,
    parse_domain_spec,
    parse_macro_string,
)
from quailmail.auth.spf.result import QUALIFIERS, SpfResult

VERSION = "v=spf1"  # §4.5
# Terms that query DNS (§4.6.4); each counts against MAX_DNS_TERMS.
DNS_MECHANISMS = frozenset({"include", "a", "mx", "ptr", "exists"})
MECHANISMS = DNS_MECHANISMS | {"all", "ip4", "ip6"}
SENDERID_SCOPES = frozenset({"mfrom", "pra"})  # RFC 4406 §3.2 (RFC 4405 for mfrom)

_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9_.-]*)=(.*)", re.DOTALL)  # §4.6.1 name "="
_DIRECTIVE = re.compile(r"([+\-~?]?)([A-Za-z][A-Za-z0-9]*)(.*)", re.DOTALL)
_CIDR_ONLY = re.compile(r"(?:/([0-9]+))?(?://([0-9]+))?")
_SENDERID_VERSION = re.compile(r"spf2\.0/([A-Za-z]+(?:,[A-Za-z]+)*)", re.IGNORECASE)


class SpfSyntaxError(ValueError):
    """A record breaks the grammar (RFC 7208 §4.6: a permerror); str() is
    the reason."""


@dataclass(frozen=True, slots=True)
class Mechanism:
    """A directive: qualifier and mechanism (§4.6.2, §5)."""

    qualifier: SpfResult
    kind: str  # lower case: all, include, a, mx, ptr, ip4, ip6, exists
    text: str  # as written, qualifier included
    domain: MacroString | None = None  # include/a/mx/ptr/exists; None: <domain>
    cidr4: int = 32  # a, mx (§5.3, §5.4); prefix of ip4
    cidr6: int = 128  # a, mx; prefix of ip6
    network: int = 0  # ip4/ip6: the network as an integer, host bits cleared
    mask: int = 0  # ip4/ip6: the prefix as a bit mask


@dataclass(frozen=True, slots=True)
class Modifier:
    """An unknown modifier (§6): kept for checkers, ignored by evaluation."""

    name: str
    value: MacroString


@dataclass(frozen=True, slots=True)
class SpfRecord:
    text: str
    mechanisms: tuple[Mechanism, ...]
    redirect: MacroString | None = None  # §6.1
    exp: MacroString | None = None  # §6.2
    modifiers: tuple[Modifier, ...] = ()
    scopes: frozenset[str] = frozenset()  # Sender ID's spf2.0 scopes; empty for v=spf1

    @property
    def has_all(self) -> bool:
        return any(m.kind == "all" for m in self.mechanisms)

    @property
    def dns_terms(self) -> int:
        """Terms of this record alone that query DNS (§4.6.4), redirect included."""
        count = sum(1 for m in self.mechanisms if m.kind in DNS_MECHANISMS)
        return count + (self.redirect is not None)


def is_spf1(txt: bytes) -> bool:
    """§4.5: "v=spf1" in any case, then a space or the end of the record."""
    return txt[:6].lower() == b"v=spf1" and (len(txt) == 6 or txt[6] == 0x20)


def senderid_scopes(txt: bytes) -> frozenset[str] | None:
    """The scopes of an `spf2.0/…` record (RFC 4406 §3.1), or None when
    `txt` is not one.  Unknown scope names are kept (and never asked for)."""
    if txt[:7].lower() != b"spf2.0/":
        return None
    version = txt.split(b" ", 1)[0].decode("ascii", "replace")
    match = _SENDERID_VERSION.fullmatch(version)
    if match is None:
        return frozenset()
    return frozenset(s.lower() for s in match.group(1).split(","))


def parse_record(text: str) -> SpfRecord:
    """Parse a whole record, version first (`v=spf1 …` or `spf2.0/pra …`).

    Raises SpfSyntaxError with the reason: RFC 7208 §4.6 wants syntax
    errors found anywhere in the record, before any mechanism is evaluated.
    """
    try:
        text.encode("ascii")
    except UnicodeEncodeError:
        raise SpfSyntaxError("record is not 7-bit ASCII") from None  # §3.1 / §4.5
    version, _, rest = text.partition(" ")
    scopes: frozenset[str] = frozenset()
    if version.lower() != VERSION:
        match = _SENDERID_VERSION.fullmatch(version)
        if match is None:
            raise SpfSyntaxError(f"not an SPF record: version {version!r}")
        scopes = frozenset(s.lower() for s in match.group(1).split(","))
    mechanisms: list[Mechanism] = []
    modifiers: list[Modifier] = []
    redirect: MacroString | None = None
    exp: MacroString | None = None
    # §4.6.1 / §12: terms are separated by one or more spaces (SP only: a
    # tab or CR inside a term is a syntax error, not a separator).
    for term in rest.split(" "):
        if not term:
            continue
        modifier = _MODIFIER.fullmatch(term)
        if modifier is None:
            mechanisms.append(_mechanism(term))
            continue
        name, value = modifier.group(1).lower(), modifier.group(2)
        try:
            if name in ("redirect", "exp"):
                # §6: at most once each; their value is a domain-spec (§6.1,
                # §6.2), so "exp=" or "redirect=-all" is a syntax error.
                if (redirect if name == "redirect" else exp) is not None:
                    raise SpfSyntaxError(f"{name}= appears more than once")
                spec = parse_domain_spec(value)
                if name == "redirect":
                    redirect = spec
                else:
                    exp = spec
            else:
                # §6: unknown modifiers are ignored, but must be valid
                # macro-strings (§7.1; letters c, r, t are exp text only).
                modifiers.append(Modifier(name, parse_macro_string(value)))
        except MacroError as error:
            raise SpfSyntaxError(f"{term}: {error}") from None
    return SpfRecord(text, tuple(mechanisms), redirect, exp, tuple(modifiers), scopes)


def _mechanism(term: str) -> Mechanism:
    match = _DIRECTIVE.fullmatch(term)
    if match is None:
        raise SpfSyntaxError(f"unknown term {term!r}")
    qualifier_text, name, rest = match.groups()
    kind = name.lower()
    if kind not in MECHANISMS:
        raise SpfSyntaxError(f"unknown mechanism {term!r}")
    if rest and rest[0] not in ":/":
        raise SpfSyntaxError(f"unknown mechanism {term!r}")
    qualifier = QUALIFIERS[qualifier_text or "+"]
    try:
        if kind == "all":
            if rest:
                raise SpfSyntaxError(f"'all' takes no argument: {term!r}")  # §5.1
            return Mechanism(qualifier, kind, term)
        if kind in ("ip4", "ip6"):
            return _ip_mechanism(qualifier, kind, term, rest)
        if kind in ("a", "mx"):
            return _address_mechanism(qualifier, kind, term, rest)
        # include, exists: ":" domain-spec required; ptr: optional (§5.2, §5.5, §5.7)
        if not rest and kind == "ptr":
            return Mechanism(qualifier, kind, term)
        if not rest.startswith(":"):
            raise SpfSyntaxError(f"{kind} needs ':' and a domain: {term!r}")
        return Mechanism(qualifier, kind, term, parse_domain_spec(rest[1:]))
    except MacroError as error:
        raise SpfSyntaxError(f"{term}: {error}") from None


def _cidr(text: str, limit: int, term: str) -> int:
    # §12: ip4-cidr-length = "/" ("0" / %x31-39 0*1DIGIT), value 0-32; ip6 to 128.
    if (len(text) > 1 and text[0] == "0") or int(text) > limit:
        raise SpfSyntaxError(f"bad CIDR length /{text} in {term!r}")
    return int(text)


def _address_mechanism(qualifier: SpfResult, kind: str, term: str, rest: str) -> Mechanism:
    """a / mx: [ ":" domain-spec ] [ dual-cidr-length ] (§5.3, §5.4)."""
    cidr4 = cidr6 = None
    if rest.startswith(":"):
        spec_text = rest[1:]
        if (m := re.search(r"//([0-9]+)\Z", spec_text)) is not None:
            cidr6, spec_text = m.group(1), spec_text[: m.start()]
        if (m := re.search(r"/([0-9]+)\Z", spec_text)) is not None:
            cidr4, spec_text = m.group(1), spec_text[: m.start()]
        domain: MacroString | None = parse_domain_spec(spec_text)
    else:
        only = _CIDR_ONLY.fullmatch(rest)
        if only is None:
            raise SpfSyntaxError(f"bad dual-cidr-length in {term!r}")
        cidr4, cidr6 = only.groups()
        domain = None
    return Mechanism(
        qualifier,
        kind,
        term,
        domain,
        cidr4=32 if cidr4 is None else _cidr(cidr4, 32, term),
        cidr6=128 if cidr6 is None else _cidr(cidr6, 128, term),
    )


def _ip_mechanism(qualifier: SpfResult, kind: str, term: str, rest: str) -> Mechanism:
    """ip4 / ip6: ":" network [ cidr-length ] (§5.6)."""
    if not rest.startswith(":"):
        raise SpfSyntaxError(f"{kind} needs ':' and an address: {term!r}")
    address, slash, prefix_text = rest[1:].partition("/")
    bits = 32 if kind == "ip4" else 128
    prefix = _cidr(prefix_text, bits, term) if slash and prefix_text.isdigit() else bits
    if slash and not prefix_text.isdigit():
        raise SpfSyntaxError(f"bad CIDR length in {term!r}")
    try:
        # ipaddress refuses leading zeros in IPv4 (§5.6 ip4-network: qnum);
        # a zone index ("%eth0") is no part of ip6-network.
        if "%" in address:
            raise ValueError(address)
        if kind == "ip4":
            network = int(ipaddress.IPv4Address(address))
        else:
            network = int(ipaddress.IPv6Address(address))
    except ValueError:
        raise SpfSyntaxError(f"bad {kind} address in {term!r}") from None
    mask = ((1 << bits) - 1) ^ ((1 << (bits - prefix)) - 1)
    return Mechanism(qualifier, kind, term, network=network & mask, mask=mask)


def parse_explanation(text: str) -> MacroString:
    """An explain-string (§6.2): macro-string and spaces, letters c, r, t allowed."""
    return parse_macro_string(text, letters=EXPLAIN_LETTERS, spaces=True)


# -- selection ---------------------------------------------------------------------------


def select_spf1(txts: Sequence[bytes]) -> str | None:
    """The one v=spf1 record among a name's TXT records (§4.5), or None.

    Raises SpfSyntaxError for more than one (§4.5: permerror) and for a
    selected record that is not 7-bit ASCII (§3.1).  Other TXT records are
    none of our business, whatever bytes they hold.
    """
    found = [txt for txt in txts if is_spf1(txt)]
    if not found:
        return None
    if len(found) > 1:
        raise SpfSyntaxError(f"{len(found)} v=spf1 records")
    return _ascii(found[0])


def select_senderid(txts: Sequence[bytes], scope: str) -> str | None:
    """Sender ID's record for `scope` (RFC 4406 §3.4): the one spf2.0 record
    whose scopes include it; when the name publishes no spf2.0 record at
    all, a v=spf1 record stands for "spf2.0/mfrom,pra" (§3.4)."""
    spf2 = [(txt, scopes) for txt in txts if (scopes := senderid_scopes(txt)) is not None]
    if not spf2:
        return select_spf1(txts)
    found = [txt for txt, scopes in spf2 if scope in scopes]
    if not found:
        return None
    if len(found) > 1:
        raise SpfSyntaxError(f"{len(found)} spf2.0 records for scope {scope}")
    return _ascii(found[0])


def _ascii(txt: bytes) -> str:
    try:
        return txt.decode("ascii")
    except UnicodeDecodeError:
        raise SpfSyntaxError("record is not 7-bit ASCII") from None
