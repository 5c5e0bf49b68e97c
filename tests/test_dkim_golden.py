"""Golden cases: RFC 8463 Appendix A and dkimpy's test data (tests/data/dkim)."""

from __future__ import annotations

import base64
import json

import pytest

from quailmail.auth.dkim.signature import parse_signature
from quailmail.auth.dkim.verify import _header_digest
from quailmail.auth.message import parse_message
from quailmail.auth.results import Result

from dkimcases import DATA, ED_KEY, RSA_KEY, rfc8463_resolver, serve_keytable, verify

RFC8463 = DATA / "dkim" / "rfc8463"
DKIMPY = DATA / "dkim" / "dkimpy"


def test_rfc8463_signed_example_passes_both_signatures() -> None:
    expected = json.loads((RFC8463 / "expected.json").read_text())["A.3-signed.eml"]
    result = verify((RFC8463 / "A.3-signed.eml").read_bytes(), rfc8463_resolver())
    assert result.result.value == expected["result"]
    got = [(s.domain, s.selector, s.algorithm, s.result.value) for s in result.signatures]
    want = [(s["d"], s["s"], s["a"], s["result"]) for s in expected["signatures"]]
    assert got == want


def test_rfc8463_signatures_are_reproduced_byte_for_byte() -> None:
    """Ed25519 and RSA PKCS#1 v1.5 are deterministic: signing the A.3 header
    text with the A.1 keys gives the A.3 b= values exactly."""
    signed = parse_message((RFC8463 / "A.3-signed.eml").read_bytes())
    unsigned = parse_message((RFC8463 / "A.3-unsigned.eml").read_bytes())
    index: dict[str, list[bytes]] = {}
    for header in unsigned.headers:
        index.setdefault(header.lname, []).append(header.raw)
    fields = [h for h in signed.headers if h.lname == "dkim-signature"]
    assert len(fields) == 2
    for field in fields:
        sig = parse_signature(field.raw)
        digest = _header_digest(sig, index)
        if sig.key_type == "ed25519":
            produced = ED_KEY.key.sign(digest)  # type: ignore[call-arg]
        else:
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.asymmetric import padding
            from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

            produced = RSA_KEY.key.sign(  # type: ignore[call-arg]
                digest, padding.PKCS1v15(), Prehashed(hashes.SHA256())
            )
        assert base64.b64encode(produced).decode() == sig.b_text


def test_rfc8463_unsigned_is_none() -> None:
    result = verify((RFC8463 / "A.3-unsigned.eml").read_bytes(), rfc8463_resolver())
    assert (result.result, result.code) == (Result.NONE, "N")


def _dkimpy_cases() -> list[tuple[str, dict[str, str]]]:
    expected = json.loads((DKIMPY / "expected.json").read_text())
    return [(name, case) for name, case in expected.items() if not name.startswith("_")]


@pytest.mark.parametrize(("name", "case"), _dkimpy_cases(), ids=lambda v: str(v)[:40])
def test_dkimpy_cases_give_their_expected_result(name: str, case: dict[str, str]) -> None:
    path = DKIMPY / case.get("file", name)
    res = serve_keytable((DKIMPY / case["keys"]).read_text())
    result = verify(path.read_bytes(), res)
    assert result.result.value == case["result"], result
