"""DMARC vectors from OpenDMARC and Stalwart's mail-auth (tests/data/dmarc/).

Every case is checked.  Where quailmail follows RFC 7489 and OpenDMARC does
not, the case is listed in DIFFERENCES with the reason, and the test checks
what quailmail does instead.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from quailmail.auth.dmarc import (
    Alignment,
    DmarcRecord,
    DmarcRecordError,
    Policy,
    RecordProblem,
    aligned,
    evaluate,
    parse_record,
)
from quailmail.auth.message import address_domain
from quailmail.auth.results import Result
from quailmail.dns.zoneserver import ZoneServer

from dnsfixtures import resolver_for

VECTORS = json.loads((Path(__file__).parent / "data" / "dmarc" / "dmarc-vectors.json").read_text())
PARSE_CASES = VECTORS["record_parse"]["cases"]
ALIGNMENT_CASES = VECTORS["alignment"]["cases"]
EVALUATION_CASES = VECTORS["evaluation"]["cases"]

# OpenDMARC's parse status -> ours.  OKAY: the record is usable.
STATUS = {
    "DMARC_PARSE_OKAY": None,
    "DMARC_PARSE_ERROR_EMPTY": RecordProblem.EMPTY,
    "DMARC_PARSE_ERROR_BAD_VERSION": RecordProblem.BAD_VERSION,
    "DMARC_PARSE_ERROR_BAD_VALUE": RecordProblem.BAD_VALUE,
    "DMARC_PARSE_ERROR_NO_REQUIRED_P": RecordProblem.NO_POLICY,
}

_DEFAULTS_RULE = (
    'RFC 7489 §6.3: "Syntax errors in the remainder of the record SHOULD be discarded '
    "in favor of default values\"; OpenDMARC refuses the whole record, so a domain's "
    "p=reject would stop applying over a typo in an optional tag"
)

# record -> (what quailmail does, why).  A callable checks the parsed record.
DIFFERENCES: dict[str, tuple[Any, str]] = {
    "v=DMARC1; p=n;": (
        RecordProblem.BAD_VALUE,
        "RFC 7489 §6.3/§6.4 allow only none, quarantine, reject; OpenDMARC also takes "
        "abbreviations (mail-auth refuses them too).  No rua=, so no p=none fallback",
    ),
    "v=DMARC1; p=none; adkim=bob;": (
        lambda r: r.adkim is Alignment.RELAXED and _warned(r, "adkim"),
        _DEFAULTS_RULE + " (adkim=r used)",
    ),
    "v=DMARC1; p=none; aspf=bob;": (
        lambda r: r.aspf is Alignment.RELAXED and _warned(r, "aspf"),
        _DEFAULTS_RULE + " (aspf=r used)",
    ),
    "v=DMARC1; p=none; rf=bob;": (
        lambda r: r.rf == ("afrf",) and _warned(r, "rf"),
        _DEFAULTS_RULE + " (rf=afrf used; 'bob' is a valid Keyword in the §6.4 ABNF, "
        "just not a registered format)",
    ),
    "v=DMARC1; p=none; rf=000000000000000000000000000000000": (
        lambda r: r.rf == ("afrf",) and _warned(r, "rf"),
        _DEFAULTS_RULE + " (rf=afrf used)",
    ),
    "v=DMARC1; p=none; ri=bob;": (
        lambda r: r.ri == 86400 and _warned(r, "ri"),
        _DEFAULTS_RULE + " (ri=86400 used)",
    ),
    "v=DMARC1; p=none; pct=500;": (
        lambda r: r.pct == 100 and _warned(r, "pct"),
        _DEFAULTS_RULE + " (pct=100 used; mail-auth clamps to 100 as well)",
    ),
}


def _warned(record: DmarcRecord, tag: str) -> bool:
    return any(w.startswith(f"{tag}=") for w in record.warnings)


def _outcome(text: str) -> DmarcRecord | RecordProblem:
    try:
        return parse_record(text)
    except DmarcRecordError as error:
        return error.problem


def test_every_difference_names_a_vector() -> None:
    records = {case["record"] for case in PARSE_CASES}
    assert set(DIFFERENCES) <= records
    # The vectors where OpenDMARC and RFC 7489 agree are the rest: 12 of 19.
    assert len(records - set(DIFFERENCES)) == 12


@pytest.mark.parametrize("case", PARSE_CASES, ids=lambda c: c["record"] or "(empty)")
def test_record_parse(case: dict[str, str]) -> None:
    got = _outcome(case["record"])
    if case["record"] in DIFFERENCES:
        expected, why = DIFFERENCES[case["record"]]
        assert why
        if isinstance(expected, RecordProblem):
            assert got is expected
        else:
            assert isinstance(got, DmarcRecord)
            assert expected(got), got
        return
    problem = STATUS[case["opendmarc"]]
    if problem is None:
        assert isinstance(got, DmarcRecord), got
    else:
        assert got is problem


def test_accepted_vectors_read_as_published() -> None:
    first = parse_record(PARSE_CASES[0]["record"])
    assert first.p is Policy.NONE
    assert first.rf == ("afrf",)
    assert [u.mailbox for u in first.rua] == ["dmarc-a@abuse.net"]
    assert [u.mailbox for u in first.ruf] == ["dmarc-f@abuse.net"]
    assert first.warnings == ()
    # Non-mailto URIs are syntactically valid (RFC 3986) and kept; only
    # mailto: is one a reporter must support (§6.2).
    ftp = parse_record("v=DMARC1; p=none; rua=ftp://abuse.com")
    assert [(u.uri, u.scheme, u.mailbox) for u in ftp.rua] == [("ftp://abuse.com", "ftp", None)]
    odd = parse_record("v=DMARC1; p=none; ruf=mailto://abuse.com; foo=bar; buzz=happy;")
    assert [(u.uri, u.mailbox) for u in odd.ruf] == [("mailto://abuse.com", None)]
    assert odd.warnings == ()  # unknown tags are ignored silently (§6.3 MUST)


@pytest.mark.parametrize("case", ALIGNMENT_CASES, ids=lambda c: c["source"])
def test_alignment(case: dict[str, Any]) -> None:
    assert aligned(case["domain"], case["from_domain"], case["mode"]) is case["aligned"]


@pytest.mark.parametrize("case", EVALUATION_CASES, ids=lambda c: c["source"])
def test_evaluation(case: dict[str, str], dns_server: ZoneServer) -> None:
    found = address_domain(case["from"])
    assert found is not None
    from_domain = found[1]
    dns_server.zone.add_txt(f"_dmarc.{from_domain}", case["dmarc_record"])
    result = asyncio.run(
        evaluate(
            from_domain,
            spf=(case["spf"], case["mail_from_domain"]),
            dkim=[(case["dkim_d"], case["dkim"] == "pass")],
            resolver=resolver_for(dns_server),
        )
    )
    # mail-auth's words: "pass" = passed and aligned, "fail (not aligned)" =
    # passed but not aligned, "none" = the method did not pass.
    assert result.spf_aligned is (case["expect_spf_alignment"] == "pass")
    assert result.dkim_aligned is (case["expect_dkim_alignment"] == "pass")
    assert result.policy is Policy(case["policy"])
    assert result.record_domain == from_domain
    if result.spf_aligned or result.dkim_aligned:
        assert (result.result, result.disposition) == (Result.PASS, Policy.NONE)
    else:
        assert (result.result, result.disposition) == (Result.FAIL, Policy(case["policy"]))
        if case["expect_spf_alignment"].startswith("fail"):
            assert "not aligned (aspf=s)" in result.reason
        else:
            assert "SPF fail" in result.reason
