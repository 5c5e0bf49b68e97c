"""DomainKeys interop with Mail::DKIM (Debian libmail-dkim-perl), both directions.

The peer scripts in tests/peers/ sign with Mail::DKIM's Signer and a
DkSignature, and verify with Mail::DKIM's Verifier (which handles
DomainKey-Signature fields; there is no separate DkVerifier class) answering
DNS from a key table.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

import pytest

from quailmail.auth.domainkeys import DkStatus

from dkcases import DATA, GOOD_KEY, KEY_FILE, VECTORS, resolver, sign, verify

pytestmark = pytest.mark.peer

PEERS = Path(__file__).parent / "peers"

# Folding, whitespace runs, repeated fields, blank and whitespace-only lines,
# trailing empty lines: what simple and nofws treat differently.
MESSAGE = (
    b"Received: from client.example (client.example [192.0.2.1])\r\n"
    b"\tby mx.messiah.edu; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"Received: from laptop by client.example\r\n"
    b'From: "Jason  Long" <jlong@messiah.edu>\r\n'
    b"To: a@example.org,\r\n"
    b"    b@example.org\r\n"
    b"Subject:   spaces   and\ttabs  \r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"Message-ID: <dk-interop@messiah.edu>\r\n"
    b"X-Mailer: quailmail tests\r\n"
    b"\r\n"
    b"First line.\r\n"
    b"  indented,  with   runs of spaces   \r\n"
    b"\r\n"
    b"\tafter a blank line\r\n"
    b" \r\n"
    b"\r\n"
)
H_LIST = ["from", "to", "subject", "date", "message-id", "received"]
# What Mail::DKIM's signer picks itself ("default"): its usual headers, as found.
MAIL_DKIM_DEFAULT = ["from", "to", "subject", "date", "message-id"]


@functools.cache
def _peer_missing() -> str | None:
    if shutil.which("perl") is None:
        return "perl is not installed"
    probe = subprocess.run(
        ["perl", "-MMail::DKIM::Signer", "-MMail::DKIM::Verifier", "-MNet::DNS", "-e1"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        return "Mail::DKIM (Debian libmail-dkim-perl) or Net::DNS is not installed"
    return None


@pytest.fixture(autouse=True)
def _need_mail_dkim() -> None:
    missing = _peer_missing()
    if missing:
        pytest.skip(missing)


def mail_dkim_verify(message: bytes, keys: Path) -> str:
    out = subprocess.run(
        ["perl", str(PEERS / "dk_verify.pl"), str(keys)],
        input=message,
        capture_output=True,
        check=True,
        timeout=60,
    )
    result, detail = out.stdout.decode().splitlines()[:2]
    return result if result == detail else f"{result}: {detail}"


def mail_dkim_sign(message: bytes, canon: str, h: str = "-", domain: str = "messiah.edu") -> bytes:
    out = subprocess.run(
        ["perl", str(PEERS / "dk_sign.pl"), str(KEY_FILE), "test8", domain, canon, h],
        input=message,
        capture_output=True,
        check=True,
        timeout=60,
    )
    return out.stdout.rstrip(b"\n")


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    resolver(tmp_path, GOOD_KEY)  # writes tmp_path/keys.dns
    return tmp_path / "keys.dns"


def test_mail_dkim_passes_the_vectors() -> None:
    # Checks the peer script (its DNS stand-in) as much as the vectors.
    for name, case in sorted(VECTORS.items()):
        assert mail_dkim_verify((DATA / name).read_bytes(), DATA / case["keys"]) == "pass", name


@pytest.mark.parametrize("canon", ["simple", "nofws"])
@pytest.mark.parametrize("headers", [None, H_LIST], ids=["all", "h"])
def test_ours_verify_in_mail_dkim(keys: Path, canon: str, headers: list[str] | None) -> None:
    signed = sign(MESSAGE, canon=canon, headers=headers)
    assert mail_dkim_verify(signed, keys) == "pass"
    # The same message with LF line endings, as a file would have it.
    assert mail_dkim_verify(signed.replace(b"\r\n", b"\n"), keys) == "pass"
    body_changed = signed.replace(b"First line.", b"First line!")
    assert mail_dkim_verify(body_changed, keys).startswith("fail")


@pytest.mark.parametrize("canon", ["simple", "nofws"])
@pytest.mark.parametrize("h", ["-", "default"])
def test_mail_dkim_verifies_in_ours_and_matches_byte_for_byte(
    tmp_path: Path, canon: str, h: str
) -> None:
    field = mail_dkim_sign(MESSAGE, canon, h)
    headers = None if h == "-" else MAIL_DKIM_DEFAULT
    ours = sign(MESSAGE, canon=canon, headers=headers)
    # RSA PKCS#1 v1.5 is deterministic: the same input must give the same field.
    assert ours == field + b"\r\n" + MESSAGE
    dns = resolver(tmp_path, GOOD_KEY)
    signed = field + b"\r\n" + MESSAGE
    assert verify(signed, dns).status is DkStatus.OK
    changed = signed.replace(b"First line.", b"First line!")
    result = verify(changed, dns)
    assert (result.status, result.reason) == (DkStatus.BADSIG, "signature did not verify")


def test_mail_dkim_sender_and_parent_domain(tmp_path: Path, keys: Path) -> None:
    message = b"Sender: list@lists.messiah.edu\r\n" + MESSAGE
    field = mail_dkim_sign(message, "nofws", "default", domain="messiah.edu")
    signed = field + b"\r\n" + message
    result = verify(signed, resolver(tmp_path, GOOD_KEY))
    assert (result.status, result.sender, result.sender_field) == (
        DkStatus.OK,
        "list@lists.messiah.edu",
        "sender",
    )
    ours = sign(message, canon="nofws", domain="messiah.edu", headers=["sender", "from"])
    assert mail_dkim_verify(ours, keys) == "pass"


def test_identity_checks_agree(keys: Path, tmp_path: Path) -> None:
    # d= that is not the sender's domain: Mail::DKIM "invalid", ours G.
    signed = sign(MESSAGE, domain="example.org")
    dkim_says = mail_dkim_verify(signed, keys)
    assert dkim_says.startswith("invalid"), dkim_says
    assert verify(signed, resolver(tmp_path, GOOD_KEY)).status is DkStatus.SYNTAX
    # Unsigned: both say so.
    assert mail_dkim_verify(MESSAGE, keys) == "none"
    assert verify(MESSAGE, resolver(tmp_path, GOOD_KEY)).status is DkStatus.NOSIG


def test_unterminated_last_line_is_where_we_differ(keys: Path, tmp_path: Path) -> None:
    # RFC 4870 §3.4.2.1 ("Append CRLF to the resulting line") and libdomainkeys
    # end the last body line with CRLF even when the message does not; Mail::DKIM
    # hashes it bare.  Mail over SMTP always ends in CRLF, so only files differ.
    unterminated = MESSAGE.rstrip(b"\r\n") + b"\r\nlast line, no CRLF"
    ours = sign(unterminated)
    assert verify(ours, resolver(tmp_path, GOOD_KEY)).status is DkStatus.OK
    assert mail_dkim_verify(ours, keys).startswith("fail")
    assert mail_dkim_verify(ours + b"\r\n", keys) == "pass"
