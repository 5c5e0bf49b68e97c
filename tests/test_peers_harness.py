"""The peer harness (tests/peers) on known data, so interop tests can trust it.

- RFC 8463 A.3 (ed25519 + rsa) with each verifier, and what each says of ed25519;
- every signer's output verified by every verifier;
- libdkim's letters (the seeds' DKVERIFY letters) for the statuses it can reach;
- key-table special values, Mail::DKIM on a loopback DNS server, PeerMissing.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from quailmail.auth import keys
from quailmail.auth.dkim import sign_dkim
from quailmail.auth.message import parse_message

import peers
from peers import Verdict, skip_missing

pytestmark = pytest.mark.peer

DATA = Path(__file__).parent / "data" / "dkim"
RFC8463 = DATA / "rfc8463"
DOMAIN = "example.com"
MESSAGE = (
    b"From: Joe SixPack <joe@example.com>\r\n"
    b"To: Suzie Q <suzie@example.net>\r\n"
    b"Subject: Is dinner ready?\r\n"
    b"Date: Fri, 11 Jul 2003 21:00:37 -0700\r\n"
    b"Message-ID: <20030712040037.46341.5F8J@example.com>\r\n"
    b"\r\n"
    b"Hi.\r\n"
    b"\r\n"
    b"We lost the game.  Are you hungry yet?\r\n"
    b"\r\n"
    b"Joe.\r\n"
)

Verifier = Callable[[bytes, peers.KeyTable], Verdict]
VERIFIERS: dict[str, Verifier] = {
    "mail_dkim": peers.mail_dkim_verify,
    "opendkim": peers.opendkim_verify,
    "dkimpy": peers.dkimpy_verify,
}


@dataclass(frozen=True)
class Keys:
    rsa_path: Path
    ed25519_path: Path
    rsa: keys.PrivateKey
    ed25519: keys.PrivateKey
    table: dict[str, str]  # rsa at s=rsa, ed25519 at s=ed


@pytest.fixture(scope="session")
def libdkim_bin() -> peers.libdkim.LibdkimBinaries:
    """Compile the libdkim helpers once per session (cached across sessions)."""
    try:
        return peers.build_libdkim()
    except peers.PeerMissing as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def test_keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    base = tmp_path_factory.mktemp("keys")
    rsa = keys.generate("rsa", 2048)
    ed = keys.generate("ed25519", 256)
    rsa_path = base / "rsa.pem"
    rsa_path.write_bytes(keys.private_key_pem(rsa))
    ed_path = base / "ed25519.pem"
    ed_path.write_bytes(keys.private_key_pem(ed))
    table = {
        f"rsa._domainkey.{DOMAIN}": keys.record_value(rsa),
        f"ed._domainkey.{DOMAIN}": keys.record_value(ed),
    }
    return Keys(rsa_path, ed_path, rsa, ed, table)


def libdkim_letters(message: bytes, table: peers.KeyTable) -> list[str]:
    try:
        return peers.libdkim_verify(message, table).letters
    except peers.PeerMissing as exc:
        pytest.skip(str(exc))


# --- RFC 8463 A.3: ed25519-sha256 (s=brisbane) then rsa-sha256 (s=test) --------


@pytest.fixture(scope="module")
def rfc8463() -> tuple[bytes, dict[str, str]]:
    table = peers.load_keytable(RFC8463 / "A.2-keys.dns")
    return (RFC8463 / "A.3-signed.eml").read_bytes(), table


def test_keytable_file_is_read(rfc8463: tuple[bytes, dict[str, str]]) -> None:
    _, table = rfc8463
    assert set(table) == {
        "brisbane._domainkey.football.example.com",
        "test._domainkey.football.example.com",
    }
    assert table["test._domainkey.football.example.com"].startswith("v=DKIM1; k=rsa; p=MIGf")


@pytest.mark.parametrize("name", ["opendkim", "dkimpy"])
def test_rfc8463_both_signatures_pass(name: str, rfc8463: tuple[bytes, dict[str, str]]) -> None:
    message, table = rfc8463
    with skip_missing():
        verdict = VERIFIERS[name](message, table)
    assert verdict.word == "pass", verdict.raw
    assert [(s.selector, s.algorithm, s.word) for s in verdict.signatures] == [
        ("brisbane", "ed25519-sha256", "pass"),
        ("test", "rsa-sha256", "pass"),
    ], verdict.raw


def test_rfc8463_mail_dkim_has_no_ed25519(rfc8463: tuple[bytes, dict[str, str]]) -> None:
    """Debian 12's Mail::DKIM 1.20230212 predates its ed25519 support."""
    message, table = rfc8463
    with skip_missing():
        verdict = peers.mail_dkim_verify(message, table)
    assert verdict.word == "pass"
    assert verdict.by_selector("test").word == "pass"
    ed = verdict.by_selector("brisbane")
    assert (ed.result, ed.word) == ("invalid", "permerror")
    assert "unsupported algorithm ed25519-sha256" in ed.details


