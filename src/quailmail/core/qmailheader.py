"""qmail-inject's address rewriting, as qmail-header(5) and qmail-inject(8)
describe it: a lone box name gets the default host (`joe` →
`joe@defaulthost`), a host name without dots gets the default domain
(`djb@silverton` → `djb@silverton.berkeley.edu`), a host name ending in `+`
gets the plus domain instead (`eric@mammoth.cs+` →
`eric@mammoth.cs.berkeley.edu`), and source routes are stripped.

The steps are qmail-inject.c's `rwgeneric` (`<>` and `<foo@[]>` are left
alone; then `rwroute`, `rwextradot`, `rwextraat`, `rwnoat`, `rwplus`,
`rwnodot`, in that order); address lists are found as token822.c's
`token822_addrlist` finds them, right to left, including its documented
comma for an illegal space (`djb fred` → `djb, fred`).

Where qmail-inject re-renders the whole field from its tokens, we splice:
only the changed addresses' text changes, so display names, comments,
groups, folding and 8-bit text stay byte for byte, and comments count as
the space they lexically are (qmail keeps a comment inside `<…>` as part of
the address, so `<joe@host (x)>` would not get its `+` rewritten there).
A field qmail-inject would refuse ("unable to parse this line"), or whose
structure we would have to guess at, is not rewritten at all (`None`): the
caller keeps it as written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# token822.c's specials, each a token of its own.
_SPECIALS = frozenset(".,@<>:;")
# What ends an atom (token822.c's `atomok`).
_ATOM_END = frozenset(' \t\r\n(["<>;:@,.')
_WORDS = ("atom", "quote", "literal")


@dataclass(frozen=True, slots=True)
class Token:
    """One RFC 822 token of a field's text: `kind` is `atom`, `quote`,
    `literal`, `comment` or the special character itself; `text` is the
    content without quotes, brackets and backslashes; `start`/`end` its
    place in the text."""

    kind: str
    text: str
    start: int
    end: int


def _enclosed(text: str, i: int, close: str, nests: bool) -> tuple[str, int] | None:
    """The content of a quoted string, comment or literal opened at `i`,
    and the index after it; None when it never closes."""
    out: list[str] = []
    level = 1
    opener = text[i]
    i += 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text):
                return None
            out.append(text[i + 1])
            i += 2
            continue
        if ch == close:
            level -= 1
            if level == 0:
                return "".join(out), i + 1
        elif nests and ch == opener:
            level += 1
        out.append(ch)
        i += 1
    return None


def tokenize(text: str) -> list[Token] | None:
    """token822.c's `token822_parse`: None where it fails (a `)` or `]`
    starting a token, an unclosed quote, comment or literal; also a final
    backslash, which it drops).  An atom
    holding control, 8-bit, `)`, `]` or `\\` characters counts as a quoted
    string (its `atomcheck`)."""
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
        elif ch in _SPECIALS:
            tokens.append(Token(ch, ch, i, i + 1))
            i += 1
        elif ch in ")]":
            return None
        elif ch in '("[':
            close, kind = {"(": (")", "comment"), '"': ('"', "quote"), "[": ("]", "literal")}[ch]
            found = _enclosed(text, i, close, nests=ch == "(")
            if found is None:
                return None
            content, after = found
            tokens.append(Token(kind, content, i, after))
            i = after
        else:
            start = i
            out: list[str] = []
            while i < len(text) and (i == start or text[i] not in _ATOM_END):
                if text[i] == "\\":
                    if i + 1 >= len(text):
                        return None  # a backslash escaping nothing
                    i += 1
                out.append(text[i])
                i += 1
            atom = "".join(out)
            plain = all(32 <= ord(c) <= 126 and c not in ")]\\" for c in atom)
            tokens.append(Token("atom" if plain else "quote", atom, start, i))
    return tokens


def _unquoted(token: Token) -> str:
    """A token as token822.c's `token822_unquote` writes it (the envelope form)."""
    if token.kind == "literal":
        return f"[{token.text}]"
    return token.text


@dataclass(frozen=True, slots=True)
class _Plan:
    """What `rwgeneric` does to an address of n tokens: drop `front` tokens
    at the start and `back` at the end, take the `+` off the last kept
    token (`plus`), and write `append` after it."""

    front: int = 0
    back: int = 0
    plus: bool = False
    append: str = ""


_SAME = _Plan()


