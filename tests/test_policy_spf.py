"""spfbehavior end to end: a real `quail serve`, the loopback DNS server,
clients presented through the PROXY protocol as outside addresses."""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from pathlib import Path

import pytest

from quailmail.auth.spf.record import parse_explanation
from quailmail.config.control import Control
from quailmail.dns.resolver import DnsResolver
from quailmail.dns.zone import Fault
from quailmail.dns.zoneserver import ZoneServer
from quailmail.policy.base import Client
from quailmail.policy.spf import local_policy, parse_level, qmail_spf_explanation

from policysmtp import (
    by_subject,
    compile_rules,
    fields,
    proxied,
    put,
    queued,
    results_without_dmarc,
    transaction,
    trust_proxy,
)
from serverfixtures import Running

CLIENT = "198.51.100.10"
CLIENT6 = "2001:db8::10"
RCPT = "postmaster@mx.test"

# domain -> (record or None, the SPF result for CLIENT)
DOMAINS: dict[str, tuple[str | None, str]] = {
    "pass.test": (f"v=spf1 ip4:{CLIENT} ip6:{CLIENT6} -all", "pass"),
    "fail.test": ("v=spf1 ip4:192.0.2.1 -all", "fail"),
    "softfail.test": ("v=spf1 ip4:192.0.2.1 ~all", "softfail"),
    "neutral.test": ("v=spf1 ip4:192.0.2.1 ?all", "neutral"),
    "none.test": (None, "none"),
    "permerror.test": ("v=spf1 ip4:192.0.2.1 include:none.test -all", "permerror"),
    "temperror.test": ("v=spf1 -all", "temperror"),  # its TXT answers SERVFAIL
}
# What each level refuses at RCPT; temperror gets 451 at MAIL from level 2.
REFUSED = {
    0: set(),
    1: set(),
    2: set(),
    3: {"fail"},
    4: {"fail", "softfail"},
    5: {"fail", "softfail", "neutral"},
    6: {"fail", "softfail", "neutral", "none", "permerror"},
}


@pytest.mark.parametrize(
    ("text", "level"),
    [
        (None, 0), ("", 0), ("3", 3), (" 4\n", 4), ("3x", 3), ("x3", 0), ("-3", 0),
        ("99", 6), ("0" * 5000 + "2", 2),
        ("9" * 5000, 6),  # past int()'s 4300 digits: above 6, not a traceback
        ("\u0663", 0),  # scan_ulong reads ASCII digits only
    ],
)  # fmt: skip
def test_spfbehavior_is_read_as_qmail_reads_it(text: str | None, level: int) -> None:
    assert parse_level(text) == level


def publish(server: ZoneServer) -> None:
    zone = server.zone
    for domain, (record, _) in DOMAINS.items():
        zone.add_a(domain, "192.0.2.1")
        if record is not None:
            zone.add_txt(domain, record)
    zone.set_fault("temperror.test", Fault.SERVFAIL, "TXT")


