"""Each DKIM status letter from a crafted case (the seeds' table, 001_*)."""

from __future__ import annotations

import base64
import re

import pytest

from quailmail.auth.keys import parse_private_key
from quailmail.auth.results import Result

from dkimcases import (
    ED_KEY,
    ED_RECORD,
    MESSAGE,
    RSA_KEY,
    RSA_RECORD,
    resolver,
    sign,
    verify,
)


def _edit_sig(signed: bytes, pattern: bytes, repl: bytes) -> bytes:
    """Change the signature field's tags (after signing: breaks nothing but the tag)."""
    head, sep, rest = signed.partition(b"\r\nFrom:")
    return re.sub(pattern, repl, head, count=1) + sep + rest


def test_pass_rsa_and_ed25519() -> None:
    for key, record in ((RSA_KEY, RSA_RECORD), (ED_KEY, ED_RECORD)):
        result = verify(sign(key=key), resolver(test=record))
        assert (result.code, result.result, result.reason) == ("A", Result.PASS, "ok")
        assert result.signatures[0].domain == "football.example.com"


def test_no_signature_is_N() -> None:
    result = verify(MESSAGE, resolver())
    assert (result.code, result.result) == ("N", Result.NONE)
    assert result.signatures == ()


def test_bad_syntax_is_C() -> None:
    signed = _edit_sig(sign(), rb"bh=[^;]*;", b"")
    result = verify(signed, resolver(test=RSA_RECORD))
    assert (result.code, result.result) == ("C", Result.PERMERROR)
    assert "bh" in result.reason


def test_unparseable_tag_list_is_C() -> None:
    signed = b"DKIM-Signature: v=1; a=rsa-sha256; ;; d\r\n" + MESSAGE
    assert verify(signed, resolver()).code == "C"


def test_altered_header_is_D() -> None:
    signed = sign().replace(b"Subject: Is dinner ready?", b"Subject: Is dinner ready!")
    result = verify(signed, resolver(test=RSA_RECORD))
    assert (result.code, result.result) == ("D", Result.FAIL)


def test_altered_header_with_testing_key_is_E() -> None:
    signed = sign().replace(b"Subject: Is dinner ready?", b"Subject: Is dinner ready!")
    result = verify(signed, resolver(test=RSA_RECORD + "; t=y"))
    assert result.code == "E"
    assert result.signatures[0].testing


def test_expired_is_F() -> None:
    signed = sign(timestamp=1_000_000, expiration=1_000_100)
    assert verify(signed, resolver(test=RSA_RECORD), at=1_000_050).code == "A"
    result = verify(signed, resolver(test=RSA_RECORD), at=1_000_200)
    assert result.code == "F"


def test_unparseable_key_record_is_G() -> None:
    assert verify(sign(), resolver(test="v=DKIM1; k=rsa; p")).code == "G"
    assert verify(sign(), resolver(test="k=rsa; v=DKIM1; p=abc")).code == "G"  # v= not first


def test_strict_key_and_subdomain_identity_is_H() -> None:
    signed = sign(identity="joe@sub.football.example.com")
    assert verify(signed, resolver(test=RSA_RECORD)).code == "A"
    assert verify(signed, resolver(test=RSA_RECORD + "; t=s")).code == "H"


def test_granularity_mismatch_is_H() -> None:
    signed = sign(identity="joe@football.example.com")
    assert verify(signed, resolver(test=RSA_RECORD + "; g=jo*")).code == "A"
    assert verify(signed, resolver(test=RSA_RECORD + "; g=suzie")).code == "H"


def test_revoked_key_is_I() -> None:
    result = verify(sign(), resolver(test="v=DKIM1; k=rsa; p="))
    assert (result.code, result.result) == ("I", Result.PERMERROR)


def test_domain_too_long_is_J() -> None:
    long_selector = ".".join(["s" * 60] * 4)
    signed = sign(selector=long_selector)
    assert verify(signed, resolver()).code == "J"


def test_dns_failure_is_K_and_missing_key_is_L() -> None:
    result = verify(sign(), resolver(test="~~SERVFAIL~~"))
    assert (result.code, result.result) == ("K", Result.TEMPERROR)
    result = verify(sign(), resolver())
    assert (result.code, result.result) == ("L", Result.PERMERROR)


def test_invalid_public_key_is_M() -> None:
    garbage = base64.b64encode(b"not a key at all").decode()
    assert verify(sign(), resolver(test=f"v=DKIM1; p={garbage}")).code == "M"
    assert verify(sign(), resolver(test="v=DKIM1; p=!!!")).code == "M"


def test_several_failing_signatures_is_O() -> None:
    once = sign()
    twice = sign(once, selector="other")
    broken = twice.replace(b"We lost", b"We won")
    result = verify(broken, resolver(test=RSA_RECORD, other=RSA_RECORD))
    assert (result.code, result.result) == ("O", Result.FAIL)
    assert [s.code for s in result.signatures] == ["P", "P"]


def test_one_passing_signature_of_two_is_A() -> None:
    twice = sign(sign(), selector="other")
    result = verify(twice, resolver(test=RSA_RECORD))
    assert result.code == "A"
    assert sorted(s.code for s in result.signatures) == ["A", "L"]


def test_altered_body_is_P() -> None:
    signed = sign().replace(b"hungry yet?", b"hungry now?")
    result = verify(signed, resolver(test=RSA_RECORD))
    assert (result.code, result.result) == ("P", Result.FAIL)


