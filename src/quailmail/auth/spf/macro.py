"""SPF macros (RFC 7208 §7): parsed once with the record, expanded per check.

A macro-string becomes a tuple of parts, each a literal text or a `Macro`;
one without macros keeps its text in `literal`, so the common record (no
macros at all) expands for free.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

# §7.2 macro letters; "c", "r" and "t" only in explanation text (§7.3).
DOMAIN_LETTERS = frozenset("slodiphv")
EXPLAIN_LETTERS = DOMAIN_LETTERS | frozenset("crt")
DELIMITERS = frozenset(".-+,/_=")  # §7.1 delimiter
MAX_DOMAIN = 253  # §7.3: longer expanded names lose labels on the left

# §7.1 toplabel, at the end of a domain-spec, optionally followed by a dot.
_TOPLABEL_END = re.compile(
    r"\.(?:[0-9A-Za-z]*[A-Za-z][0-9A-Za-z]*|[0-9A-Za-z]+-[0-9A-Za-z-]*[0-9A-Za-z])\.?\Z"
)
_MACRO_BODY = re.compile(r"([A-Za-z])([0-9]*)([rR]?)(.*)", re.DOTALL)


class MacroError(ValueError):
    """A macro-string or domain-spec breaks the grammar of RFC 7208 §7.1."""


@dataclass(frozen=True, slots=True)
class Macro:
    """One `%{…}` (§7.1 macro-expand)."""

    letter: str  # lower case
    digits: int  # keep this many right-hand parts; 0 keeps all (§7.3)
    reverse: bool
    delimiters: str  # "" means "." (§7.3)
    escape: bool  # an upper-case letter: URL-escape the value (§7.3)


class MacroString:
    """A parsed macro-string (or domain-spec, or explain-string)."""

    __slots__ = ("letters", "literal", "parts", "text")

    def __init__(self, text: str, parts: tuple[str | Macro, ...]) -> None:
        self.text = text
        self.parts = parts
        self.letters = frozenset(p.letter for p in parts if isinstance(p, Macro))
        self.literal: str | None = None if self.letters else "".join(parts)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"MacroString({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MacroString) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def parse_macro_string(
    text: str, *, letters: frozenset[str] = DOMAIN_LETTERS, spaces: bool = False
) -> MacroString:
    """Parse a macro-string (§7.1); `spaces=True` for an explain-string.

    Raises MacroError: a "%" not followed by "{", "%", "_" or "-" (§7.1), an
    unknown or misplaced letter (§7.3), a zero digit transformer (§7.3), a
    character outside macro-literal (visible ASCII but "%").
    """
    return _parse(text, letters, spaces)[0]


def _parse(text: str, letters: frozenset[str], spaces: bool) -> tuple[MacroString, int]:
    """The macro-string and where its last macro-expand ends (0: none)."""
    parts: list[str | Macro] = []
    literal: list[str] = []
    last_end = 0
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch != "%":
            if not ("!" <= ch <= "~" or (spaces and ch == " ")):
                raise MacroError(f"character {ch!r} not allowed in {text!r}")
            literal.append(ch)
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < n else ""
        if nxt == "%":
            literal.append("%")
        elif nxt == "_":
            literal.append(" ")
        elif nxt == "-":
            literal.append("%20")
        elif nxt == "{":
            end = text.find("}", i + 2)
            if end < 0:
                raise MacroError(f"unterminated macro in {text!r}")
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(_parse_macro(text[i + 2 : end], letters))
            i = last_end = end + 1
            continue
        else:
            raise MacroError(f"'%' must be followed by '{{', '%', '_' or '-' in {text!r}")
        i = last_end = i + 2
    if literal:
        parts.append("".join(literal))
    return MacroString(text, tuple(parts)), last_end


def _parse_macro(body: str, letters: frozenset[str]) -> Macro:
    match = _MACRO_BODY.fullmatch(body)
    if match is None:
        raise MacroError(f"bad macro %{{{body}}}")
    letter, digits, reverse, delimiters = match.groups()
    lower = letter.lower()
    if lower not in letters:
        where = "" if lower not in EXPLAIN_LETTERS else " outside exp= text"
        raise MacroError(f"macro letter {letter!r} not allowed{where}")
    if digits and int(digits) == 0:
        raise MacroError(f"zero digit transformer in %{{{body}}}")  # §7.3: MUST be nonzero
    if any(d not in DELIMITERS for d in delimiters):
        raise MacroError(f"bad delimiter in %{{{body}}}")
    return Macro(lower, int(digits or 0), bool(reverse), delimiters, letter != lower)


def parse_domain_spec(text: str) -> MacroString:
    """A domain-spec: a macro-string ending in a macro-expand or in "."
    toplabel with an optional dot (§7.1), so "a:museum" or "a:1.2.3.4" is a
    syntax error while "a:%{d}" is not."""
    if not text:
        raise MacroError("empty domain-spec")
    spec, last_end = _parse(text, DOMAIN_LETTERS, False)
    tail = text[last_end:]  # domain-end: after the last macro-expand
    if (tail or not last_end) and not _TOPLABEL_END.search(tail):
        raise MacroError(f"domain-spec {text!r} does not end in a valid top label")
    return spec


def expand(spec: MacroString, values: Mapping[str, str]) -> str:
    """The expansion of `spec` with `values` by macro letter (§7.3)."""
    if spec.literal is not None:
        return spec.literal
    out: list[str] = []
    for part in spec.parts:
        if isinstance(part, str):
            out.append(part)
            continue
        value = values[part.letter]
        if part.digits or part.reverse or part.delimiters:
            pieces = _split(value, part.delimiters)
            if part.reverse:
                pieces.reverse()
            if part.digits and part.digits < len(pieces):
                pieces = pieces[-part.digits :]
            value = ".".join(pieces)  # §7.3: rejoined with "."
        if part.escape:
            # §7.3: upper-case letters are URL-escaped (RFC 3986 unreserved
            # characters kept); quote() writes upper-case hex digits.
            value = quote(value, safe="")
        out.append(value)
    return "".join(out)


def _split(value: str, delimiters: str) -> list[str]:
    if not delimiters or delimiters == ".":
        return value.split(".")
    return re.split("[" + re.escape(delimiters) + "]", value)


def expand_domain(spec: MacroString, values: Mapping[str, str]) -> str:
    """A domain-spec expanded for a DNS query: the trailing dot dropped, and
    labels taken off the left while longer than 253 characters (§7.3)."""
    name = expand(spec, values)
    if name.endswith("."):
        name = name[:-1]
    while len(name) > MAX_DOMAIN and "." in name:
        name = name.split(".", 1)[1]
    return name
