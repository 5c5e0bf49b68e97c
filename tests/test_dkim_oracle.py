"""The seeds' DKIM letters: quailmail against libdkim, the library the seeds'
qmail patch used (Debian libdkim-dev, driven by tests/peers/libdkim_verify.c).

One crafted message per kind of status.  Where quailmail answers differently
on purpose, DIVERGENCES says so and why; every other case must agree letter
for letter.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from quailmail.auth import keys
from quailmail.auth.dkim import VerifyOptions, sign_dkim, verify_dkim
from quailmail.auth.message import parse_message
from quailmail.core.clock import FixedClock

import peers
from dkimcases import serve_keytable

pytestmark = pytest.mark.peer

DOMAIN = "example.com"
NOW = int(time.time())  # libdkim judges x= by the real clock
MESSAGE = (
    b"From: Joe SixPack <joe@example.com>\r\n"
    b"To: Suzie Q <suzie@example.net>\r\n"
    b"Subject: Is dinner ready?\r\n"
    b"Date: Fri, 11 Jul 2003 21:00:37 -0700\r\n"
    b"Message-ID: <20030712040037.46341.5F8J@example.com>\r\n"
    b"\r\n"
    b"We lost the game.  Are you hungry yet?\r\n"
)

# name -> (libdkim's letters, quailmail's letters, why quailmail differs)
DIVERGENCES = {
    "ed25519": (["C"], ["A"], "RFC 8463 came after libdkim; ed25519-sha256 is ours to verify"),
    "key h=sha1": (["A"], ["Q"], "the seeds' Q is exactly 'h= doesn't match a='; libdkim skips it"),
    "key k=ed25519": (["G"], ["Q"], "a key of another type is an algorithm mismatch to us"),
    "key t=s, i= subdomain": (
        ["C"],
        ["H"],
        "the signature is well formed; the key's t=s refuses it",
    ),
    "d= not a domain": (["L"], ["C"], "d= syntax is checked before any lookup (RFC 6376 §3.5)"),
    "selector label > 63": (["L"], ["C"], "s= syntax is checked before any lookup"),
}


def _sign(
    key: keys.PrivateKey, selector: str = "rsa", message: bytes = MESSAGE, **kw: object
) -> bytes:
    field = sign_dkim(parse_message(message), key, selector=selector, domain=DOMAIN, **kw)  # type: ignore[arg-type]
    return field + message


def _cases(tmp: Path) -> list[tuple[str, bytes, dict[str, str]]]:
    rsa = keys.generate("rsa", 1024)
    ed = keys.generate("ed25519")
    rec = keys.record_value(rsa)
    p = rsa.public_record_value()
    table = {f"rsa._domainkey.{DOMAIN}": rec, f"ed._domainkey.{DOMAIN}": keys.record_value(ed)}

    def key(value: str) -> dict[str, str]:
        return {**table, f"rsa._domainkey.{DOMAIN}": value}

    signed = _sign(rsa)
    only = _sign(rsa, headers=("from", "to", "subject", "date"))
    length = _sign(rsa, body_length=True)
    sub = signed.replace(b"Subject: Is dinner", b"Subject: Is lunch")
    body = signed.replace(b"hungry", b"thirsty")
    two_bad = _sign(rsa, message=_sign(rsa)).replace(b"hungry", b"thirsty")
    return [
        ("ok", signed, table),
        ("rsa-sha1", _sign(rsa, algorithm="rsa-sha1"), table),
        ("missing bh=", signed.replace(b" bh=", b" xh=", 1), table),
        ("header changed", sub, table),
        ("header changed, t=y", sub, key(rec + "; t=y")),
        ("body changed, t=y", body, key(rec + "; t=y")),
        ("expired", _sign(rsa, timestamp=NOW - 100, expiration=NOW - 10), table),
        ("key v=DKIM2", signed, key(rec.replace("DKIM1", "DKIM2"))),
        ("key v= not first", signed, key(f"k=rsa; v=DKIM1; p={p}")),
        ("key g= mismatch", _sign(rsa, identity="joe@example.com"), key(rec + "; g=suzie")),
        ("key t=s, i= subdomain", _sign(rsa, identity="@sub.example.com"), key(rec + "; t=s")),
        ("key h=sha1", signed, key(rec + "; h=sha1")),
        ("key k=ed25519", signed, key(f"v=DKIM1; k=ed25519; p={p}")),
        ("key revoked", signed, key("v=DKIM1; k=rsa; p=")),
        ("selector domain too long", _sign(rsa, selector=".".join(["s" * 60] * 4)), table),
        ("SERVFAIL", signed, key("~~SERVFAIL~~")),
        ("NXDOMAIN", signed, key("NXDOMAIN")),
        ("key p= not a key", signed, key("v=DKIM1; k=rsa; p=AAAA")),
        ("two signatures, both fail", two_bad, table),
        ("body changed", body, table),
        ("sig v=2", signed.replace(b"v=1;", b"v=2;", 1), table),
        ("added From, From oversigned", b"From: x@example.org\r\n" + signed, table),
        ("added From, not oversigned", b"From: x@example.org\r\n" + only, table),
        ("l=, body appended", length + b"PS\r\n", table),
        ("ed25519", _sign(ed, selector="ed"), table),
        ("d= not a domain", signed.replace(b"d=example.com;", b"d=example.com(x;", 1), table),
        ("selector label > 63", _sign(rsa, selector="s" * 64), table),
        ("unsigned", MESSAGE, table),
    ]


def _quail_letters(message: bytes, table: dict[str, str]) -> list[str]:
    text = "\n".join(f"{name} {value if value else chr(34) * 2}" for name, value in table.items())
    resolver = serve_keytable(text)
    options = VerifyOptions(accept_sha1=True)  # the seeds' era signed with rsa-sha1
    result = asyncio.run(
        verify_dkim(parse_message(message), resolver, options=options, clock=FixedClock(NOW))
    )
    return [s.code for s in result.signatures]


def test_letters_agree_with_libdkim(tmp_path: Path) -> None:
    try:
        peers.build_libdkim()
    except peers.PeerMissing as exc:
        pytest.skip(str(exc))
    agree, differ = [], []
    for name, message, table in _cases(tmp_path):
        oracle = peers.libdkim_verify(message, table)[1]
        ours = _quail_letters(message, table)
        if name in DIVERGENCES:
            differ.append((name, oracle, ours))
            want_oracle, want_ours, _ = DIVERGENCES[name]
            assert (oracle, ours) == (want_oracle, want_ours), name
        else:
            agree.append((name, oracle, ours))
            assert ours == oracle, name
    # Every letter of the seeds' table that libdkim can reach is covered.
    reached = {letter for _, oracle, _ in agree for letter in oracle}
    assert reached >= set("ACDEFGHIJKLMPRS"), sorted(reached)
    assert len(differ) == len(DIVERGENCES)


def test_message_letter_rules() -> None:
    """N with no signature, the signature's own with one, O when several all
    fail, A when any passes (the issue's rule; libdkim's overall code agrees:
    3 = none verified, 2 = some)."""
    rsa = keys.generate("rsa", 1024)
    table = {f"rsa._domainkey.{DOMAIN}": keys.record_value(rsa)}
    resolver = serve_keytable("\n".join(f"{n} {v}" for n, v in table.items()))

    def code(message: bytes) -> str:
        return asyncio.run(verify_dkim(parse_message(message), resolver)).code

    once = _sign(rsa)
    assert code(MESSAGE) == "N"
    assert code(once) == "A"
    assert code(once.replace(b"hungry", b"thirsty")) == "P"
    twice = _sign(rsa, message=once)
    assert code(twice.replace(b"hungry", b"thirsty")) == "O"
    half = _sign(rsa, selector="gone", message=once)
    assert code(half) == "A"
    try:
        assert peers.libdkim_verify(half, table).overall == 2
        assert peers.libdkim_verify(twice.replace(b"hungry", b"thirsty"), table).overall == 3
    except peers.PeerMissing as exc:
        pytest.skip(str(exc))