def test_key_type_mismatch_is_Q() -> None:
    assert verify(sign(), resolver(test=ED_RECORD)).code == "Q"
    assert verify(sign(), resolver(test=RSA_RECORD + "; h=sha1")).code == "Q"


def test_incompatible_version_is_R() -> None:
    signed = _edit_sig(sign(), rb"v=1;", b"v=2;")
    assert verify(signed, resolver(test=RSA_RECORD)).code == "R"


def test_rsa_sha1_is_refused_by_default_and_accepted_when_asked() -> None:
    signed = sign(algorithm="rsa-sha1")
    result = verify(signed, resolver(test=RSA_RECORD))
    assert (result.code, result.result) == ("B", Result.POLICY)
    assert verify(signed, resolver(test=RSA_RECORD), accept_sha1=True).code == "A"


def test_small_keys_are_refused_unless_allowed() -> None:
    from dkimcases import DATA

    small = parse_private_key((DATA / "keys" / "rsa512.pem").read_bytes())
    signed = sign(key=small)
    record = "v=DKIM1; p=" + small.public_record_value()
    result = verify(signed, resolver(test=record))
    assert (result.code, result.result) == ("B", Result.POLICY)
    assert "512-bit" in result.reason
    assert verify(signed, resolver(test=record), min_key_bits=512).code == "A"


def test_body_length_tag_is_honoured() -> None:
    signed = sign(body_length=True)
    assert b"l=" in signed.split(b"\r\nFrom:")[0]
    appended = signed + b"appended by a mailing list\r\n"
    assert verify(appended, resolver(test=RSA_RECORD)).code == "A"
    truncated = signed.replace(b"Joe.\r\n", b"")
    assert verify(truncated, resolver(test=RSA_RECORD)).code == "P"


def test_l_is_never_produced_by_default() -> None:
    assert b" l=" not in sign().split(b"\r\nFrom:")[0]


def test_oversigned_from_breaks_when_a_from_is_added() -> None:
    signed = sign()
    assert b"h=from:to:subject:date:message-id:from;" in signed
    forged = b"From: mallory@evil.example\r\n" + signed
    assert verify(forged, resolver(test=RSA_RECORD)).code == "D"


@pytest.mark.parametrize(
    "canon",
    ["simple/simple", "simple/relaxed", "relaxed/simple", "relaxed/relaxed", "relaxed", "simple"],
)
def test_every_canonicalization_round_trips(canon: str) -> None:
    assert verify(sign(canon=canon), resolver(test=RSA_RECORD)).code == "A"


def test_relaxed_survives_whitespace_and_case_changes() -> None:
    signed = sign(canon="relaxed/relaxed")
    munged = (
        signed.replace(b"Subject: Is dinner", b"subject:   Is  dinner")
        .replace(b"hungry yet?\r\n", b"hungry   yet?  \r\n")
        .replace(b"Joe.\r\n", b"Joe.\t\r\n\r\n \r\n")
    )
    assert verify(munged, resolver(test=RSA_RECORD)).code == "A"
    simple = sign(canon="simple/simple").replace(b"Subject: Is dinner", b"subject: Is dinner")
    assert verify(simple, resolver(test=RSA_RECORD)).code == "D"


def test_lf_line_endings_are_treated_as_crlf() -> None:
    signed = sign()
    as_lf = signed.replace(b"\r\n", b"\n")
    assert verify(as_lf, resolver(test=RSA_RECORD)).code == "A"
    signed_lf = sign(MESSAGE.replace(b"\r\n", b"\n"))
    assert b"\r" not in signed_lf  # the added field follows the message's line ending
    assert verify(signed_lf.replace(b"\n", b"\r\n"), resolver(test=RSA_RECORD)).code == "A"


def test_key_record_split_into_strings_and_fetched_over_tcp() -> None:
    """A 4096-bit key's record is split into 255-byte strings and does not fit
    in 512 bytes; the resolver joins the strings (and retries over TCP when cut)."""
    from quailmail.auth.keys import generate
    from quailmail.dns.resolver import DnsResolver

    from dkimcases import DOMAIN, shared_server

    big = generate("rsa", 4096)
    record = "v=DKIM1; k=rsa; p=" + big.public_record_value()
    res = resolver()
    shared_server().zone.add_txt(f"big._domainkey.{DOMAIN}", record)
    assert verify(sign(key=big, selector="big"), res).code == "A"
    no_edns = DnsResolver(shared_server().addresses, timeout=2.0, edns_payload=None)
    assert verify(sign(key=big, selector="big"), no_edns).code == "A"
    assert shared_server().count(f"big._domainkey.{DOMAIN}") >= 2


def test_an_added_unsigned_from_is_S() -> None:
    """libdkim's DKIM_UNSIGNED_FROM (-18): a From the signature does not cover."""
    signed = sign(headers=("from", "to", "subject"))
    assert verify(signed, resolver(test=RSA_RECORD)).code == "A"
    forged = b"From: mallory@evil.example\r\n" + signed
    result = verify(forged, resolver(test=RSA_RECORD))
    assert (result.code, result.result) == ("S", Result.FAIL)


def test_body_change_under_a_testing_key_is_E() -> None:
    signed = sign().replace(b"hungry yet?", b"hungry now?")
    result = verify(signed, resolver(test=RSA_RECORD + "; t=y"))
    assert (result.code, result.signatures[0].testing) == ("E", True)
