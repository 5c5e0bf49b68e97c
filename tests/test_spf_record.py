"""SPF records and macros without DNS: parse_record, macro expansion (the
examples of RFC 7208 §7.4), record selection (§4.5)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quailmail.auth.spf import (
    MacroError,
    SpfResult,
    SpfSyntaxError,
    client_address,
    expand,
    parse_macro_string,
    parse_record,
    split_sender,
)
from quailmail.auth.spf.evaluate import Evaluation
from quailmail.auth.spf.macro import parse_domain_spec
from quailmail.auth.spf.record import parse_explanation, select_senderid, select_spf1
from quailmail.core.clock import FixedClock

SENDER = "strong-bad@email.example.com"


def expanded(text: str, ip: str = "192.0.2.3", *, explain: bool = False) -> str:
    """`text` expanded for RFC 7208 §7.4's sender and client.  No resolver:
    these macros need none (%{p} is tested over DNS in test_spf_check)."""
    spec = parse_explanation(text) if explain else parse_macro_string(text)
    check = Evaluation.start(
        None,  # type: ignore[arg-type]
        client_address(ip),
        SENDER,
        helo="mx.example.org",
        receiver="mx.example.net",
        clock=FixedClock(1_700_000_000.9),
    )
    values = asyncio.run(check.values(spec, "email.example.com"))
    return expand(spec, values)


@pytest.mark.parametrize(
    ("macro", "expansion"),
    [
        ("%{s}", "strong-bad@email.example.com"),
        ("%{o}", "email.example.com"),
        ("%{d}", "email.example.com"),
        ("%{d4}", "email.example.com"),
        ("%{d3}", "email.example.com"),
        ("%{d2}", "example.com"),
        ("%{d1}", "com"),
        ("%{dr}", "com.example.email"),
        ("%{d2r}", "example.email"),
        ("%{l}", "strong-bad"),
        ("%{l-}", "strong.bad"),
        ("%{lr}", "strong-bad"),
        ("%{lr-}", "bad.strong"),
        ("%{l1r-}", "strong"),
        ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
        ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
        ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
        ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
        ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
    ],
)
def test_rfc7208_section_7_4_examples(macro: str, expansion: str) -> None:
    assert expanded(macro) == expansion


def test_rfc7208_section_7_4_ipv6_example() -> None:
    # The RFC prints the nibbles in lower case; the openspf suite (and
    # pyspf) want upper case in explanations ("v-macro-ip6"), which we give.
    # DNS names compare without case, so both expand to the same query.
    out = expanded("%{ir}.%{v}._spf.%{d2}", "2001:db8::cb01")
    assert out.lower() == (
        "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
    )
    assert out.startswith("1.0.B.C.")


def test_explanation_letters_and_escapes() -> None:
    text = "%{c} %{r} %{t} %{h} %% %_ %- %{C}"
    assert expanded(text, explain=True) == (
        "192.0.2.3 mx.example.net 1700000000 mx.example.org %   %20 192.0.2.3"
    )
    assert expanded("%{c}", "2001:DB8::CB01", explain=True) == "2001:db8::cb01"
    # §7.3: upper-case letters are URL-escaped, with upper-case hex digits.
    assert expanded("%{S}") == "strong-bad%40email.example.com"


def test_ipv4_mapped_client_is_ipv4() -> None:
    assert client_address("::ffff:192.0.2.3") == ipaddress.IPv4Address("192.0.2.3")
    assert expanded("%{i} %{v}", "::FFFF:192.0.2.3", explain=True) == "192.0.2.3 in-addr"


@pytest.mark.parametrize(
    "bad",
    ["%", "%a", "%{", "%{x}", "%{d0}", "%{dz}", "%{d2r!}", "%(ir)", "a b", "é"],
)
def test_macro_syntax_errors(bad: str) -> None:
    with pytest.raises(MacroError):
        parse_macro_string(bad)


@pytest.mark.parametrize("letter", ["c", "r", "t"])
def test_exp_only_letters_outside_exp(letter: str) -> None:
    with pytest.raises(MacroError, match="outside exp"):
        parse_macro_string(f"%{{{letter}}}.example.com")
    parse_explanation(f"%{{{letter}}}")


@pytest.mark.parametrize(
    ("spec", "ok"),
    [
        ("example.com", True),
        ("example.com.", True),
        ("%{d}", True),
        ("foo.%{d2}", True),
        ("%{d}.com", True),
        ("foo:bar/baz.example.com", True),
        ("macro%%percent%_%_space%-url-space.example.com", True),
        ("a.xn--zckzah", True),
        ("museum", False),
        ("museum.", False),
        ("abc.123", False),
        ("example.-com", False),
        ("example.com:8080", False),
        ("mail.example.com/24", False),
        ("", False),
    ],
)
def test_domain_spec_must_end_in_a_toplabel_or_macro(spec: str, ok: bool) -> None:
    if ok:
        parse_domain_spec(spec)
    else:
        with pytest.raises(MacroError):
            parse_domain_spec(spec)


def test_parse_record_structure() -> None:
    record = parse_record(
        "v=spf1 ip4:192.0.2.0/24 -ip6:2001:db8::/32 a/24//64 mx:%{d} ~ptr ?exists:%{i}.x.org"
        " include:_spf.example.net redirect=_spf.example.com exp=why.%{d} moo=cow -all"
    )
    kinds = [(m.qualifier, m.kind) for m in record.mechanisms]
    assert kinds == [
        (SpfResult.PASS, "ip4"),
        (SpfResult.FAIL, "ip6"),
        (SpfResult.PASS, "a"),
        (SpfResult.PASS, "mx"),
        (SpfResult.SOFTFAIL, "ptr"),
        (SpfResult.NEUTRAL, "exists"),
        (SpfResult.PASS, "include"),
        (SpfResult.FAIL, "all"),
    ]
    a = record.mechanisms[2]
    assert (a.cidr4, a.cidr6, a.domain) == (24, 64, None)
    assert record.mechanisms[0].network == int(ipaddress.IPv4Address("192.0.2.0"))
    assert record.redirect is not None and record.redirect.text == "_spf.example.com"
    assert record.exp is not None and record.exp.letters == {"d"}
    assert [m.name for m in record.modifiers] == ["moo"]
    assert record.has_all
    assert record.dns_terms == 6  # a, mx, ptr, exists, include, redirect (§4.6.4)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("v=spf1 moo", "unknown mechanism"),
        ("v=spf1 -all.", "unknown mechanism"),
        ("v=spf1 -all:foo", "takes no argument"),
        ("v=spf1 ip4:1.2.3.4/33", "CIDR"),
        ("v=spf1 ip4:1.2.3.4/032", "CIDR"),
        ("v=spf1 ip4:1.2.3", "bad ip4 address"),
        ("v=spf1 ip4:01.2.3.4", "bad ip4 address"),
        ("v=spf1 ip6:fe80::1%eth0", "bad ip6 address"),
        ("v=spf1 ip6::CAFE::BABE", "bad ip6 address"),
        ("v=spf1 a//129", "CIDR"),
        ("v=spf1 a/24/64", "dual-cidr"),
        ("v=spf1 a:museum", "top label"),
        ("v=spf1 include", "needs ':'"),
        ("v=spf1 exists", "needs ':'"),
        ("v=spf1 ptr/0", "needs ':'"),
        ("v=spf1 redirect:example.com", "unknown mechanism"),
        ("v=spf1 exp=", "empty domain-spec"),
        ("v=spf1 redirect=a.example.com redirect=b.example.com", "more than once"),
        ("v=spf1 exp=a.example.com exp=b.example.com", "more than once"),
        ("v=spf1 1up=foo", "unknown term"),
        ("v=spf1 =all", "unknown term"),
        ("v=spf1 foo=%abc", "'%' must be followed"),
        ("v=spf1 a:ctrl.example.com\rptr", "not allowed"),
        ("v=spf1 \x96all", "7-bit ASCII"),
        ("v=spf10", "not an SPF record"),
        ("spf2.0 -all", "not an SPF record"),
    ],
)
def test_parse_errors_say_why(text: str, why: str) -> None:
    with pytest.raises(SpfSyntaxError, match=why):
        parse_record(text)


def test_spaces_and_case() -> None:
    record = parse_record("V=SpF1  IP4:192.0.2.1   -ALL ")
    assert [m.kind for m in record.mechanisms] == ["ip4", "all"]
    assert parse_record("v=spf1").mechanisms == ()


def test_senderid_records_share_the_grammar() -> None:
    record = parse_record("spf2.0/mfrom,pra ip4:192.0.2.0/24 -all")
    assert record.scopes == {"mfrom", "pra"}


def test_select_spf1() -> None:
    assert select_spf1([b"google-site-verification=x", b"v=spf1 -all"]) == "v=spf1 -all"
    assert select_spf1([b"v=spf10", b"v=spf1x"]) is None
    assert select_spf1([b"\x96 not ours", b"v=spf1"]) == "v=spf1"
    with pytest.raises(SpfSyntaxError, match="2 v=spf1 records"):
        select_spf1([b"v=spf1 -all", b"V=SPF1 +all"])
    with pytest.raises(SpfSyntaxError, match="ASCII"):
        select_spf1([b"v=spf1 a:\xef\xbb\xbfgarbage.example.net"])


def test_select_senderid_scopes() -> None:
    both = [b"v=spf1 -all", b"spf2.0/pra +all"]
    assert select_senderid(both, "pra") == "spf2.0/pra +all"
    assert select_senderid([b"v=spf1 -all"], "pra") == "v=spf1 -all"  # RFC 4406 §3.4
    assert select_senderid([b"spf2.0/mfrom -all", b"v=spf1 +all"], "pra") is None
    assert select_senderid([b"spf2.0/mfrom,pra ?all"], "pra") == "spf2.0/mfrom,pra ?all"
    with pytest.raises(SpfSyntaxError, match=r"2 spf2\.0 records"):
        select_senderid([b"spf2.0/pra -all", b"spf2.0/pra,mfrom +all"], "pra")


def test_split_sender() -> None:
    assert split_sender("strong-bad@email.example.com.") == ("strong-bad", "email.example.com")
    assert split_sender("@example.net") == ("postmaster", "example.net")  # §4.3
    assert split_sender("example.net") == ("postmaster", "example.net")
    assert split_sender('"a@b"@example.net') == ('"a@b"', "example.net")


@given(st.text(max_size=60))
def test_parse_record_never_crashes(text: str) -> None:
    with contextlib.suppress(SpfSyntaxError):
        parse_record("v=spf1 " + text)


@given(st.text(alphabet=st.sampled_from("%{}-_.rR0123456789slodiphvcrtSLOD+=,/ab"), max_size=30))
def test_macro_parser_never_crashes(text: str) -> None:
    try:
        spec = parse_explanation(text)
    except MacroError:
        return
    assert spec.text == text
