"""DKVERIFY's letters and spfbehavior's levels, decided from verdicts alone."""

from __future__ import annotations

import pytest

from quailmail.auth.dkim import DkimResult, DkimStatus
from quailmail.auth.domainkeys import DkStatus, DomainKeysResult
from quailmail.auth.spf import SpfResult
from quailmail.policy.dkverify import Letters, decide
from quailmail.policy.spf import parse_level, refused_at


def dk(status: DkStatus) -> DomainKeysResult:
    return DomainKeysResult(status, status.result, "why\r\nnot")


def dkim(status: DkimStatus) -> DkimResult:
    return DkimResult(status, status.result, "because")


def test_forms_of_the_value() -> None:
    assert Letters.parse("DEGIJKfh,CGHIJMQRkl") == Letters("DEGIJKfh", "CGHIJMQRkl")
    assert Letters.parse("DEGIJKfh") == Letters("DEGIJKfh", None)  # qmail-dk's
    assert Letters.parse("") == Letters("", None)
    assert Letters.parse(",P") == Letters("", "P")


def test_letters_no_status_has_are_said_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="quailmail.policy"):
        for _ in range(3):  # a value comes per connection: said once
            assert Letters.parse("DEGzz,CGH,Q") == Letters("DEGzz", "CGH,Q")
        assert Letters.parse("DEGIJKfh,CGHIJMQRkl") == Letters("DEGIJKfh", "CGHIJMQRkl")
        assert Letters.parse("ds") == Letters("ds", None)  # s is a DKIM letter only
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "DKVERIFY 'DEGzz,CGH,Q': ',z' are no status letters; ignored",
        "DKVERIFY 'ds': 's' are no status letters; ignored",
    ]


@pytest.mark.parametrize(
    ("value", "dk_status", "dkim_status", "expected"),
    [
        ("", DkStatus.BADSIG, DkimStatus.BAD_BODY_HASH, None),  # empty: annotate only
        ("DEGIJKfh,CGHIJMQRkl", DkStatus.BADSIG, DkimStatus.BAD_BODY_HASH, None),
        ("B", DkStatus.BADSIG, DkimStatus.OK, "554 5.7.5 DomainKeys DK_STAT_BADSIG (bad): why"),
        ("b", DkStatus.BADSIG, DkimStatus.OK, "451 4.7.5 DomainKeys DK_STAT_BADSIG"),
        ("P", DkStatus.OK, DkimStatus.BAD_BODY_HASH, None),  # P is no DomainKeys letter
        (",P", DkStatus.OK, DkimStatus.BAD_BODY_HASH, "554 5.7.20 DKIM BAD BODY HASH (status P)"),
        (",p", DkStatus.OK, DkimStatus.BAD_BODY_HASH, "451 4.7.20 DKIM BAD BODY HASH"),
        ("b,P", DkStatus.BADSIG, DkimStatus.BAD_BODY_HASH, "554 5.7.20 DKIM"),  # refusal wins
        ("B,p", DkStatus.BADSIG, DkimStatus.BAD_BODY_HASH, "554 5.7.5 DomainKeys"),
        ("f,k", DkStatus.CANTVRFY, DkimStatus.DNS_TEMP_FAIL, "451 4.7.0 DomainKeys"),  # DK first
        ("Bb", DkStatus.BADSIG, DkimStatus.OK, "554"),  # upper case first, as qmail-dk
        ("C,N", DkStatus.OK, DkimStatus.OK, None),
    ],
)
def test_decide(
    value: str, dk_status: DkStatus, dkim_status: DkimStatus, expected: str | None
) -> None:
    reply = decide(Letters.parse(value), dk(dk_status), dkim(dkim_status))
    if expected is None:
        assert reply is None
    else:
        assert reply is not None
        assert f"{reply.code} {reply.enhanced} {reply.text}".startswith(expected)
        assert "\n" not in reply.text and "\r" not in reply.text


@pytest.mark.parametrize(
    ("text", "level"),
    [(None, 0), ("", 0), ("3", 3), (" 4\n", 4), ("9", 6), ("2abc", 2), ("abc", 0), ("-1", 0)],
)
def test_spfbehavior_is_read_as_qmail_reads_numbers(text: str | None, level: int) -> None:
    assert parse_level(text) == level


def test_what_each_level_refuses() -> None:
    table = {
        result: [level for level in range(7) if refused_at(result, level)] for result in SpfResult
    }
    assert table == {
        SpfResult.PASS: [],
        SpfResult.FAIL: [3, 4, 5, 6],
        SpfResult.SOFTFAIL: [4, 5, 6],
        SpfResult.NEUTRAL: [5, 6],
        SpfResult.NONE: [6],
        SpfResult.PERMERROR: [6],
        SpfResult.TEMPERROR: [],  # answered 451 at MAIL from level 2, not refused
    }