def _host_tokens(text: str) -> list[Token] | None:
    """A host name's tokens when it is only atoms, dots and literals
    (no spaces, comments or other specials); None otherwise."""
    tokens = tokenize(text)
    if tokens is None or any(c in text for c in " \t\r\n"):
        return None
    if any(t.kind not in ("atom", ".", "literal") for t in tokens):
        return None
    return tokens


@dataclass(frozen=True, slots=True)
class Field:
    """A rewritten address-list field: its new text and its addresses (the
    envelope form, left to right; `<>` gives none)."""

    value: str
    addresses: list[str]


@dataclass(frozen=True, slots=True)
class Rewriting:
    """qmail-inject's three names (control/defaulthost, defaultdomain,
    plusdomain, or the QMAIL* variables): see `valid_host_value`."""

    defaulthost: str
    defaultdomain: str
    plusdomain: str

    def _plan(self, toks: Sequence[Token]) -> _Plan:
        """qmail-inject.c's `rwgeneric` on an address's tokens (no comments)."""
        n = len(toks)
        if n == 0:
            return _SAME  # <>
        if n >= 2 and toks[-1].kind == "literal" and not toks[-1].text and toks[-2].kind == "@":
            return _SAME  # <foo@[]>
        everything = _Plan(front=n)
        front = 0
        if toks[0].kind == "@":  # rwroute: <@a,@b:joe@host> -> <joe@host>
            colon = next((i for i, t in enumerate(toks) if t.kind == ":"), None)
            if colon is None or colon + 1 == n:
                return everything  # <@foo:> -> <>
            front = colon + 1
        back = 0
        for kind in (".", "@"):  # rwextradot, then rwextraat
            if toks[n - 1 - back].kind == kind:
                back += 1
                if front >= n - back:
                    return everything  # <.> and <@> -> <>
        tail = [(t.kind, t.text) for t in toks[front : n - back]]
        append = ""
        if all(kind != "@" for kind, _ in tail):  # rwnoat
            append = "@" + self.defaulthost
            tail += [(t.kind, t.text) for t in tokenize(append) or ()]
        plus = False
        kind, text = tail[-1]
        if kind == "atom" and text.endswith("+"):  # rwplus
            suffix = "." + self.plusdomain
            if append:
                append = append[:-1] + suffix
            else:
                plus, append = True, suffix
            tail[-1] = (kind, text[:-1])
            tail += [(t.kind, t.text) for t in tokenize(suffix) or ()]
        for kind, _ in reversed(tail):  # rwnodot
            if kind in (".", "literal"):
                break
            if kind == "@":
                append += "." + self.defaultdomain
                break
        return _Plan(front, back, plus, append)

    def envelope(self, address: str) -> str:
        """An envelope address (an argument, `-f`, the made-up sender)
        rewritten as qmail-inject's `dorecip` and `-f` do: `quote2` makes
        everything before the last `@` one box name, the host is parsed.
        `""` (the null sender) stays; a host that is not atoms, dots and
        literals is left as given (qmail-inject would join `a b` into `ab`)."""
        if not address:
            return address
        box, at, host = address.rpartition("@")
        if not at:
            box, host = address, ""
        toks = [Token("quote", box, 0, 0)]
        if at:
            host_tokens = _host_tokens(host)
            if host_tokens is None:
                return address  # a space, comment or special: not ours to guess at
            toks += [Token("@", "@", 0, 0), *host_tokens]
        return _rendered(toks, self._plan(toks))

    def field(self, value: str) -> Field | None:
        """An address-list field's value (after the colon) with every address
        rewritten, or None when it does not parse (then keep it as written)."""
        tokens = tokenize(value)
        if tokens is None:
            return None
        words = [t for t in tokens if t.kind != "comment"]
        found = _addrlist(words)
        if found is None:
            return None
        spans, commas = found
        edits: list[tuple[int, int, int, str]] = [(pos, pos, 1, ",") for pos in commas]
        addresses = []
        for lo, hi in spans:
            toks = words[lo:hi]
            if not _plain_address(toks):
                return None
            plan = self._plan(toks)
            edit = _edit(value, toks, plan)
            if edit is None:
                return None
            edits.extend(edit)
            rendered = _rendered(toks, plan)
            if rendered:
                addresses.append(rendered)
        out = []
        at = 0
        for start, end, _, text in sorted(edits):
            out.append(value[at:start])
            out.append(text)
            at = end
        out.append(value[at:])
        return Field("".join(out), addresses)


