"""Authentication-Results (RFC 8601) and s/qmail's X-Authentication-Results."""

from __future__ import annotations

import json

from quailmail.auth import authres
from quailmail.auth.dkim import DkimSignatureResult, DkimStatus
from quailmail.auth.results import Result

from dkimcases import DATA, RSA_RECORD, resolver, sign, verify


def test_seeds_example_form() -> None:
    ok = DkimSignatureResult(DkimStatus.OK, Result.PASS, "ok")
    line = authres.authentication_results(
        "bltweb.net", [authres.method("domainkeys", ok), authres.method("dkim", ok)]
    )
    assert line == "Authentication-Results: bltweb.net; domainkeys=pass (ok); dkim=pass (ok)"


def test_properties_from_a_real_verification() -> None:
    result = verify(sign(), resolver(test=RSA_RECORD))
    sig = result.signatures[0]
    text = authres.method("dkim", sig)
    assert text.startswith("dkim=pass (ok) header.d=football.example.com header.s=test header.b=")
    assert sig.header_b is not None
    assert text.endswith("header.b=" + sig.header_b[: authres.HEADER_B_CHARS])


def test_reasons_are_safe_comments() -> None:
    bad = DkimSignatureResult(DkimStatus.SIG_BAD, Result.FAIL, "bad (very)\r\nbad", domain="a.b")
    assert authres.method("dkim", bad) == "dkim=fail (bad  very   bad) header.d=a.b"


def test_reasons_and_values_are_printable_ascii_and_bounded() -> None:
    # A DMARC record or a signature's tags may bring anything in.
    odd = DkimSignatureResult(
        DkimStatus.SIG_BAD, Result.FAIL, "a=rsa-\xe9 " + "x" * 1000, domain="caf\xe9.example"
    )
    text = authres.method("dkim", odd)
    assert text.isascii() and "a=rsa-? " in text and 'header.d="caf?.example"' in text
    assert len(text) < authres.COMMENT_CHARS + 60


def test_a_long_field_is_folded_and_unfolds_to_its_one_line_form() -> None:
    verdicts = [
        DkimSignatureResult(
            DkimStatus.OK, Result.PASS, "ok", domain=f"d{n}.example.com", selector="sel",
            header_b="abcdefghijklmnop",
        )
        for n in range(10)
    ]  # fmt: skip
    spf = "spf=pass (" + "a long reason " * 20 + ") smtp.mailfrom=joe@example.com"
    items = [authres.method("dkim", v) for v in verdicts] + [spf]
    folded = authres.authentication_results("mx.example.org", items)
    one_line = authres.authentication_results("mx.example.org", items, fold=False)
    assert len(one_line) > 998  # what ten signatures and a reason made before
    lines = folded.split("\r\n")
    assert all(len(line) <= authres.FOLD_AT for line in lines), lines
    assert all(line.startswith(" ") for line in lines[1:])
    assert folded.replace("\r\n", "") == one_line  # RFC 5322 §2.2.3 unfolding
    assert lines[0] == "Authentication-Results: mx.example.org;"


def test_ten_thousand_signatures_make_one_entry_for_the_unchecked() -> None:
    signed = sign()
    field = signed.partition(b"\r\n\r\n")[0]
    signature = field.split(b"\r\nFrom:", 1)[0] + b"\r\n"
    many = signature * 10_000 + signed
    result = verify(many, resolver(test=RSA_RECORD))
    assert len(result.signatures) == 9  # the 8 checked, and one for the rest
    assert result.signatures[-1].reason == "too many signatures; 9993 more not checked"
    line = authres.authentication_results(
        "mx", [authres.method("dkim", s) for s in result.signatures]
    )
    assert len(line) < 2000


def test_none_when_nothing_to_report() -> None:
    assert authres.authentication_results("mx", []) == "Authentication-Results: mx; none"
    assert authres.none_method("dkim", "no signature") == "dkim=none (no signature)"


def test_s_qmail_form() -> None:
    passed = authres.x_authentication_results("example.com", Result.PASS, "ok", "mx.example.net")
    assert passed == "X-Authentication-Results: example.com dkim=pass mx.example.net"
    failed = authres.x_authentication_results(
        "example.com", Result.FAIL, "body hash did not verify", "mx.example.net"
    )
    assert failed == (
        "X-Authentication-Results: example.com dkim=fail (body hash did not verify) mx.example.net"
    )


def test_rendered_header_parses_in_the_authres_package() -> None:
    """An independent RFC 8601 parser (PyPI authres) reads back what we render."""
    import authres as peer  # type: ignore[import-untyped]

    result = verify(sign(), resolver(test=RSA_RECORD))
    sig = result.signatures[0]
    line = authres.authentication_results(
        "mx.example.org",
        [
            authres.method("domainkeys", DkimSignatureResult(DkimStatus.OK, Result.PASS, "ok")),
            authres.method("dkim", sig),
            authres.method(
                "dkim",
                DkimSignatureResult(
                    DkimStatus.SIG_BAD, Result.FAIL, "it (really) failed", domain="x.example"
                ),
            ),
        ],
    )
    parsed = peer.AuthenticationResultsHeader.parse(line)
    assert parsed.authserv_id == "mx.example.org"
    got = [
        (r.method, r.result, [(p.type, p.name, p.value) for p in r.properties])
        for r in parsed.results
    ]
    assert sig.header_b is not None
    assert got == [
        ("domainkeys", "pass", []),
        ("dkim", "pass", [
            ("header", "d", "football.example.com"),
            ("header", "s", "test"),
            ("header", "b", sig.header_b[: authres.HEADER_B_CHARS]),
        ]),
        ("dkim", "fail", [("header", "d", "x.example")]),
    ]  # fmt: skip


def test_the_authres_vectors_we_can_produce_are_produced_identically() -> None:
    """The dkim/domainkeys resinfos among the authres vectors (tests/data/authres)
    come out of our renderer byte for byte from their parsed fields."""
    data = json.loads((DATA / "authres" / "authres-doctest-headers.json").read_text())
    checked = 0
    for case in data["cases"]:
        if case.get("parse_error") or case.get("version"):
            continue
        results = case["results"]
        if not results or any(r["method"] not in ("dkim", "domainkeys") for r in results):
            continue
        if any(r.get("reason") or r.get("method_version") for r in results):
            continue
        props_ok = all(
            p["type"] == "header" and p["name"] in ("d", "s", "b", "i")
            for r in results
            for p in r["properties"]
        )
        if not props_ok:
            continue
        items = []
        for r in results:
            props = {p["name"]: p["value"] for p in r["properties"]}
            if "i" in props:
                break
            verdict = DkimSignatureResult(
                DkimStatus.OK, Result(r["result"]), "", domain=props.get("d"),
                selector=props.get("s"), header_b=props.get("b"),
            )  # fmt: skip
            items.append(authres.method(r["method"], verdict))
        else:
            line = authres.authentication_results(case["authserv_id"], items, fold=False)
            assert line == case["authres_reserialized"]
            checked += 1
    assert checked >= 1
