"""DKVERIFY end to end: `quail serve`, tcprules compiled by `quail tcprules`,
keys on the loopback DNS server, messages signed by quail's own signer and
by dkimpy, each DKVERIFY letter class (upper, lower, absent, empty)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from quailmail.auth.dkim import sign_dkim
from quailmail.auth.domainkeys import sign_domainkeys
from quailmail.auth.keys import PrivateKey, generate, private_key_pem, record_value
from quailmail.auth.message import parse_message
from quailmail.dns.zone import Fault
from quailmail.dns.zoneserver import ZoneServer

from peers.dkimpy_peer import dkimpy_sign
from policysmtp import (
    by_subject,
    compile_rules,
    fields,
    proxied,
    queued,
    results_without_dmarc,
    transaction,
    trust_proxy,
)
from serverfixtures import Running

RCPT = "postmaster@mx.test"
DOMAIN = "signer.test"

RULES = """\
# proxied client addresses, one DKVERIFY each
192.0.2.1:allow,DKVERIFY="DEGIJKfh,CGHIJMQRkl"
192.0.2.2:allow,DKVERIFY="B,P"
192.0.2.3:allow,DKVERIFY=",P"
192.0.2.4:allow,DKVERIFY="b,p"
192.0.2.5:allow,DKVERIFY="b,P"
192.0.2.6:allow,DKVERIFY=""
192.0.2.7:allow,DKVERIFY="BC"
192.0.2.8:allow,DKVERIFY="P"
192.0.2.9:allow,DKVERIFY=",k"
192.0.2.10:allow,RELAYCLIENT="",DKVERIFY="BC,NP"
192.0.2.11:allow
127.0.0.5:allow,DKVERIFY="BC,NP",AUTH_UNSET_DKVERIFY=""
127.0.0.6:allow,DKVERIFY="BC,NP"
:allow
"""


@dataclass
class Keys:
    key: PrivateKey
    path: Path


@pytest.fixture
def keys(tmp_path: Path, dns_server: ZoneServer) -> Keys:
    key = generate("rsa", 1024)
    path = tmp_path / "default"
    path.write_bytes(private_key_pem(key))
    zone = dns_server.zone
    zone.add_txt(f"default._domainkey.{DOMAIN}", record_value(key))
    zone.add_txt(f"flaky._domainkey.{DOMAIN}", record_value(key))
    zone.set_fault(f"flaky._domainkey.{DOMAIN}", Fault.SERVFAIL)
    return Keys(key, path)


@pytest.fixture
def server(
    server_factory: Callable[..., Running], dns_server: ZoneServer, keys: Keys
) -> Iterator[Running]:
    def setup(root: Path) -> None:
        trust_proxy(root)
        (root / "control" / "dnsservers").write_text(dns_server.spec + "\n")
        (root / "control" / "authloopback").write_text("1\n")
        compile_rules(root, RULES)

    yield server_factory(setup)


def plain(subject: str) -> bytes:
    return (
        f"From: Joe <joe@{DOMAIN}>\r\nTo: {RCPT}\r\nSubject: {subject}\r\n"
        f"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <{abs(hash(subject))}@{DOMAIN}>\r\n"
        "\r\nHello.\r\n"
    ).encode()


def signed(keys: Keys, subject: str, selector: str = "default") -> bytes:
    raw = plain(subject)
    message = parse_message(raw)
    dkim = sign_dkim(message, keys.key, selector=selector, domain=DOMAIN)
    dk = sign_domainkeys(message, keys.key, selector=selector, domain=DOMAIN)
    return dkim + dk + raw


def crafted(keys: Keys, kind: str, subject: str) -> bytes:
    if kind == "good":
        return signed(keys, subject)
    if kind == "badbody":
        return signed(keys, subject).replace(b"Hello.", b"Hello!")
    if kind == "unsigned":
        return plain(subject)
    if kind == "flaky":
        return signed(keys, subject, selector="flaky")
    if kind == "peer":  # dkimpy's DKIM-Signature only
        return dkimpy_sign(plain(subject), keys.path, "default", DOMAIN)
    raise AssertionError(kind)


def send(server: Running, client_ip: str, keys: Keys, kind: str) -> tuple[int, str]:
    subject = f"{client_ip} {kind}"
    with proxied(server.smtp, client_ip) as client:
        out = transaction(client, f"joe@{DOMAIN}", [RCPT], crafted(keys, kind, subject))
    assert out.data is not None, out
    return out.data


# (client, message kind) -> (code, start of the text) for refusals
REFUSED = {
    ("192.0.2.1", "flaky"): (451, "4.7.0 DomainKeys DK_STAT_CANTVRFY (no key):"),
    ("192.0.2.2", "badbody"): (554, "5.7.5 DomainKeys DK_STAT_BADSIG (bad):"),
    ("192.0.2.3", "badbody"): (554, "5.7.20 DKIM BAD BODY HASH (status P):"),
    ("192.0.2.4", "badbody"): (451, "4.7.5 DomainKeys DK_STAT_BADSIG (bad):"),
    ("192.0.2.5", "badbody"): (554, "5.7.20 DKIM BAD BODY HASH (status P):"),
    ("192.0.2.7", "badbody"): (554, "5.7.5 DomainKeys DK_STAT_BADSIG (bad):"),
    ("192.0.2.7", "unsigned"): (554, "5.7.5 DomainKeys DK_STAT_NOSIG (no signature):"),
    ("192.0.2.7", "peer"): (554, "5.7.5 DomainKeys DK_STAT_NOSIG (no signature):"),
    ("192.0.2.9", "flaky"): (451, "4.7.20 DKIM DNS TEMP FAIL (status K):"),
}
CLIENTS = [f"192.0.2.{n}" for n in range(1, 12)]
KINDS = ["good", "badbody", "unsigned", "flaky", "peer"]
# What the verifiers say of each kind: (domainkeys word, dkim word)
WORDS = {
    "good": ("pass", "pass"),
    "badbody": ("fail", "fail"),
    "unsigned": ("none", "none"),
    "flaky": ("temperror", "temperror"),
    "peer": ("none", "pass"),
}


def test_every_letter_class(server: Running, keys: Keys) -> None:
    for client_ip in CLIENTS:
        for kind in KINDS:
            code, text = send(server, client_ip, keys, kind)
            expected = REFUSED.get((client_ip, kind))
            if expected is None:
                assert code == 250, (client_ip, kind, text)
            else:
                assert (code, text[: len(expected[1])]) == expected, (client_ip, kind, text)
    messages = by_subject(queued(server.root))
    for client_ip in CLIENTS:
        for kind in KINDS:
            subject = f"{client_ip} {kind}"
            if (client_ip, kind) in REFUSED:
                assert subject not in messages
                continue
            results = results_without_dmarc(messages[subject])
            if client_ip in ("192.0.2.10", "192.0.2.11"):  # relay client, no DKVERIFY
                assert results == [], subject
                continue
            assert len(results) == 1, subject
            dk_word, dkim_word = WORDS[kind]
            assert results[0].startswith(f"mx.test; domainkeys={dk_word} ".encode()), results
            assert f"; dkim={dkim_word} ".encode() in results[0], results
    # qmail-dk's form (letters, no comma; not "": seed 001 runs that under
    # Brandon's patch) adds qmail-dk's DomainKey-Status: field, its
    # "message tag" padded to 12 characters; Brandon's form does not.
    tags = {"good": b"good        ", "badbody": b"bad         ", "unsigned": b"no signature",
            "flaky": b"no key      ", "peer": b"no signature"}  # fmt: skip
    for client_ip in CLIENTS:
        for kind in KINDS:
            message = messages.get(f"{client_ip} {kind}")
            if message is None:
                continue
            status = [raw for raw in _raw_fields(message, b"DomainKey-Status")]
            if client_ip in ("192.0.2.7", "192.0.2.8"):  # letters, no comma
                assert status == [b"DomainKey-Status: " + tags[kind]], (client_ip, kind, status)
            else:
                assert status == [] and fields(message, b"DomainKey-Status") == [], client_ip
    good = results_without_dmarc(messages["192.0.2.6 good"])[0].decode()
    # the seeds' form, with the signature's properties (RFC 8601, RFC 6008)
    assert good.startswith(f"mx.test; domainkeys=pass (ok) header.d={DOMAIN} header.s=default")
    assert f"; dkim=pass (ok) header.d={DOMAIN} header.s=default header.b=" in good


def _raw_fields(message: bytes, name: bytes) -> list[bytes]:
    """The header's `name` fields as written (trailing blanks kept)."""
    header = message.split(b"\r\n\r\n", 1)[0]
    prefix = name.lower() + b":"
    return [line for line in header.split(b"\r\n") if line.lower().startswith(prefix)]


def test_auth_unset_dkverify(server: Running, keys: Keys) -> None:
    added = server.quail("user", "add", "joe@signer.test", "--password-stdin", stdin=b"pw-2\n")
    assert added.returncode == 0, added.stderr
    for client_ip, verified in (("127.0.0.5", False), ("127.0.0.6", True)):
        with proxied(server.smtp, client_ip) as client:
            out = transaction(client, "joe@signer.test", [RCPT], plain(f"{client_ip} anon"))
            assert out.data is not None and out.data[0] == 554  # not authenticated: verified
            client.login("joe@signer.test", "pw-2")
            out = transaction(client, "joe@signer.test", [RCPT], plain(f"{client_ip} auth"))
            assert out.data is not None
            if verified:
                assert out.data[0] == 554 and "DK_STAT_NOSIG" in out.data[1]
            else:
                assert out.data[0] == 250
    message = by_subject(queued(server.root))["127.0.0.5 auth"]
    assert results_without_dmarc(message) == []