def _rendered(toks: Sequence[Token], plan: _Plan) -> str:
    """The rewritten address in the envelope form (`token822_unquote`)."""
    kept = [_unquoted(t) for t in toks[plan.front : len(toks) - plan.back]]
    if plan.plus:
        kept[-1] = kept[-1][:-1]
    return "".join(kept) + plan.append


def _edit(value: str, toks: Sequence[Token], plan: _Plan) -> list[tuple[int, int, int, str]] | None:
    """The splices that turn the address's text into the rewritten one
    (start, end, order, replacement); None when the `+` to take off is
    written with a backslash (we would have to re-render the token)."""
    if plan == _SAME:
        return []
    n = len(toks)
    if plan.front >= n:  # the whole address goes: <@foo> -> <>
        return [(toks[0].start, toks[-1].end, 0, "")]
    edits = []
    if plan.front:
        edits.append((toks[0].start, toks[plan.front].start, 0, ""))
    last = toks[n - 1 - plan.back]
    if plan.back:
        edits.append((toks[n - plan.back].start, toks[-1].end, 0, ""))
    if plan.plus:
        if value[last.start : last.end] != last.text:
            return None
        edits.append((last.end - 1, last.end, 0, plan.append))
    elif plan.append:
        edits.append((last.end, last.end, 0, plan.append))
    return edits


def _plain_address(toks: Sequence[Token]) -> bool:
    """An address we can rewrite without guessing: words, dots and `@`,
    and `,` or `:` only in a source route (`@a,@b:joe@host`)."""
    route_end = 0
    if toks and toks[0].kind == "@":
        route_end = next((i + 1 for i, t in enumerate(toks) if t.kind == ":"), 0)
    return all(t.kind in (*_WORDS, ".", "@") for t in toks[route_end:])


def _addrlist(words: Sequence[Token]) -> tuple[list[tuple[int, int]], list[int]] | None:
    """token822.c's `token822_addrlist` over a field's tokens (comments
    left out: they are lexically a space): the addresses as (start, end)
    index ranges, left to right, and where a comma goes for an illegal
    space.  None where it fails (a `;` inside a group, a `:` outside one, a
    `>` without its `<`), and where the field is too odd to rewrite
    without guessing (an unclosed group, a word right after `<…>`'s phrase)."""
    spans: list[tuple[int, int]] = []
    commas: list[int] = []
    pending: list[int] = []  # [lo, hi] of the address being read, right to left
    ingroup = False
    wordok = True

    def flush() -> None:
        if pending:
            spans.append((pending[0], pending[1]))
            pending.clear()

    def comma_here(token: Token) -> None:
        # FLUSHCOMMA: an address waits to the right with nothing between.
        if pending:
            commas.append(token.end)
            flush()

    def take(i: int) -> None:
        if pending:
            pending[0] = i
        else:
            pending.extend((i, i + 1))

    i = len(words) - 1
    while i >= 0:
        t = words[i]
        if t.kind == ";":
            comma_here(t)
            if ingroup:
                return None
            ingroup, wordok = True, True
            i -= 1
        elif t.kind == ":":
            flush()
            if not ingroup:
                return None
            ingroup, wordok = False, True
            i -= 1
            while i >= 0 and words[i].kind != ",":  # the group's name
                i -= 1
            i -= 1
        elif t.kind == ">":
            comma_here(t)
            j = i - 1
            while j >= 0 and words[j].kind != "<":
                j -= 1
            if j < 0:
                return None
            spans.append((j + 1, i))  # even empty: <>
            i = j - 1
            while i >= 0 and words[i].kind in ("atom", "quote", "@", "."):  # the phrase
                i -= 1
            wordok = False
        elif t.kind in _WORDS:
            if not wordok:
                if not pending:
                    return None  # `[x] Name <a@b>`: qmail would run them together
                comma_here(t)
            wordok = False
            take(i)
            i -= 1
        elif t.kind == ",":
            flush()
            wordok = True
            i -= 1
        else:  # . @ and a `<` without `>`, which _plain_address refuses
            wordok = True
            take(i)
            i -= 1
    flush()
    if ingroup:
        return None
    spans.sort()
    return spans, commas


def valid_host_value(value: str) -> bool:
    """A value qmail-inject can append as a host name: atoms, dots and
    literals (`example.com`, `mail+`, `[192.0.2.1]`), no spaces."""
    return bool(value) and _host_tokens(value) is not None