def spf_root(dns: ZoneServer, **files: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        trust_proxy(root)
        control = root / "control"
        (control / "dnsservers").write_text(dns.spec + "\n")
        for name, text in files.items():
            (control / name).write_text(text)

    return setup


def message(subject: str) -> bytes:
    return f"From: a@example.org\r\nTo: {RCPT}\r\nSubject: {subject}\r\n\r\nbody\r\n".encode()


def test_every_level_against_every_result(
    server_factory: Callable[..., Running], dns_server: ZoneServer
) -> None:
    publish(dns_server)
    server = server_factory(spf_root(dns_server))
    behavior = server.root / "control" / "spfbehavior"
    for level in range(7):
        put(behavior, f"{level}\n")
        for domain, (_, result) in DOMAINS.items():
            with proxied(server.smtp, CLIENT) as client:
                out = transaction(client, f"joe@{domain}", [RCPT], message(f"{level} {domain}"))
            where = f"level {level}, {result}"
            if result == "temperror" and level >= 2:
                assert out.mail[0] == 451, where
                # qmail-spf's words: which name, which server is for the log only
                assert out.mail[1] == "4.3.0 SPF lookup failure", where
                continue
            assert out.mail[0] == 250, where
            if result in REFUSED[level]:
                ((code, text),) = out.rcpt
                assert (code, text[:5]) == (550, "5.7.1"), where
                assert out.data is None
            else:
                assert out.accepted, where
    messages = by_subject(queued(server.root))
    for level in range(7):
        for domain, (_, result) in DOMAINS.items():
            subject = f"{level} {domain}"
            if result in REFUSED[level] or (result == "temperror" and level >= 2):
                assert subject not in messages
                continue
            queued_message = messages[subject]
            received_spf = fields(queued_message, b"Received-SPF")
            results = results_without_dmarc(queued_message)
            if level == 0:
                assert received_spf == [] and results == []
                continue
            assert len(received_spf) == 1
            assert received_spf[0].startswith(f"{result} (mx.test: ".encode())
            assert f"client-ip={CLIENT};".encode() in received_spf[0]
            assert len(results) == 1
            assert results[0].startswith(f"mx.test; spf={result} (".encode())
            assert f"smtp.mailfrom=joe@{domain}".encode() in results[0]
            # Received-SPF and Authentication-Results above our Received:,
            # folded to lines of at most 78 characters (RFC 5322 §2.1.1).
            top = queued_message.split(b"\r\n")
            header_lines = top[: top.index(b"")]
            assert max(len(line) for line in header_lines) <= 78, header_lines
            names = [line.split(b":")[0] for line in top if line and line[:1] not in b" \t"]
            assert names.index(b"Received-SPF") < names.index(b"Received")


def test_fail_is_refused_at_every_rcpt_with_the_explanation(
    server_factory: Callable[..., Running], dns_server: ZoneServer
) -> None:
    publish(dns_server)
    zone = dns_server.zone
    zone.add_txt("explained.test", "v=spf1 ip4:192.0.2.1 exp=why.explained.test -all")
    zone.add_txt("why.explained.test", "%{i} is not a mail server of %{d}")
    server = server_factory(
        spf_root(dns_server, spfbehavior="3\n", spfexp="See the policy of %{o}, %{c} refused")
    )
    with proxied(server.smtp, CLIENT) as client:
        out = transaction(client, "joe@fail.test", [RCPT, "root@mx.test"], message("x"))
        assert out.mail[0] == 250  # qmail-spf answers MAIL, refuses at RCPT
        assert out.rcpt == [(550, "5.7.1 See the policy of fail.test, 198.51.100.10 refused")] * 2
        out = transaction(client, "joe@explained.test", [RCPT], message("y"))
        assert out.rcpt == [(550, "5.7.1 198.51.100.10 is not a mail server of explained.test")]
        # a new MAIL FROM starts over: the next sender passes
        out = transaction(client, "joe@pass.test", [RCPT], message("z"))
        assert out.accepted
    with proxied(server.smtp, CLIENT6) as client:  # IPv6 client, as presented
        assert transaction(client, "joe@pass.test", [RCPT], message("v6")).accepted
        out = transaction(client, "joe@fail.test", [RCPT], message("v6 fail"))
        assert out.rcpt[0][0] == 550
    v6 = by_subject(queued(server.root))["v6"]
    assert f'client-ip="{CLIENT6}";'.encode() in fields(v6, b"Received-SPF")[0]


def test_qmail_spf_explanations_and_where_the_refusal_comes(
    server_factory: Callable[..., Running], dns_server: ZoneServer
) -> None:
    publish(dns_server)
    # qmail-spf's own default spfexp: its %{xR} and URL-escaped letters.
    qmail_default = "See http://spf.pobox.com/why.html?sender=%{S}&ip=%{I}&receiver=%{xR}"
    server = server_factory(spf_root(dns_server, spfbehavior="6\n", spfexp=qmail_default + "\n"))
    spfexp = server.root / "control" / "spfexp"
    with proxied(server.smtp, CLIENT) as client:
        out = transaction(client, "joe@fail.test", [RCPT], message("x"))
    assert out.rcpt == [
        (550, "5.7.1 See http://spf.pobox.com/why.html?sender=joe%40fail.test"
              "&ip=198.51.100.10&receiver=mx.test")
    ]  # fmt: skip
    # Every refused result gets the explanation, as in qmail-spf; a % that
    # starts no macro is itself, and %{xs} names the record.
    put(spfexp, "100% sure: %{xs} refused %{l} (%{xe})\n")
    for domain in ("fail.test", "softfail.test", "neutral.test", "none.test"):
        with proxied(server.smtp, CLIENT) as client:
            out = transaction(client, f"joe@{domain}", [RCPT], message(domain))
        assert out.rcpt == [(550, f"5.7.1 100% sure: SPF record at {domain} refused joe ()")]
    # Before rcpthosts and the recipient checks, as qmail-spf's flagbarfspf:
    # a recipient we would not take anyway hears of SPF.
    with proxied(server.smtp, CLIENT) as client:
        out = transaction(client, "joe@fail.test", ["someone@elsewhere.example"], message("r"))
    assert out.rcpt[0][0] == 550 and "100% sure" in out.rcpt[0][1]


@pytest.mark.parametrize(
    ("spfexp", "explain_string"),
    [
        ("plain text", "plain text"),
        ("100% sure", "100%% sure"),
        ("%{xr} %{xR} %{xs} %{xS} %{xe}", "%{r} %{R} SPF record at %{d} SPF%-record%-at%-%{D} "),
        ("%{q} unknown letter, %{d", " unknown letter, %%{d"),
        ("%{d2r} %_%-%%", "%{d2r} %_%-%%"),
        ("caf\xe9\tx", "caf??x"),
    ],
)
def test_spfexp_is_read_as_qmail_spf_reads_it(spfexp: str, explain_string: str) -> None:
    converted = qmail_spf_explanation(spfexp)
    assert converted == explain_string
    parse_explanation(converted)  # always an RFC 7208 explain-string


def test_variable_wins_and_trusted_clients_are_not_checked(
    server_factory: Callable[..., Running], dns_server: ZoneServer
) -> None:
    publish(dns_server)
    server = server_factory(spf_root(dns_server, spfbehavior="1\n"))
    compile_rules(
        server.root,
        '198.51.100.10:allow,SPFBEHAVIOR="6"\n'
        '198.51.100.11:allow,SPFBEHAVIOR="0"\n'
        '198.51.100.12:allow,RELAYCLIENT="",SPFBEHAVIOR="6"\n'
        ":allow\n",
    )
    with proxied(server.smtp, "198.51.100.10") as client:
        out = transaction(client, "joe@neutral.test", [RCPT], message("strict"))
        assert out.rcpt[0][0] == 550 and "SPF neutral" in out.rcpt[0][1]
    with proxied(server.smtp, "198.51.100.11") as client:
        assert transaction(client, "joe@fail.test", [RCPT], message("off")).accepted
    with proxied(server.smtp, "198.51.100.12") as client:  # a relay client
        assert transaction(client, "joe@fail.test", [RCPT], message("relay")).accepted
    with proxied(server.smtp, "198.51.100.13") as client:  # control/spfbehavior: 1
        assert transaction(client, "joe@fail.test", [RCPT], message("file")).accepted
    messages = by_subject(queued(server.root))
    assert fields(messages["off"], b"Received-SPF") == []
    assert fields(messages["relay"], b"Received-SPF") == []
    assert fields(messages["file"], b"Received-SPF")[0].startswith(b"fail ")


def test_authenticated_clients_are_not_checked(
    server_factory: Callable[..., Running], dns_server: ZoneServer
) -> None:
    publish(dns_server)

    def setup(root: Path) -> None:
        spf_root(dns_server, spfbehavior="6\n", authloopback="1\n")(root)
        (root / "control" / "proxyfrom").unlink()
        compile_rules(root, ":allow\n")  # loopback is no relay client here

    server = server_factory(setup)
    added = server.quail("user", "add", "joe@fail.test", "--password-stdin", stdin=b"pw-1\n")
    assert added.returncode == 0, added.stderr
    with smtplib.SMTP("::1", server.smtp, timeout=20) as client:
        out = transaction(client, "joe@fail.test", [RCPT], message("anon"))
        assert out.rcpt[0][0] == 550  # ::1 is not in fail.test's record
        client.login("joe@fail.test", "pw-1")
        assert transaction(client, "joe@fail.test", [RCPT], message("authed")).accepted
    assert fields(by_subject(queued(server.root))["authed"], b"Received-SPF") == []


def test_spfrules_and_spfguess_from_control(
    server_factory: Callable[..., Running], dns_server: ZoneServer
) -> None:
    publish(dns_server)
    dns_server.zone.add_txt("forwarders.test", f"v=spf1 ip4:{CLIENT} -all")
    dns_server.zone.add_a("guessed.test", CLIENT)
    server = server_factory(
        spf_root(
            dns_server,
            spfbehavior="6\n",
            spfrules="# trusted forwarders\ninclude:forwarders.test\n",
            spfguess="a -all\n",
        )
    )
    with proxied(server.smtp, CLIENT) as client:
        assert transaction(client, "joe@fail.test", [RCPT], message("forwarded")).accepted
        assert transaction(client, "joe@guessed.test", [RCPT], message("guessed")).accepted
        out = transaction(client, "joe@none.test", [RCPT], message("not guessed"))
        assert out.rcpt[0][0] == 550  # none.test's A is not the client: the guess fails
    messages = by_subject(queued(server.root))
    forwarded = fields(messages["forwarded"], b"Received-SPF")[0]
    assert b'mechanism="include:forwarders.test"' in forwarded
    assert b"mechanism=a;" in fields(messages["guessed"], b"Received-SPF")[0]


@pytest.mark.parametrize("bad", ["include:", "redirect=x.test"])
def test_broken_spfrules_are_ignored_with_a_warning(
    server_factory: Callable[..., Running], dns_server: ZoneServer, bad: str
) -> None:
    publish(dns_server)
    server = server_factory(spf_root(dns_server, spfbehavior="3\n", spfrules=bad + "\n"))
    with proxied(server.smtp, CLIENT) as client:
        out = transaction(client, "joe@fail.test", [RCPT], message("x"))
        assert out.rcpt[0][0] == 550
        assert transaction(client, "joe@pass.test", [RCPT], message("y")).accepted
    server.stop()
    assert "spfrules" in server.log_path.read_text()


def test_local_policy_files_are_parsed_once_per_version(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "control").mkdir()
    control = Control(tmp_path)
    client = Client(tmp_path, control, DnsResolver([("127.0.0.1", 9)]), "mx.test", CLIENT, {})
    assert local_policy(client) is None  # neither file
    (tmp_path / "control" / "spfrules").write_text("# forwarders\ninclude:forwarders.test\n")
    first, again = local_policy(client), local_policy(client)
    assert first is not None and again is not None
    assert [m.kind for m in first.rules] == ["include"] and first.guess == ()
    assert again.rules is first.rules  # the file's parse was kept, not redone
    (tmp_path / "control" / "spfguess").write_text("a -all\n")
    both = local_policy(client)
    assert both is not None and both.rules is first.rules
    assert [m.kind for m in both.guess] == ["a", "all"]
    # A broken file is ignored with a warning once per version; the other counts.
    (tmp_path / "control" / "spfrules").write_text("include:\n")
    with caplog.at_level("WARNING", logger="quailmail.policy"):
        broken = local_policy(client)
        local_policy(client)
    assert broken is not None and broken.rules == () and broken.guess == both.guess
    warned = [r.getMessage() for r in caplog.records if "control/spfrules" in r.getMessage()]
    assert len(warned) == 1, warned
