"""DomainKeys (RFC 4870): the Mail::DKIM vectors, every status letter, policy records."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from quailmail.auth import authres
from quailmail.auth.domainkeys import (
    DkPolicy,
    DkStatus,
    DomainKeysSigningError,
    domain_policy,
    parse_policy,
    sign_domainkeys,
)
from quailmail.auth.domainkeys.canonicalize import BodyCanonicalizer
from quailmail.auth.domainkeys.keyrecord import granularity_matches
from quailmail.auth.keys import generate, parse_private_key
from quailmail.auth.message import parse_message
from quailmail.auth.results import Result

from dkcases import (
    BASE,
    DATA,
    GOOD_KEY,
    KEY,
    KEY_FILES,
    VECTORS,
    keytable_resolver,
    resolver,
    sign,
    verify,
    without_signature,
)

# --- the eight vectors ---------------------------------------------------


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_vector_signing_reproduces_mail_dkim(name: str) -> None:
    case = VECTORS[name]
    data = (DATA / name).read_bytes()
    unsigned = without_signature(data)
    folder = name.split("/", maxsplit=1)[0]
    if folder == "mail-dkim-signer-vectors":
        assert unsigned == (DATA / folder / "unsigned.eml").read_bytes()
    key = parse_private_key(KEY_FILES[folder].read_bytes())
    expected = case["signature_header"]
    headers = None
    if case["h"] == "listed":
        headers = expected.split(" h=")[1].split(";")[0].split(":")
    field = sign_domainkeys(
        parse_message(unsigned),
        key,
        selector=case["s"],
        domain=case["d"],
        canon=case["c"],
        headers=headers,
    )
    assert field == expected.encode() + b"\r\n"


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_vector_verifies(name: str) -> None:
    case = VECTORS[name]
    result = verify((DATA / name).read_bytes(), keytable_resolver(DATA / case["keys"]))
    assert (result.status, result.result) == (DkStatus.OK, Result.PASS)
    assert str(result.result) == case["result"]
    assert (result.domain, result.selector) == (case["d"], case["s"])
    assert result.header_b == case["signature_header"].split(" b=")[1]
    assert result.policy is None  # only looked up when the verdict is not OK


def test_domain_defaults_to_the_from_domain() -> None:
    unsigned = (DATA / "mail-dkim-signer-vectors" / "unsigned.eml").read_bytes()
    field = sign_domainkeys(parse_message(unsigned), KEY, selector="test8")
    assert (
        field.decode()
        == VECTORS["mail-dkim-signer-vectors/dk_simple_h0.eml"]["signature_header"] + "\r\n"
    )


def test_lf_message_signs_as_crlf_and_keeps_its_line_ending(tmp_path: Path) -> None:
    lf = BASE.replace(b"\r\n", b"\n")
    for canon in ("simple", "nofws"):
        crlf_field = sign_domainkeys(parse_message(BASE), KEY, selector="test8", canon=canon)
        lf_field = sign_domainkeys(parse_message(lf), KEY, selector="test8", canon=canon)
        assert lf_field == crlf_field[:-2] + b"\n"
        dns = resolver(tmp_path, GOOD_KEY)
        assert verify(lf_field + lf, dns).status is DkStatus.OK
        assert verify(crlf_field + lf, dns).status is DkStatus.OK


# --- every status letter ---------------------------------------------------


def test_a_ok_and_what_the_signature_does_not_cover(tmp_path: Path) -> None:
    dns = resolver(tmp_path, GOOD_KEY)
    signed = sign(headers=["from", "subject"])
    assert verify(signed, dns).status is DkStatus.OK
    # Fields added above the signature, and fields h= does not list, are free.
    assert verify(b"Received: by relay\r\n" + signed, dns).status is DkStatus.OK
    unlisted = signed.replace(b"To: someone", b"To: someone-else")
    assert verify(unlisted, dns).status is DkStatus.OK
    # nofws ignores whitespace and folding, simple does not.
    nofws = sign(canon="nofws")
    refolded = nofws.replace(b"Subject: hi there", b"Subject:hi\r\n  there").replace(
        b"sample message\r\n", b"sample  message \r\n\r\n \r\n"
    )
    assert verify(refolded, dns).status is DkStatus.OK
    simple = sign().replace(b"Subject: hi there", b"Subject:hi there")
    assert verify(simple, dns).status is DkStatus.BADSIG


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ((b"sample message", b"sample massage"), "body"),
        ((b"Subject: hi there", b"Subject: hi where"), "signed header"),
        ((b"sample message\r\n", b"sample message\r\nP.S.\r\n"), "added line"),
    ],
)
def test_b_badsig(tmp_path: Path, change: tuple[bytes, bytes], reason: str) -> None:
    signed = sign(headers=["from", "subject"]).replace(*change)
    result = verify(signed, resolver(tmp_path, GOOD_KEY))
    assert (result.letter, result.result) == ("B", Result.FAIL), reason
    assert result.status.stat_name == "DK_STAT_BADSIG"
    assert result.reason == "signature did not verify"


def test_b_badsig_b_not_base64(tmp_path: Path) -> None:
    signed = sign()
    start = signed.index(b" b=") + 3
    result = verify(signed[:start] + b"!!!" + signed[start + 3 :], resolver(tmp_path, GOOD_KEY))
    assert result.status is DkStatus.BADSIG
    assert "base64" in result.reason


def test_c_nosig_unsigned(tmp_path: Path) -> None:
    result = verify(BASE, resolver(tmp_path, GOOD_KEY))
    assert (result.letter, result.result, result.reason) == ("C", Result.NONE, "no signature")
    assert result.policy is None


def test_c_nosig_without_from(tmp_path: Path) -> None:
    signed = sign().replace(b"From: Jason Long <jlong@messiah.edu>\r\n", b"")
    result = verify(signed, resolver(tmp_path, GOOD_KEY))
    # The seeds file "a signature header without a From: header" under C;
    # RFC 8601 calls a required header field being absent permerror.
    assert (result.letter, result.result) == ("C", Result.PERMERROR)
    assert "no From: or Sender:" in result.reason


def test_c_nosig_signature_missing_a_required_tag(tmp_path: Path) -> None:
    signed = sign().replace(b" s=test8;", b"")
    result = verify(signed, resolver(tmp_path, GOOD_KEY))
    assert (result.letter, result.result) == ("C", Result.NEUTRAL)
    assert result.reason == "signature has no s= tag"


def test_d_nokey(tmp_path: Path) -> None:
    result = verify(sign(), resolver(tmp_path, "other._domainkey.messiah.edu  k=rsa; p=x"))
    assert (result.letter, result.result) == ("D", Result.PERMERROR)
    assert result.reason == "no key record at test8._domainkey.messiah.edu"
    record = verify(sign(), resolver(tmp_path, "test8._domainkey.messiah.edu  k=rsa; t=y"))
    assert record.letter == "D"
    assert record.reason == "key record has no p= tag; key in testing mode (t=y)"


@pytest.mark.parametrize(
    "record",
    [
        "k=rsa; p=Zm9vYmFy",  # base64, but not a key
        "k=rsa; p=not*base64",
        "k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
        "this is no tag list",
        "k=rsa; p=; p=",  # duplicate tag
    ],
)
def test_e_badkey(tmp_path: Path, record: str) -> None:
    result = verify(sign(), resolver(tmp_path, f"test8._domainkey.messiah.edu  {record}"))
    assert (result.letter, result.result) == ("E", Result.PERMERROR), result.reason


def test_short_keys_verify_as_libdomainkeys_verifies_them(tmp_path: Path) -> None:
    # The seeds' toasters sign DomainKeys with 384- and 768-bit keys; their
    # DKVERIFY="DEGIJKfh" must not turn that into E.  RFC 8301's floor is DKIM's.
    short = parse_private_key((DATA.parent / "keys" / "rsa512.pem").read_bytes())
    record = f"test8._domainkey.messiah.edu  k=rsa; p={short.public_record_value()}"
    signed = sign(key=short)
    assert verify(signed, resolver(tmp_path, record)).letter == "A"
    floor = verify(signed, resolver(tmp_path, record), min_key_bits=1024)
    assert (floor.letter, floor.result) == ("E", Result.POLICY)


def test_e_badkey_small_key_is_our_policy(tmp_path: Path) -> None:
    result = verify(sign(), resolver(tmp_path, GOOD_KEY), min_key_bits=2048)
    assert (result.letter, result.result) == ("E", Result.POLICY)
    assert result.reason == "1024-bit key is below the 2048-bit minimum (policy)"


def test_e_badkey_granularity(tmp_path: Path) -> None:
    p = KEY.public_record_value()
    for g, letter in (("jlong", "A"), ("jl*", "A"), ("", "A"), ("jason", "E"), ("JLONG", "E")):
        record = f"test8._domainkey.messiah.edu  g={g}; k=rsa; p={p}"
        assert verify(sign(), resolver(tmp_path, record)).letter == letter, g


def test_f_cantvrfy(tmp_path: Path) -> None:
    dns = resolver(tmp_path, "test8._domainkey.messiah.edu  ~~SERVFAIL~~")
    result = verify(sign(), dns)
    assert (result.letter, result.result) == ("F", Result.TEMPERROR)
    assert result.reason.startswith(
        "key lookup test8._domainkey.messiah.edu failed temporarily: SERVFAIL from 127.0.0.1:"
    )


@pytest.mark.parametrize(
    ("old", "new", "word"),
    [
        (b" c=simple;", b" c=relaxed;", Result.NEUTRAL),
        (b" a=rsa-sha1;", b" a=rsa-sha256;", Result.NEUTRAL),
        (b" q=dns;", b" q=dns/txt;", Result.NEUTRAL),
        (b" q=dns;", b" q=dns; q=dns;", Result.NEUTRAL),  # duplicate tag
        (b" q=dns;", b" q dns;", Result.NEUTRAL),  # not a tag list
        (b"d=messiah.edu", b"d=example.com", Result.NEUTRAL),  # not the sender's domain
        (b"d=messiah.edu", b"d=messiah edu", Result.NEUTRAL),
    ],
)
def test_g_syntax_signature(tmp_path: Path, old: bytes, new: bytes, word: Result) -> None:
    signed = sign()
    assert old in signed
    result = verify(signed.replace(old, new, 1), resolver(tmp_path, GOOD_KEY))
    assert (result.letter, result.result) == ("G", word), result.reason


def test_g_syntax_duplicate_from(tmp_path: Path) -> None:
    doubled = sign().replace(b"Subject:", b"From: mallory@messiah.edu\r\nSubject:")
    result = verify(doubled, resolver(tmp_path, GOOD_KEY))
    assert (result.letter, result.result) == ("G", Result.PERMERROR)
    assert result.reason == "2 From: headers under the signature"
    # With a Sender: the From: fields do not decide who signed.
    sender = b"Sender: list@messiah.edu\r\n" + BASE
    signed = sign(sender).replace(b"Subject:", b"From: other@example.org\r\nSubject:")
    result = verify(signed, resolver(tmp_path, GOOD_KEY))
    assert (result.letter, result.sender, result.sender_field) == (
        "B",
        "list@messiah.edu",
        "sender",
    )


def test_g_syntax_h_must_cover_the_sending_address(tmp_path: Path) -> None:
    signed = sign(headers=["subject"]).replace(b"h=from:subject;", b"h=subject;")
    result = verify(signed, resolver(tmp_path, GOOD_KEY))
    assert (result.letter, result.reason) == ("G", "h= does not cover the from header")


def test_j_revoked(tmp_path: Path) -> None:
    result = verify(sign(), resolver(tmp_path, "test8._domainkey.messiah.edu  k=rsa; p="))
    assert (result.letter, result.result, result.reason) == (
        "J",
        Result.PERMERROR,
        "key revoked (empty p=)",
    )


def test_testing_key_is_reported(tmp_path: Path) -> None:
    record = f"test8._domainkey.messiah.edu  t=y; k=rsa; p={KEY.public_record_value()}"
    dns = resolver(tmp_path, record)
    good = verify(sign(), dns)
    assert (good.letter, good.testing) == ("A", True)
    assert good.reason == "ok; key in testing mode (t=y)"
    bad = verify(sign().replace(b"sample", b"simple"), dns)
    assert (bad.letter, bad.testing) == ("B", True)
    assert "testing" in bad.reason


def test_sender_header_is_the_signing_address(tmp_path: Path) -> None:
    message = b"Sender: bounce@lists.messiah.edu\r\n" + BASE
    signed = sign(message)
    assert b" d=lists.messiah.edu;" in signed
    dns = resolver(tmp_path, GOOD_KEY.replace("messiah.edu", "lists.messiah.edu"))
    result = verify(signed, dns)
    assert (result.letter, result.sender, result.sender_field) == (
        "A",
        "bounce@lists.messiah.edu",
        "sender",
    )
    # A parent domain may sign (RFC 4870 d=), a sibling may not.
    assert verify(sign(message, domain="messiah.edu"), resolver(tmp_path, GOOD_KEY)).letter == "A"
    wrong = sign(message, domain="example.org")
    assert verify(wrong, resolver(tmp_path, GOOD_KEY)).letter == "G"


def test_only_the_first_signature_counts(tmp_path: Path) -> None:
    dns = resolver(tmp_path, GOOD_KEY)
    good = sign()
    broken = good.replace(b" b=", b" b=AAAA", 1)
    assert verify(broken, dns).letter == "B"
    assert verify(sign(good), dns).letter == "A"
    # Below the first signature, another one is just a signed header field.
    assert verify(sign(broken), dns).letter == "A"
    # A broken first signature decides, though a good one follows (Mail::DKIM
    # would report the second one's pass).
    assert verify(sign(good).replace(b" b=", b" b=AAAA", 1), dns).letter == "B"


# --- policy records ---------------------------------------------------------


def test_policy_reported_for_unsigned_message(tmp_path: Path) -> None:
    from dkimcases import shared_server

    dns = resolver(tmp_path, "_domainkey.messiah.edu  t=y; o=-; r=postmaster@messiah.edu")
    asked_before = shared_server().count("_domainkey.messiah.edu")
    result = verify(BASE, dns)
    assert result.letter == "C"
    assert result.policy == DkPolicy(
        domain="messiah.edu", o="-", testing=True, r="postmaster@messiah.edu"
    )
    assert result.policy.signs_all
    assert result.reason == "no signature; domain signs all mail (o=-), testing (t=y)"
    assert shared_server().count("_domainkey.messiah.edu") == asked_before + 1


def test_policy_reported_when_verification_fails(tmp_path: Path) -> None:
    dns = resolver(tmp_path, GOOD_KEY, "_domainkey.messiah.edu  o=-")
    result = verify(sign().replace(b"sample", b"simple"), dns)
    assert result.reason == "signature did not verify; domain signs all mail (o=-)"
    assert result.policy is not None and result.policy.signs_all
    assert verify(sign(), dns).policy is None


def test_domain_policy_lookup(tmp_path: Path) -> None:
    dns = resolver(
        tmp_path,
        "_domainkey.some.example  o=~; n=we sign some",
        "_domainkey.broken.example  ~~Query timed out~~",
        "_domainkey.junk.example  not a policy",
    )
    assert asyncio.run(domain_policy("some.example", dns)) == DkPolicy(
        domain="some.example", o="~", n="we sign some"
    )
    assert asyncio.run(domain_policy("missing.example", dns)) is None
    assert asyncio.run(domain_policy("broken.example", dns)) is None
    assert asyncio.run(domain_policy("junk.example", dns)) is None
    assert asyncio.run(domain_policy("bad name.example", dns)) is None


def test_parse_policy_defaults() -> None:
    assert parse_policy("x.example", "") is None  # not even one tag
    assert parse_policy("x.example", "t=y") == DkPolicy("x.example", o="~", testing=True)
    assert parse_policy("x.example", "o=?") == DkPolicy("x.example", o="~")
    assert not DkPolicy("x.example").signs_all


# --- status table, signing errors, canonicalization -------------------------


def test_status_letters_names_and_words() -> None:
    table = {
        "A": ("DK_STAT_OK", "pass", "good"),
        "B": ("DK_STAT_BADSIG", "fail", "bad"),
        "C": ("DK_STAT_NOSIG", "none", "no signature"),
        "D": ("DK_STAT_NOKEY", "permerror", "no key"),
        "E": ("DK_STAT_BADKEY", "permerror", "bad key"),
        "F": ("DK_STAT_CANTVRFY", "temperror", "no key"),
        "G": ("DK_STAT_SYNTAX", "permerror", "bad format"),
        "H": ("DK_STAT_NORESOURCE", "temperror", "no resources"),
        "I": ("DK_STAT_ARGS", "permerror", "bad format"),
        "J": ("DK_STAT_REVOKED", "permerror", "revoked"),
        "K": ("DK_STAT_INTERNAL", "temperror", "bad format"),
    }
    assert [status.letter for status in DkStatus] == list(table)
    for status in DkStatus:
        assert (status.stat_name, str(status.result), status.status_text) == table[status.letter]
        assert DkStatus.from_letter(status.letter.lower()) is status
    with pytest.raises(ValueError, match="not a DomainKeys status letter"):
        DkStatus.from_letter("L")


def test_signing_refusals() -> None:
    no_from = b"Subject: hi\r\n\r\nbody\r\n"
    with pytest.raises(DomainKeysSigningError, match="no From: or Sender: header"):
        sign_domainkeys(parse_message(no_from), KEY, selector="s")
    with pytest.raises(DomainKeysSigningError, match="only with RSA"):
        sign_domainkeys(parse_message(BASE), generate("ed25519"), selector="s")
    with pytest.raises(DomainKeysSigningError, match="selector"):
        sign_domainkeys(parse_message(BASE), KEY, selector="a;b=c")
    with pytest.raises(DomainKeysSigningError, match="signing domain"):
        sign_domainkeys(parse_message(BASE), KEY, selector="s", domain="ex ample.org")
    two = BASE.replace(b"Subject:", b"From: other@example.org\r\nSubject:")
    with pytest.raises(DomainKeysSigningError, match="2 From: headers"):
        sign_domainkeys(parse_message(two), KEY, selector="s")


def test_h_lists_every_occurrence_in_message_order_with_the_sender_field() -> None:
    message = b"Received: a\r\nX-A: 1\r\nReceived: b\r\n" + BASE
    field = sign_domainkeys(parse_message(message), KEY, selector="s", headers=["Received"])
    assert b" h=received:received:from; " in field
    field = sign_domainkeys(parse_message(message), KEY, selector="s", headers=["x-a", "to"])
    assert b" h=x-a:from:to; " in field


def canon_all(body: bytes, canon: str, sizes: int) -> bytes:
    body_canon = BodyCanonicalizer(canon)
    out = b"".join(body_canon.feed(body[i : i + sizes]) for i in range(0, len(body), sizes))
    return out + body_canon.finish()


@pytest.mark.parametrize(
    ("body", "simple", "nofws"),
    [
        (b"", b"", b""),
        (b"\r\n\r\n", b"", b""),
        (b"a\r\n", b"\r\na\r\n", b"\r\na\r\n"),
        (b"a", b"\r\na\r\n", b"\r\na\r\n"),  # unterminated last line gets its CRLF
        (b"\r\na\r\n\r\n\r\n", b"\r\n\r\na\r\n", b"\r\n\r\na\r\n"),
        (b"a b\t\r\n \r\n", b"\r\na b\t\r\n \r\n", b"\r\nab\r\n"),
        (b"a\r\r\n\r\n", b"\r\na\r\r\n", b"\r\na\r\n"),  # bare CR: kept, deleted
        (b"a\r\n\rb\r\n\r", b"\r\na\r\n\rb\r\n\r\r\n", b"\r\na\r\nb\r\n"),
    ],
)
def test_body_canonicalization(body: bytes, simple: bytes, nofws: bytes) -> None:
    # The separator line counts as the body's first line (dropped with the
    # body's trailing empty lines); every chunking gives the same bytes.
    for size in (1, 2, 3, 1000):
        assert canon_all(body, "simple", size) == simple, size
        assert canon_all(body, "nofws", size) == nofws, size


def test_granularity_matches() -> None:
    assert granularity_matches("", "anyone")
    assert granularity_matches("joe", "joe")
    assert not granularity_matches("joe", "joe2")
    assert granularity_matches("*", "anyone")
    assert granularity_matches("a*z", "abcz")
    assert not granularity_matches("a*z", "az-")
    assert not granularity_matches("ab*ba", "aba")


def test_verify_never_raises_on_hostile_headers(tmp_path: Path) -> None:
    dns = resolver(tmp_path, GOOD_KEY)
    nasty = [
        b"DomainKey-Signature: \xff\xfe=\x00; d=\xc3\xa9.example; s=x; b=\r\nFrom: a@b\r\n\r\n",
        b"DomainKey-Signature: d=messiah.edu; s=test8; b=\r\nFrom: <@>\r\n\r\n",
        b"DomainKey-Signature: d=messiah.edu; s="
        + b"x." * 200
        + b"; b=AA==\r\nFrom: a@messiah.edu\r\n",
        b"DomainKey-Signature:\r\n",
        b"From: \x00\r\n\r\n",
    ]
    for data in nasty:
        result = verify(data, dns)
        assert result.status is not DkStatus.INTERNAL, result.reason


def test_rendered_as_authentication_results(tmp_path: Path) -> None:
    result = verify(sign(), resolver(tmp_path, GOOD_KEY))
    resinfo = authres.method("domainkeys", result)
    assert resinfo == (
        f"domainkeys=pass (ok) header.d=messiah.edu header.s=test8 "
        f"header.b={result.header_b[: authres.HEADER_B_CHARS]}"
    )
    unsigned = verify(BASE, resolver(tmp_path, "_domainkey.messiah.edu  o=-"))
    # (authres turns the reason's own parentheses into spaces.)
    assert authres.method("domainkeys", unsigned).startswith(
        "domainkeys=none (no signature; domain signs all mail"
    )
