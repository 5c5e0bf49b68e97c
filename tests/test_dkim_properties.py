"""Property tests: round trips over random messages; no input makes a parser raise."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quailmail.auth.dkim import VerifyOptions, sign_dkim, verify_dkim
from quailmail.auth.dkim.canonicalize import BODY_CANON
from quailmail.auth.dkim.keyrecord import KeyRecordError, parse_key_record
from quailmail.auth.dkim.signature import SignatureError, parse_signature
from quailmail.auth.message import crlf_chunks, parse_message
from quailmail.dns.resolver import DnsResolver

from dkimcases import DOMAIN, ED_KEY, ED_RECORD, RSA_KEY, RSA_RECORD, resolver

_RESOLVERS: list[DnsResolver] = []


def _resolver() -> DnsResolver:
    """One resolver (warm cache) over the real loopback server, made on first use."""
    if not _RESOLVERS:
        _RESOLVERS.append(resolver(rsa=RSA_RECORD, ed=ED_RECORD))
    return _RESOLVERS[0]


_text = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126) | st.sampled_from(" \t"),
    max_size=60,
)
_body_line = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF) | st.sampled_from(" \t"),
    max_size=80,
)
_header_names = st.sampled_from(
    ["To", "Subject", "Date", "Message-ID", "Cc", "X-Mailer", "Reply-To", "Received"]
)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    headers = [f"From: someone <a@{DOMAIN}>"]
    for name in draw(st.lists(_header_names, max_size=8)):
        value = draw(_text)
        if draw(st.booleans()):
            value += "\r\n\t" + draw(_text).strip() + "x"  # a folded field
        headers.append(f"{name}: {value}")
    order = draw(st.permutations(headers))
    body_lines = draw(st.lists(_body_line, max_size=12))
    trailing = "\r\n" * draw(st.integers(0, 3))
    text = "\r\n".join(order) + "\r\n\r\n" + "\r\n".join(body_lines) + trailing
    data = text.encode("utf-8")
    if draw(st.booleans()):
        data = data.replace(b"\r\n", b"\n")
    return data


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    message=messages(),
    canon=st.sampled_from(["simple/simple", "simple/relaxed", "relaxed/simple", "relaxed/relaxed"]),
    ed=st.booleans(),
)
def test_sign_then_verify_passes(message: bytes, canon: str, ed: bool) -> None:
    res = _resolver()
    key, selector = (ED_KEY, "ed") if ed else (RSA_KEY, "rsa")
    field = sign_dkim(parse_message(message), key, selector=selector, domain=DOMAIN, canon=canon)
    signed = parse_message(field + message)
    result = asyncio.run(verify_dkim(signed, res))
    assert result.code == "A", (result, field)


def _reference_body(body: bytes, canon: str) -> bytes:
    """RFC 6376 §3.4.3/§3.4.4 written plainly over the whole body."""
    if canon == "relaxed":
        lines = body.split(b"\r\n")
        lines = [re.sub(rb"[ \t]+", b" ", line).rstrip(b" ") for line in lines]
        body = b"\r\n".join(lines)
        body = re.sub(rb"(\r\n)*\Z", b"", body)
        return body + b"\r\n" if body else b""
    body = re.sub(rb"(\r\n)*\Z", b"", body)
    return body + b"\r\n"


class _Collect:
    def __init__(self) -> None:
        self.data = bytearray()

    def update(self, data: bytes) -> None:
        self.data += data


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=300)
    .map(lambda b: b.replace(b"\r", b""))
    .map(lambda b: b.replace(b"\n", b"\r\n")),
    cuts=st.lists(st.integers(0, 300), max_size=6),
    canon=st.sampled_from(["simple", "relaxed"]),
)
def test_streamed_body_matches_whole_body(body: bytes, cuts: list[int], canon: str) -> None:
    out = _Collect()
    canonicalizer = BODY_CANON[canon](out, None)
    bounds = sorted({0, len(body), *(c for c in cuts if c < len(body))})
    chunks = [body[a:b] for a, b in itertools.pairwise(bounds)]
    for chunk in crlf_chunks(chunks):
        canonicalizer.update(chunk)
    canonicalizer.finish()
    assert bytes(out.data) == _reference_body(body, canon)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=400))
def test_signature_parser_never_raises_unexpectedly(raw: bytes) -> None:
    with contextlib.suppress(SignatureError):
        parse_signature(b"DKIM-Signature:" + raw, now=1e9)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=400))
def test_key_record_parser_never_raises_unexpectedly(raw: bytes) -> None:
    with contextlib.suppress(KeyRecordError):
        parse_key_record(raw)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=600))
def test_verifying_arbitrary_bytes_ends_in_a_result(raw: bytes) -> None:
    res = _resolver()
    for data in (raw, b"DKIM-Signature: " + raw, b"DKIM-Signature: v=1; a=rsa-sha256; " + raw):
        result = asyncio.run(verify_dkim(parse_message(data), res, options=VerifyOptions()))
        assert result.code in "ABCDEFGHIJKLMNOPQRS"


_field_text = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126) | st.sampled_from(" \t"),
    max_size=40,
)


@st.composite
def header_fields(draw: st.DrawFn) -> bytes:
    name = draw(st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,12}", fullmatch=True))
    before = draw(st.sampled_from(["", " ", "\t "]))
    parts = [draw(_field_text) for _ in range(draw(st.integers(1, 3)))]
    folds = [draw(st.sampled_from(["\r\n ", "\r\n\t", "\r\n  \t"])) for _ in parts[1:]]
    value = parts[0] + "".join(f + p for f, p in zip(folds, parts[1:], strict=True))
    if draw(st.booleans()):
        value = "\r\n " + value  # folded right after the colon
    return f"{name}{before}:{value}".encode()


@settings(max_examples=300, deadline=None)
@given(fields=st.lists(header_fields(), min_size=1, max_size=6))
def test_batch_header_canonicalization_matches_one_by_one(fields: list[bytes]) -> None:
    from quailmail.auth.dkim.canonicalize import (
        header_relaxed,
        header_simple,
        headers_relaxed,
        headers_simple,
    )

    assert headers_relaxed(fields) == b"".join(header_relaxed(f) for f in fields)
    assert headers_simple(fields) == b"".join(header_simple(f) for f in fields)
