"""DMARC policy records (RFC 7489 §6.3, ABNF in §6.4).

    _dmarc.example.com  TXT  "v=DMARC1; p=reject; sp=quarantine; pct=50; adkim=s;
                              rua=mailto:agg@example.com!10m; fo=1"

How badly formed records are read, tag by tag (§6.3, §6.6.3):

- `v=DMARC1` must come first, exactly (the ABNF spells `DMARC1` in %x
  octets, so it is case-sensitive); anything else is not a DMARC record.
- `p=` is required.  A missing or invalid `p=`, or an invalid `sp=`, makes the
  record unusable, unless `rua=` holds at least one syntactically valid URI:
  then the record is read as `p=none` so that the owner still gets reports
  (§6.6.3 step 6).
- Any other tag with a bad value is dropped for its default ("Syntax errors
  in the remainder of the record SHOULD be discarded in favor of default
  values", §6.3), and a warning says so.  OpenDMARC refuses such records
  instead; `tests/test_dmarc_vectors.py` lists where that shows.
- Unknown tags are ignored (§6.3: MUST).  Duplicate tags make the whole list
  invalid, as for every DKIM-style tag-list (RFC 6376 §3.2, which §6.3 takes
  the syntax from).

Tag names and the words of values are case-insensitive (ABNF quoted strings,
RFC 5234 §2.3); URIs keep their case.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from quailmail.core.kept import kept_by_text

MAX_RI = 2**32 - 1  # ri is a 32-bit unsigned integer (§6.3)
DEFAULT_RI = 86400
_WSP = " \t\r\n"
_TAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")  # RFC 6376 §3.2 tag-name
# RFC 3986 URI characters less "," and "!" (§6.4: they must be %-encoded in a
# dmarc-uri) and ";" (the tag separator).
_URI = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):"
    r"(?P<rest>(?:[A-Za-z0-9\-._~:/?#\[\]@$&'()*+=]|%[0-9A-Fa-f]{2})+)"
    r"(?:!(?P<size>[0-9]+)(?P<unit>[kKmMgGtT])?)?\Z"
)
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}  # §6.2 size limits
_FO = frozenset("01ds")
_REPORT_FORMATS = frozenset({"afrf"})  # §6.3 rf: the IANA "Failure Report Formats"
_KNOWN_TAGS = frozenset({"v", "p", "sp", "pct", "adkim", "aspf", "rua", "ruf", "fo", "rf", "ri"})


class Policy(enum.StrEnum):
    """What the owner asks a receiver to do with failing mail (§6.3 p=, sp=);
    the same three words name the disposition actually applied (§7.2)."""

    NONE = "none"
    QUARANTINE = "quarantine"
    REJECT = "reject"


class Alignment(enum.StrEnum):
    RELAXED = "r"  # organizational domains are equal (§3.1.1, §3.1.2)
    STRICT = "s"  # the domains are equal


class RecordProblem(enum.Enum):
    """Why a record is unusable; named after OpenDMARC's parse statuses."""

    EMPTY = "empty"
    BAD_VERSION = "bad version"  # not a DMARC1 record at all
    SYNTAX = "syntax"  # the tag-list does not parse (duplicate tag)
    NO_POLICY = "no p="  # p= missing, no valid rua= to fall back on
    BAD_VALUE = "bad p= or sp="  # p= or sp= invalid, no valid rua= to fall back on


