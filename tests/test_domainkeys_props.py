"""DomainKeys property tests: sign → verify round trips; nothing makes verify raise."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quailmail.auth import authres
from quailmail.auth.domainkeys import DkStatus, verify_domainkeys
from quailmail.auth.domainkeys.canonicalize import BodyCanonicalizer
from quailmail.auth.domainkeys.keyrecord import parse_key_record
from quailmail.auth.domainkeys.signature import parse_signature
from quailmail.auth.domainkeys.status import DkProblem
from quailmail.auth.message import crlf_chunks, parse_message
from quailmail.dns.resolver import DnsResolver

from dkcases import BASE, GOOD_KEY, KEY, resolver, sign

_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Words and whitespace runs (spaces, tabs, both), which nofws deletes and simple keeps.
_space = st.sampled_from([" ", "   ", "\t", " \t "])
_text = st.lists(
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=8) | _space,
    max_size=8,
).map("".join)
_body_line = st.lists(
    st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1, max_size=10) | _space,
    max_size=8,
).map("".join)
_header_names = st.sampled_from(
    ["To", "Subject", "Date", "Message-ID", "Cc", "X-Mailer", "Received", "Reply-To", "X-A"]
)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    headers = [draw(st.sampled_from(["From", "from", "FROM"])) + ": J <jlong@messiah.edu>"]
    if draw(st.booleans()):
        headers.append("Sender: list@messiah.edu")
    for name in draw(st.lists(_header_names, max_size=8)):
        value = draw(_text)
        if draw(st.booleans()):
            value += draw(st.sampled_from(["\r\n\t", "\r\n ", "\r\n   "])) + draw(_text) + "x"
        headers.append(f"{name}:{draw(st.sampled_from(['', ' ', '  ']))}{value}")
    order = draw(st.permutations(headers))
    lines = draw(st.lists(_body_line, max_size=10))
    trailing = "\r\n" * draw(st.integers(0, 4))
    text = "\r\n".join(order) + "\r\n\r\n" + "\r\n".join(lines) + trailing
    data = text.encode("utf-8")
    if draw(st.booleans()):
        data = data.replace(b"\r\n", b"\n")
    return data


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory) -> DnsResolver:
    return resolver(tmp_path_factory.mktemp("dk"), GOOD_KEY, "_domainkey.messiah.edu  o=-")


def verify(data: bytes, dns: DnsResolver) -> DkStatus:
    result = asyncio.run(verify_domainkeys(parse_message(data), dns))
    # Whatever the input, the verdict can be printed and put in a header.
    authres.method("domainkeys", result).encode("ascii")
    if result.sender is not None:
        result.sender.encode("utf-8")
    return result.status


@_SETTINGS
@given(
    message=messages(),
    canon=st.sampled_from(["simple", "nofws"]),
    listed=st.none() | st.lists(_header_names.map(str.lower), max_size=4),
)
def test_sign_then_verify_passes(
    dns: DnsResolver, message: bytes, canon: str, listed: list[str] | None
) -> None:
    signed = sign(message, canon=canon, headers=listed)
    assert verify(signed, dns) is DkStatus.OK
    # A line of text added at the end of the body breaks it, in both canons.
    newline = b"\n" if signed.endswith(b"\n") and not signed.endswith(b"\r\n") else b"\r\n"
    if not signed.endswith(b"\n"):
        signed += newline
    assert verify(signed + b"P.S." + newline, dns) is DkStatus.BADSIG


@_SETTINGS
@given(message=messages(), canon=st.sampled_from(["simple", "nofws"]))
def test_line_endings_do_not_matter(message: bytes, canon: str) -> None:
    crlf = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    lf = crlf.replace(b"\r\n", b"\n")
    ours_crlf = sign(crlf, canon=canon)[: -len(crlf)]
    ours_lf = sign(lf, canon=canon)[: -len(lf)]
    assert ours_lf == ours_crlf[:-2] + b"\n"


@_SETTINGS
@given(
    body=st.binary(max_size=300),
    size=st.integers(1, 40),
    canon=st.sampled_from(["simple", "nofws"]),
)
def test_body_canonicalization_does_not_depend_on_chunking(
    body: bytes, size: int, canon: str
) -> None:
    def run(chunks: list[bytes]) -> bytes:
        canon_body = BodyCanonicalizer(canon)  # type: ignore[arg-type]
        out = b"".join(canon_body.feed(chunk) for chunk in crlf_chunks(chunks))
        return out + canon_body.finish()

    whole = run([body])
    assert run([body[i : i + size] for i in range(0, len(body), size)]) == whole
    assert whole == b"" or whole.endswith(b"\r\n")
    assert not whole.endswith(b"\r\n\r\n")


_header_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=120)


@_SETTINGS
@given(data=st.binary(max_size=600))
def test_verify_never_raises_on_bytes(dns: DnsResolver, data: bytes) -> None:
    assert verify(data, dns) is not DkStatus.INTERNAL


@_SETTINGS
@given(
    value=_header_text | st.binary(max_size=120).map(lambda b: b.decode("latin-1")),
    tail=st.binary(max_size=200),
    sender=st.sampled_from([b"", b"From: a@messiah.edu\r\n", b"From: x\r\nFrom: y\r\n"]),
)
def test_verify_never_raises_on_signature_fields(
    dns: DnsResolver, value: str, tail: bytes, sender: bytes
) -> None:
    field = b"DomainKey-Signature: " + value.encode("utf-8", "surrogateescape")
    data = field + b"\r\n" + sender + tail
    assert verify(data, dns) is not DkStatus.INTERNAL
    # Near misses of a real signature: one tag's value replaced.
    signed = sign(BASE, canon="nofws", headers=["subject"])
    for tag in (b"a=", b"c=", b"d=", b"h=", b"q=", b"s=", b"b="):
        start = signed.index(b" " + tag) + 1 + len(tag)
        end = signed.index(b";", start) if tag != b"b=" else signed.index(b"\r\n", start)
        mutated = signed[:start] + value.encode("utf-8", "surrogateescape") + signed[end:]
        assert verify(mutated, dns) is not DkStatus.INTERNAL


@_SETTINGS
@given(record=_header_text, value=_header_text)
def test_parsers_raise_only_dkproblem(record: str, value: str) -> None:
    for parse in (parse_key_record, parse_signature):
        with contextlib.suppress(DkProblem):
            parse(record if parse is parse_key_record else value)


def test_key_record_with_our_key_parses() -> None:
    assert parse_key_record(GOOD_KEY.split(None, 1)[1]).bits == KEY.bits
