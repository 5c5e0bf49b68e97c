"""qmail-inject's address rewriting (qmail-header(5), qmail-inject.c's
`rwgeneric` and token822.c's `token822_addrlist`), as pure functions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quailmail.core.qmailheader import Rewriting, tokenize, valid_host_value

RW = Rewriting(defaulthost="dh.test", defaultdomain="dd.test", plusdomain="pd.test")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("joe", "joe@dh.test"),  # rwnoat
        ("ann@mail", "ann@mail.dd.test"),  # rwnodot
        ("ann@mail+", "ann@mail.pd.test"),  # rwplus, not defaultdomain
        ("eric@mammoth.cs+", "eric@mammoth.cs.pd.test"),  # qmail-header(5)'s own example
        ("joe@example.com", "joe@example.com"),  # complete: untouched
        ("joe@[192.0.2.1]", "joe@[192.0.2.1]"),  # literals get no domain
        ("joe@[]", "joe@[]"),  # <foo@[]> is never rewritten
        ("", ""),  # the null sender
        ("joe@", "joe@dh.test"),  # rwextraat
        ("joe@host.", "joe@host.dd.test"),  # rwextradot, then rwnodot
        ("joe+", "joe+@dh.test"),  # a + in the box is not a host's
        ("a b@example.com", "a b@example.com"),  # quote2: the box is one token
        ("joe@a b", "joe@a b"),  # a host we would have to guess at stays
    ],
)
def test_envelope(given: str, expected: str) -> None:
    assert RW.envelope(given) == expected


def test_defaulthost_itself_gets_plusdomain_or_defaultdomain() -> None:
    """qmail-inject(8): defaultdomain is added to defaulthost without dots,
    plusdomain to a defaulthost ending in `+`."""
    assert Rewriting("mail", "dd.test", "pd.test").envelope("joe") == "joe@mail.dd.test"
    assert Rewriting("mail+", "dd.test", "pd.test").envelope("joe") == "joe@mail.pd.test"
    assert Rewriting("[192.0.2.1]", "dd.test", "pd.test").envelope("joe") == "joe@[192.0.2.1]"


@pytest.mark.parametrize(
    ("value", "rewritten", "addresses"),
    [
        (" joe, ann@mail+", " joe@dh.test, ann@mail.pd.test", ["joe@dh.test", "ann@mail.pd.test"]),
        (
            ' "Ann, B." <ann@mail> (boss), bob (Bob B)',
            ' "Ann, B." <ann@mail.dd.test> (boss), bob@dh.test (Bob B)',
            ["ann@mail.dd.test", "bob@dh.test"],
        ),
        (
            " friends: a, b@c.test;, d",
            " friends: a@dh.test, b@c.test;, d@dh.test",
            ["a@dh.test", "b@c.test", "d@dh.test"],
        ),
        (" undisclosed-recipients:;", " undisclosed-recipients:;", []),
        (" djb fred", " djb@dh.test, fred@dh.test", ["djb@dh.test", "fred@dh.test"]),
        (" <@a,@b:joe@h.test>", " <joe@h.test>", ["joe@h.test"]),  # source route stripped
        (" <>", " <>", []),
        (" <@foo>", " <>", []),
        (" joe,\r\n\tann", " joe@dh.test,\r\n\tann@dh.test", ["joe@dh.test", "ann@dh.test"]),
        (" J\xf6rg <j>", " J\xf6rg <j@dh.test>", ["j@dh.test"]),
        (' "q\\"x" <a>', ' "q\\"x" <a@dh.test>', ["a@dh.test"]),
        (" Joe <joe@example.com>", " Joe <joe@example.com>", ["joe@example.com"]),
    ],
)
def test_field(value: str, rewritten: str, addresses: list[str]) -> None:
    field = RW.field(value)
    assert field is not None
    assert (field.value, field.addresses) == (rewritten, addresses)


@pytest.mark.parametrize(
    "value",
    [
        " a;",  # a group never opened
        " foo: bar",  # a group never closed
        " joe, ) x",  # token822_parse refuses a `)` starting a token
        ' "unclosed',
        " (unclosed comment",
        " x <y",  # `<` without `>`
        " a@b>",  # `>` without `<`
        " [x] Joe <a@b>",  # qmail would run the literal into the phrase
        " <a,b@c>",  # a comma inside <> that is no source route
        " g: a; h: b;; c",  # a `;` inside a group
    ],
)
def test_field_that_does_not_parse_is_left(value: str) -> None:
    assert RW.field(value) is None


def test_tokens_keep_their_place() -> None:
    text = ' "A \\"B\\"" <a@b> (c (d))'
    tokens = tokenize(text)
    assert tokens is not None
    assert [(t.kind, t.text) for t in tokens] == [
        ("quote", 'A "B"'),
        ("<", "<"),
        ("atom", "a"),
        ("@", "@"),
        ("atom", "b"),
        (">", ">"),
        ("comment", "c (d)"),
    ]
    assert tokens[0].start == 1 and tokens[-1].end == len(text)


@pytest.mark.parametrize(
    ("value", "ok"),
    [("example.com", True), ("mail+", True), ("[192.0.2.1]", True), ("", False),
     ("a b", False), ("a@b", False), ("x<y", False), ("(c)", False)],
)  # fmt: skip
def test_valid_host_value(value: str, ok: bool) -> None:
    assert valid_host_value(value) is ok


@given(st.text(alphabet=st.sampled_from(list('ab.@<>:;,()"[]\\ +\r\n\t\xe9')), max_size=40))
@settings(max_examples=500, deadline=None)
def test_any_field_is_rewritten_or_left(value: str) -> None:
    """Never an exception, and what we write parses again.  (Not the same
    addresses again: qmail-inject's one pass makes `a@.@` into `a@.`,
    which a second pass would make `a@defaulthost`.)"""
    field = RW.field(value)
    if field is None:
        return
    again = RW.field(field.value)
    assert again is not None
    assert len(again.addresses) == len(field.addresses)