def test_rfc8463_libdkim_letters(
    libdkim_bin: object, rfc8463: tuple[bytes, dict[str, str]]
) -> None:
    """libdkim 1.0.21 knows rsa-sha1/rsa-sha256 only: ed25519 is C (BAD_SYNTAX)."""
    message, table = rfc8463
    report = peers.libdkim_verify_details(message, table)
    assert report.version == "1.0.21"
    assert report.letters == ["C", "A"]
    assert report.codes == [-2, 0]
    assert report.overall == 2  # DKIM_PARTIAL_SUCCESS: one of two verified
    assert report.signatures[1].domain == "football.example.com"
    assert peers.libdkim_verify(message, table) == (2, ["C", "A"])


def test_libdkim_reads_lf_and_crlf_alike(rfc8463: tuple[bytes, dict[str, str]]) -> None:
    message, table = rfc8463
    assert libdkim_letters(message, table) == libdkim_letters(peers.to_crlf(message), table)


# --- dkimpy's pre-signed messages (tests/data/dkim/dkimpy/expected.json) --------

EXPECTED = json.loads((DATA / "dkimpy" / "expected.json").read_text())
CASES = sorted(name for name in EXPECTED if not name.startswith("_"))
# Where a peer's word differs from expected.json, and why.
DEVIATIONS = {
    ("mail_dkim", "data/ed25519test2.msg"): "permerror",  # Debian's Mail::DKIM: no ed25519
    # OpenDKIM 2.11 calls a key record whose p= does not decode a temporary error
    ("opendkim", "data/rfc6376.signed.rsa.msg (with keys-corrupt-rsa.dns)"): "temperror",
}
# libdkim's letters for the same files (no ed25519: C; the d= with "(" is looked up: L)
LIBDKIM_LETTERS = {
    "data/test2.message": ["A"],
    "data/ed25519test2.msg": ["C"],
    "data/rfc6376.signed.msg": ["C", "A"],
    "data/rfc6376.signed.rsa.msg": ["A"],
    "data/rfc6376.signed.rsa.msg (with keys-corrupt-rsa.dns)": ["M"],
    "data/rfc6376.signed.no_t.msg": ["D"],
    "data/test.message.baddomain": ["L"],
    "data/rfc6376.w1258.msg": [],
}


def _expected_case(name: str) -> tuple[bytes, dict[str, str], str]:
    case = EXPECTED[name]
    folder = DATA / "dkimpy"
    message = (folder / case.get("file", name)).read_bytes()
    return message, peers.load_keytable(folder / case["keys"]), case["result"]


@pytest.mark.parametrize("verifier", sorted(VERIFIERS))
@pytest.mark.parametrize("case", CASES)
def test_dkimpy_expected(case: str, verifier: str) -> None:
    message, table, want = _expected_case(case)
    with skip_missing():
        verdict = VERIFIERS[verifier](message, table)
    assert verdict.word == DEVIATIONS.get((verifier, case), want), verdict.raw


def test_dkimpy_expected_libdkim(libdkim_bin: object) -> None:
    assert set(LIBDKIM_LETTERS) == set(CASES)
    got = {case: libdkim_letters(*_expected_case(case)[:2]) for case in CASES}
    assert got == LIBDKIM_LETTERS


# --- every signer, every verifier --------------------------------------------


def _sign(signer: str, message: bytes, k: Keys, algorithm: str) -> bytes:
    selector = "ed" if algorithm.startswith("ed25519") else "rsa"
    path = k.ed25519_path if selector == "ed" else k.rsa_path
    return peers.sign_with(signer, message, path, selector, DOMAIN, algorithm=algorithm)


SIGNERS = ["mail_dkim", "opendkim", "dkimpy", "libdkim"]