class DmarcRecordError(ValueError):
    """The record cannot be used (§6.6.3: no DMARC processing); the text says why."""

    def __init__(self, problem: RecordProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem


@dataclass(frozen=True, slots=True)
class DmarcUri:
    """One rua=/ruf= destination: a URI and an optional size limit in bytes (§6.2)."""

    uri: str
    max_size: int | None = None

    @property
    def scheme(self) -> str:
        return self.uri.partition(":")[0].lower()

    @property
    def mailbox(self) -> str | None:
        """The address of a mailto: URI (the one scheme receivers must support,
        §6.2), %-escapes left as they are; None for other schemes."""
        if self.scheme != "mailto":
            return None
        address = self.uri.partition(":")[2].partition("?")[0]
        return address if "@" in address else None


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    p: Policy
    sp: Policy | None = None  # as published; `subdomain_policy` has the default
    pct: int = 100
    adkim: Alignment = Alignment.RELAXED
    aspf: Alignment = Alignment.RELAXED
    rua: tuple[DmarcUri, ...] = ()
    ruf: tuple[DmarcUri, ...] = ()
    fo: tuple[str, ...] = ("0",)
    rf: tuple[str, ...] = ("afrf",)
    ri: int = DEFAULT_RI
    # What was read differently from the text (a tag dropped for its default,
    # p=none by the rua= rule), for logs and `quail check-dns`.
    warnings: tuple[str, ...] = ()

    @property
    def subdomain_policy(self) -> Policy:
        """sp=, or p= when absent (§6.3 sp: "If absent, the policy specified
        by the "p" tag MUST be applied for subdomains")."""
        return self.sp if self.sp is not None else self.p


_VERSION = re.compile(r"[vV][ \t]*=[ \t]*DMARC1[ \t]*(?:;|\Z)")


def is_dmarc_record(text: str) -> bool:
    """Does the TXT record start with `v=DMARC1`?  Others at `_dmarc` are
    discarded during discovery (§6.6.3 step 4), not counted as errors."""
    return _VERSION.match(text) is not None


KEPT_RECORD_MAX = 8192  # characters: a bigger record is parsed each time, never kept


@kept_by_text(KEPT_RECORD_MAX, maxsize=1024)  # a domain's record repeats from message to message
def parse_record(text: str) -> DmarcRecord:
    """Parse a DMARC record; raise DmarcRecordError when it cannot be used."""
    if not text.strip(_WSP):
        raise DmarcRecordError(RecordProblem.EMPTY, "empty record")
    if not is_dmarc_record(text):
        raise DmarcRecordError(
            RecordProblem.BAD_VERSION, f"record does not start with v=DMARC1: {text[:40]!r}"
        )
    tags = _split(text)
    warnings: list[str] = []
    values: dict[str, str] = {}
    seen = {"v"}
    for name, value in tags[1:]:
        if name.startswith("!"):
            warnings.append(f"ignored {name[1:][:40]!r}: not a tag=value")
            continue
        if name in seen:
            raise DmarcRecordError(RecordProblem.SYNTAX, f"duplicate tag {name!r}")
        seen.add(name)
        if name in _KNOWN_TAGS:
            values[name] = value
        # other tags are unknown: ignored without a word (§6.3 MUST)

    rua = _uris("rua", values.get("rua"), warnings)
    ruf = _uris("ruf", values.get("ruf"), warnings)

    p = _policy(values.get("p"))
    sp = _policy(values["sp"]) if "sp" in values else None
    bad = None
    if "p" not in values:
        bad = (RecordProblem.NO_POLICY, "no p= tag")
    elif p is None:
        bad = (RecordProblem.BAD_VALUE, f"p={values['p'][:40]!r} is not none/quarantine/reject")
    elif "sp" in values and sp is None:
        bad = (RecordProblem.BAD_VALUE, f"sp={values['sp'][:40]!r} is not none/quarantine/reject")
    if bad is not None:
        # §6.6.3 step 6: with at least one valid rua= URI, act as if the
        # record said p=none (and so keep sending reports); else give up.
        if not rua:
            raise DmarcRecordError(bad[0], bad[1])
        warnings.append(f"{bad[1]}; read as p=none since rua= is valid (RFC 7489 §6.6.3)")
        p, sp = Policy.NONE, None

    return DmarcRecord(
        p=p if p is not None else Policy.NONE,  # None only with `bad` set, handled above
        sp=sp,
        pct=_pct(values.get("pct"), warnings),
        adkim=_alignment("adkim", values.get("adkim"), warnings),
        aspf=_alignment("aspf", values.get("aspf"), warnings),
        rua=rua,
        ruf=ruf,
        fo=_fo(values.get("fo"), warnings),
        rf=_rf(values.get("rf"), warnings),
        ri=_ri(values.get("ri"), warnings),
        warnings=tuple(warnings),
    )


def _split(text: str) -> list[tuple[str, str]]:
    """(lowercase name, value) pairs in order.  A part that is no tag-spec
    comes back as ("!part", "") so the caller can warn and go on (§6.3)."""
    pairs: list[tuple[str, str]] = []
    for part in text.split(";"):
        spec = part.strip(_WSP)
        if not spec:
            continue  # empty specs (";;", a trailing ";") are harmless
        name, eq, value = spec.partition("=")
        name = name.strip(_WSP)
        if not eq or not _TAG_NAME.match(name):
            pairs.append(("!" + spec, ""))
            continue
        pairs.append((name.lower(), value.strip(_WSP)))
    return pairs


def _policy(value: str | None) -> Policy | None:
    if value is None:
        return None
    try:
        return Policy(value.lower())
    except ValueError:
        return None


def _uris(tag: str, value: str | None, warnings: list[str]) -> tuple[DmarcUri, ...]:
    # dmarc-uri *(*WSP "," *WSP dmarc-uri) (§6.4); a bad URI is dropped, the
    # others kept.
    if value is None:
        return ()
    uris: list[DmarcUri] = []
    for item in value.split(","):
        match = _URI.match(item.strip(_WSP))
        if match is None:
            warnings.append(f"{tag}: dropped {item.strip(_WSP)[:60]!r}: not a URI")
            continue
        size = match["size"]
        limit = None
        # A limit past 20 digits is no limit at all (and int() refuses
        # thousands of digits).
        if size is not None and len(size) <= 20:
            limit = int(size) * _UNITS[(match["unit"] or "").lower()]
        uris.append(DmarcUri(f"{match['scheme']}:{match['rest']}", limit))
    return tuple(uris)


def _pct(value: str | None, warnings: list[str]) -> int:
    # pct: 1*3DIGIT, 0 to 100 (§6.3, §6.4)
    if value is None:
        return 100
    if value.isascii() and value.isdigit() and len(value) <= 3 and int(value) <= 100:
        return int(value)
    warnings.append(f"pct={value[:40]!r} is not 0-100; pct=100 used")
    return 100


def _alignment(tag: str, value: str | None, warnings: list[str]) -> Alignment:
    if value is None:
        return Alignment.RELAXED
    try:
        return Alignment(value.lower())
    except ValueError:
        warnings.append(f"{tag}={value[:40]!r} is not r or s; r used")
        return Alignment.RELAXED


def _fo(value: str | None, warnings: list[str]) -> tuple[str, ...]:
    # fo: ("0" / "1" / "d" / "s") *(*WSP ":" *WSP (...)) (§6.4)
    if value is None:
        return ("0",)
    options = [option.strip(_WSP).lower() for option in value.split(":")]
    if all(option in _FO for option in options):
        return tuple(dict.fromkeys(options))
    warnings.append(f"fo={value[:40]!r} is not a list of 0, 1, d, s; fo=0 used")
    return ("0",)


def _rf(value: str | None, warnings: list[str]) -> tuple[str, ...]:
    # rf: Keyword *(*WSP ":" Keyword) (§6.4); only registered formats mean
    # anything to a reporter, and afrf is the only one (§6.3, §11.4).
    if value is None:
        return ("afrf",)
    formats = [item.strip(_WSP).lower() for item in value.split(":")]
    known = tuple(dict.fromkeys(f for f in formats if f in _REPORT_FORMATS))
    if known and len(known) == len(set(formats)):
        return known
    if known:
        warnings.append(f"rf={value[:40]!r}: unknown formats dropped")
        return known
    warnings.append(f"rf={value[:40]!r} names no known report format; rf=afrf used")
    return ("afrf",)


def _ri(value: str | None, warnings: list[str]) -> int:
    # ri: 1*DIGIT, a 32-bit unsigned integer (§6.3, §6.4)
    if value is None:
        return DEFAULT_RI
    if value.isascii() and value.isdigit() and len(value) <= 10 and int(value) <= MAX_RI:
        return int(value)
    warnings.append(f"ri={value[:40]!r} is not a 32-bit unsigned integer; ri=86400 used")
    return DEFAULT_RI