@pytest.mark.parametrize("line_ending", [b"\r\n", b"\n"], ids=["crlf", "lf"])
@pytest.mark.parametrize("signer", SIGNERS)
def test_rsa_signature_verifies_everywhere(
    signer: str, line_ending: bytes, test_keys: Keys
) -> None:
    message = MESSAGE.replace(b"\r\n", line_ending)
    with skip_missing():
        signed = _sign(signer, message, test_keys, "rsa-sha256")
    assert signed.endswith(message)
    assert signed.startswith(b"DKIM-Signature:")
    if line_ending == b"\n":
        assert b"\r" not in signed
    else:
        assert signed.count(b"\n") == signed.count(b"\r\n")
    for name, verify in VERIFIERS.items():
        with skip_missing():
            verdict = verify(signed, test_keys.table)
            assert verdict.words == ["pass"], f"{signer} → {name}: {verdict.raw}"
    assert libdkim_letters(signed, test_keys.table) == ["A"]


@pytest.mark.parametrize("signer", ["opendkim", "dkimpy"])
def test_ed25519_signature(signer: str, test_keys: Keys) -> None:
    with skip_missing():
        signed = _sign(signer, MESSAGE, test_keys, "ed25519-sha256")
    assert b"a=ed25519-sha256" in signed
    for name in ("opendkim", "dkimpy"):
        with skip_missing():
            verdict = VERIFIERS[name](signed, test_keys.table)
            assert verdict.words == ["pass"], f"{signer} → {name}: {verdict.raw}"
    with skip_missing():
        mail = peers.mail_dkim_verify(signed, test_keys.table)
        assert mail.words == ["permerror"]
        assert "unsupported algorithm" in mail.signatures[0].details
    assert libdkim_letters(signed, test_keys.table) == ["C"]


@pytest.mark.parametrize("signer", ["mail_dkim", "libdkim"])
def test_rsa_only_signers_refuse_ed25519(signer: str, test_keys: Keys) -> None:
    with pytest.raises(peers.PeerUnsupported):
        _sign(signer, MESSAGE, test_keys, "ed25519-sha256")


def test_mail_dkim_method_is_its_c_value(test_keys: Keys) -> None:
    with skip_missing():
        plain = peers.mail_dkim_sign(MESSAGE, test_keys.rsa_path, "rsa", DOMAIN)
        both = peers.mail_dkim_sign(
            MESSAGE, test_keys.rsa_path, "rsa", DOMAIN, method="relaxed/relaxed"
        )
    assert b"c=relaxed;" in plain  # relaxed header, simple body (RFC 6376 §3.5)
    assert b"c=relaxed/relaxed;" in both


def test_refusal_is_reported(test_keys: Keys, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_bytes(b"not a key\n")
    for sign in (peers.mail_dkim_sign, peers.libdkim_sign, peers.dkimpy_sign):
        with skip_missing(), pytest.raises(peers.PeerRefused):
            sign(MESSAGE, bad, "rsa", DOMAIN)


# --- libdkim: the seeds' letters ------------------------------------------------


def _quail_sign(message: bytes, key: keys.PrivateKey, selector: str = "rsa", **kw: Any) -> bytes:
    field = sign_dkim(parse_message(message), key, selector=selector, domain=DOMAIN, **kw)
    return field + message


def _with(table: dict[str, str], value: str) -> dict[str, str]:
    return {**table, f"rsa._domainkey.{DOMAIN}": value}


def test_libdkim_letters(libdkim_bin: object, test_keys: Keys) -> None:
    """What libdkim 1.0.21 answers, one case per line: the oracle's table."""
    k = test_keys
    rec = k.table[f"rsa._domainkey.{DOMAIN}"]
    p = rec.split("p=", 1)[1]
    signed = _quail_sign(MESSAGE, k.rsa)
    sub = signed.replace(b"Subject: Is dinner", b"Subject: Is lunch")
    body = signed.replace(b"hungry", b"thirsty")
    only = _quail_sign(MESSAGE, k.rsa, headers=("from", "to", "subject", "date"))
    length = _quail_sign(MESSAGE, k.rsa, body_length=True)
    cases: list[tuple[str, bytes, dict[str, str], list[str]]] = [
        ("ok", signed, k.table, ["A"]),
        ("rsa-sha1 is accepted", _quail_sign(MESSAGE, k.rsa, algorithm="rsa-sha1"), k.table, ["A"]),
        ("header changed", sub, k.table, ["D"]),
        ("header changed, t=y", sub, _with(k.table, rec.replace("k=rsa;", "k=rsa; t=y;")), ["E"]),
        (
            "body changed, t=y: E too",
            body,
            _with(k.table, rec.replace("k=rsa;", "t=y; k=rsa;")),
            ["E"],
        ),
        ("body changed", body, k.table, ["P"]),
        (
            "x= past",
            _quail_sign(MESSAGE, k.rsa, timestamp=10**9, expiration=10**9 + 9),
            k.table,
            ["F"],
        ),
        ("key v=DKIM2", signed, _with(k.table, rec.replace("DKIM1", "DKIM2")), ["G"]),
        ("key v= not first", signed, _with(k.table, f"k=rsa; v=DKIM1; p={p}"), ["G"]),
        ("key k=ed25519", signed, _with(k.table, f"v=DKIM1; k=ed25519; p={p}"), ["G"]),
        ("key empty TXT", signed, _with(k.table, '""'), ["G"]),
        (
            "key g= mismatch",
            _quail_sign(MESSAGE, k.rsa, identity="@example.com"),
            _with(k.table, rec.replace("k=rsa;", "k=rsa; g=joe;")),
            ["H"],
        ),
        (
            "key t=s, i= subdomain: C",
            _quail_sign(MESSAGE, k.rsa, identity="@sub.example.com"),
            _with(k.table, rec.replace("k=rsa;", "k=rsa; t=s;")),
            ["C"],
        ),
        (
            "key h=sha1 ignored",
            signed,
            _with(k.table, rec.replace("k=rsa;", "k=rsa; h=sha1;")),
            ["A"],
        ),
        ("key revoked", signed, _with(k.table, "v=DKIM1; k=rsa; p="), ["I"]),
        ("SERVFAIL", signed, _with(k.table, "~~SERVFAIL~~"), ["K"]),
        ("NXDOMAIN", signed, _with(k.table, "NXDOMAIN"), ["L"]),
        ("not in table", signed, {}, ["L"]),
        ("key p= not a key", signed, _with(k.table, "v=DKIM1; k=rsa; p=AAAA"), ["M"]),
        ("sig v=2", signed.replace(b"v=1;", b"v=2;", 1), k.table, ["R"]),
        ("added From, From oversigned", b"From: x@example.org\r\n" + signed, k.table, ["D"]),
        ("added From, not oversigned", b"From: x@example.org\r\n" + only, k.table, ["S"]),
        ("l=, body appended", length + b"PS\r\n", k.table, ["A"]),
        ("ed25519", _quail_sign(MESSAGE, k.ed25519, selector="ed"), k.table, ["C"]),
        ("unsigned", MESSAGE, k.table, []),
    ]
    got = [(name, libdkim_letters(message, table)) for name, message, table, _ in cases]
    assert got == [(name, want) for name, _, _, want in cases]
    # l= with more body than signed is DKIM_SUCCESS_BUT_EXTRA (4), shown as A
    report = peers.libdkim_verify_details(length + b"PS\r\n", k.table)
    assert (report.codes, report.signatures[0].name) == ([4], "DKIM_SUCCESS_BUT_EXTRA")
    # no signature at all: DKIMVerifyProcess says DKIM_NO_SIGNATURES (-13, N)
    unsigned = peers.libdkim_verify_details(MESSAGE, k.table)
    assert (unsigned.process, unsigned.overall) == (-13, 3)


def test_letter_is_a_minus_code() -> None:
    assert [peers.letter(c) for c in (0, -1, -15, -17, -18, 4)] == ["A", "B", "P", "R", "S", "A"]


# --- key-table special values ------------------------------------------------------


def test_special_values(test_keys: Keys) -> None:
    signed = _quail_sign(MESSAGE, test_keys.rsa)
    servfail = _with(test_keys.table, "~~SERVFAIL~~")
    nxdomain = _with(test_keys.table, "NXDOMAIN")
    for name in ("mail_dkim", "dkimpy"):
        with skip_missing():
            assert VERIFIERS[name](signed, servfail).words == ["temperror"], name
            assert VERIFIERS[name](signed, nxdomain).words == ["permerror"], name
    with skip_missing():
        # OpenDKIM calls a missing key "fail" (reason "key not found in DNS")
        missing = peers.opendkim_verify(signed, nxdomain)
        assert missing.words == ["fail"]
        assert "key not found" in missing.signatures[0].details
        with pytest.raises(peers.PeerUnsupported):
            peers.opendkim_verify(signed, servfail)
        # a SERVFAIL entry for a name no signature asks for is harmless
        other = {**test_keys.table, "other._domainkey.example.com": "~~SERVFAIL~~"}
        assert peers.opendkim_verify(signed, other).words == ["pass"]


def test_unsigned_message_is_none(test_keys: Keys) -> None:
    for name, verify in VERIFIERS.items():
        with skip_missing():
            verdict = verify(MESSAGE, test_keys.table)
            assert (verdict.word, verdict.signatures) == ("none", ()), name


def test_opendkim_unusable_signature_is_permerror() -> None:
    """A d= that is no domain: OpenDKIM accepts at end of header, no verdict."""
    folder = DATA / "dkimpy"
    message = (folder / "data" / "test.message.baddomain").read_bytes()
    with skip_missing():
        verdict = peers.opendkim_verify(message, peers.load_keytable(folder / "keys.dns"))
    assert verdict.words == ["permerror"]


# --- Mail::DKIM and OpenDKIM through a real resolver on loopback --------------------------------


class TinyDns:
    """Just enough of an authoritative server for Net::DNS and libunbound: TXT
    from a key table over UDP on 127.0.0.1 (the project's loopback test DNS
    server, being built beside this, will replace it)."""

    def __init__(self, table: dict[str, str]) -> None:
        self.table = {k.lower(): v for k, v in table.items()}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                wire, addr = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(wire)
            reply = dns.message.make_response(query)
            reply.flags |= dns.flags.AA
            question = query.question[0]
            name = question.name.to_text().rstrip(".").lower()
            value = self.table.get(name)
            if value is None or value == "NXDOMAIN":
                reply.set_rcode(dns.rcode.NXDOMAIN)
            elif value.startswith("~~"):
                reply.set_rcode(dns.rcode.SERVFAIL)
            elif question.rdtype == dns.rdatatype.TXT:
                strings = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
                text = " ".join('"' + s.replace('"', '\\"') + '"' for s in strings)
                reply.answer.append(
                    dns.rrset.from_text(question.name, 60, dns.rdataclass.IN, "TXT", text)
                )
            self.sock.sendto(reply.to_wire(), addr)

    def __enter__(self) -> TinyDns:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def tiny_dns(test_keys: Keys) -> Iterator[TinyDns]:
    table = {**test_keys.table, f"temp._domainkey.{DOMAIN}": "~~SERVFAIL~~"}
    with TinyDns(table) as server:
        yield server


@pytest.mark.parametrize(
    ("verify", "missing"),
    [(peers.mail_dkim_verify, "permerror"), (peers.opendkim_verify, "fail")],
    ids=["mail_dkim", "opendkim"],
)
def test_over_loopback_dns(
    verify: Callable[..., Verdict], missing: str, tiny_dns: TinyDns, test_keys: Keys
) -> None:
    signed = _quail_sign(MESSAGE, test_keys.rsa)
    temp = _quail_sign(MESSAGE, test_keys.rsa, selector="temp")
    gone = _quail_sign(MESSAGE, test_keys.rsa, selector="gone")
    with skip_missing():
        assert verify(signed, dns_port=tiny_dns.port).words == ["pass"]
        assert verify(temp, dns_port=tiny_dns.port).words == ["temperror"]
        assert verify(gone, dns_port=tiny_dns.port).words == [missing]


# --- missing peers skip, they do not fail --------------------------------------------


def test_missing_programs_raise_peer_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, test_keys: Keys
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    for call in (
        lambda: peers.opendkim_verify(MESSAGE, {}),
        lambda: peers.opendkim_sign(MESSAGE, test_keys.rsa_path, "rsa", DOMAIN),
        lambda: peers.mail_dkim_verify(MESSAGE, {}),
        lambda: peers.mail_dkim_sign(MESSAGE, test_keys.rsa_path, "rsa", DOMAIN),
    ):
        with pytest.raises(peers.PeerMissing):
            call()


def test_missing_libdkim_raises_peer_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(peers.libdkim, "LIBDKIM_A", tmp_path / "libdkim.a")
    with pytest.raises(peers.PeerMissing, match="libdkim-dev"):
        peers.libdkim_verify(MESSAGE, {})


def test_skip_missing_turns_into_skip() -> None:
    with pytest.raises(pytest.skip.Exception, match="not here"), skip_missing():
        raise peers.PeerMissing("not here")
