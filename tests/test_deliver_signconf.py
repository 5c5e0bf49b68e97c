"""control/dkim/signconf.xml: QmailToaster's per-domain signing, parsed as
the seeds write it, signed, and every signature verified -- by quailmail
over the loopback DNS server, and by dkimpy and Mail::DKIM."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quailmail.auth.dkim import verify_dkim
from quailmail.auth.domainkeys import DkStatus, verify_domainkeys
from quailmail.auth.keys import PrivateKey, generate, private_key_pem, record_value
from quailmail.auth.message import parse_message
from quailmail.deliver.dksign import Signed
from quailmail.deliver.signconf import (
    SignConf,
    SignConfError,
    SignSpec,
    parse_signconf,
    sign_outgoing,
    sign_with_signconf,
    split_fields,
)
from quailmail.dns.resolver import DnsResolver
from quailmail.dns.zoneserver import ZoneServer

import peers
from peers import skip_missing

# The seed (003_*, "DKIM signconf.xml"), byte for byte, and its per-domain element.
SEED_GLOBAL = b"""<dkimsign>
  <global algorithm="rsa-sha1" domain="/var/qmail/control/me" keyfile="/var/qmail/control/dkim/global.key" method="simple" selector="dkim1">
    <types id="dkim" />
  </global>
</dkimsign>
"""  # noqa: E501 - the seed's line
SEED_DOMAIN = b"""<sample.com domain="sample.com" selector="default">
  <types id="dkim" />
  <types id="domainkey" method="nofws" />
</sample.com>
"""

MESSAGE = (
    b"From: Joe <joe@bar.sample.com>\r\nTo: x@example.org\r\nSubject: s\r\n"
    b"Date: Fri, 11 Jul 2003 21:00:37 -0700\r\nMessage-ID: <1@bar.sample.com>\r\n"
    b"\r\nbody\r\n\r\n"
)
OTHER = MESSAGE.replace(b"bar.sample.com", b"other.org")


def test_parse_the_seeds_global() -> None:
    conf = parse_signconf(SEED_GLOBAL)
    assert conf == SignConf(
        global_rule=(
            SignSpec(
                type="dkim",
                keyfile="/var/qmail/control/dkim/global.key",
                domain="/var/qmail/control/me",
                selector="dkim1",
                canon="simple",
            ),
        ),
        domains={},
    )


def test_parse_the_seeds_domain_element() -> None:
    """The element inherits the global keyfile; `method` on a <types> is its own."""
    conf = parse_signconf(SEED_GLOBAL.replace(b"</dkimsign>", SEED_DOMAIN + b"</dkimsign>"))
    keyfile = "/var/qmail/control/dkim/global.key"
    assert conf.domains == {
        "sample.com": (
            SignSpec("dkim", keyfile, "sample.com", "default", "simple"),
            SignSpec("domainkey", keyfile, "sample.com", "default", "nofws"),
        )
    }
    assert conf.rule_for("sample.com")[0] == "sample.com"
    assert conf.rule_for("bar.sample.com")[0] == "sample.com"  # parent domain
    assert conf.rule_for("other.org")[0] == "global"
    assert conf.rule_for(None)[0] == "global"
    assert conf.rule_for("com")[0] == "global"


def test_parse_defaults_and_inheritance() -> None:
    """qmail-dkim's built-in global; <global> without <types> keeps its dkim;
    a domain element without <types> signs nothing."""
    conf = parse_signconf(
        b'<?xml version="1.0" encoding="UTF-8"?>\n<!-- comment -->\n<dkimsign>'
        b'<global selector="s1"/><quiet.example/>'
        b'<loud.example method="relaxed/relaxed" keyfile="k/%">'
        b'<types id="dkim" selector="ed" keyfile="ed.key" algorithm="ed25519-sha256"/>'
        b'<types id="domainkey" headers="x-a"/>'
        b"</loud.example>"
        b'<off.example><types id="none"/></off.example></dkimsign>'
    )
    assert conf.global_rule == (SignSpec("dkim", "dkim/global.key", "./me", "s1", "simple"),)
    assert conf.domains["quiet.example"] == ()
    assert conf.domains["off.example"] == ()
    assert conf.domains["loud.example"] == (
        SignSpec("dkim", "ed.key", "./me", "ed", "relaxed/relaxed"),
        SignSpec("domainkey", "k/%", "./me", "s1", "nofws", headers=("x-a",)),
    )
    empty = parse_signconf(b"<dkimsign/>")
    assert empty.global_rule == (SignSpec("dkim", "dkim/global.key", "./me", "beta", "simple"),)


@pytest.mark.parametrize(
    ("xml", "words"),
    [
        (b"<dkimsign><global>", "not well-formed"),
        (b"<dkimsig/>", "not <dkimsign>"),
        (b'<dkimsign><global selectr="x"/></dkimsign>', "unknown attribute 'selectr'"),
        (b'<dkimsign><a.example><types id="dkin"/></a.example></dkimsign>', "not dkim"),
        (b"<dkimsign><a.example/><A.example/></dkimsign>", "appears twice"),
        (b"<dkimsign><global/><global/></dkimsign>", "<global> appears twice"),
        (b"<dkimsign><localhost/></dkimsign>", "neither <global> nor a domain"),
        (b'<dkimsign><types id="dkim"/></dkimsign>', "belongs inside"),
        (b"<dkimsign><a.example><key/></a.example></dkimsign>", "only <types>"),
        (b'<dkimsign><global method="nowsp"/></dkimsign>', "unknown method"),
        (b'<dkimsign><global algorithm="rsa-md5"/></dkimsign>', "unknown algorithm"),
        (b'<dkimsign><global selector="a b"/></dkimsign>', "not a DNS label"),
        (b'<dkimsign><global domain="a..b"/></dkimsign>', "neither a domain name nor a file"),
        (b'<dkimsign><global domain="me"/></dkimsign>', "is written ./me"),
        (b'<dkimsign><global identity="joe"/></dkimsign>', "no @domain"),
        (b'<dkimsign><global expiration="soon"/></dkimsign>', "Unix time"),
        (b'<dkimsign><global query="http"/></dkimsign>', "dns/txt"),
        (
            b'<dkimsign><global><types id="none"/><types id="dkim"/></global></dkimsign>',
            "cannot be combined",
        ),
        (
            b'<dkimsign><global><types id="domainkey"/><types id="domainkey" selector="b"/>'
            b"</global></dkimsign>",
            'one <types id="domainkey"> at most',
        ),
        (
            b'<dkimsign><global><types id="dkim"/><types id="dkim" keyfile="x"/>'
            b"</global></dkimsign>",
            "two dkim signatures with selector beta",
        ),
        (b'<dkimsign xmlns="urn:x"/>', "namespaced element"),
        ("<dkimsign/>".encode("utf-16"), "not UTF-8"),
    ],
)
def test_parse_errors_are_one_clear_line(xml: bytes, words: str) -> None:
    with pytest.raises(SignConfError) as caught:
        parse_signconf(xml)
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "xml",
    [
        b'<!DOCTYPE dkimsign [<!ENTITY a "aaaa">]><dkimsign><global selector="&a;"/></dkimsign>',
        b'<!DOCTYPE dkimsign SYSTEM "file:///etc/passwd"><dkimsign/>',
        b'<?xml version="1.0"?>\n<!doctype dkimsign><dkimsign/>',
        b"<dkimsign><!ENTITY x 'y'></dkimsign>",
    ],
)
def test_dtds_and_entities_are_refused(xml: bytes) -> None:
    with pytest.raises(SignConfError, match="DTD or entity declaration"):
        parse_signconf(xml)


PIECES = [
    "<dkimsign>", "</dkimsign>", "<global", "</global>", "<sample.com", "</sample.com>",
    "<types", "/>", ">", ' id="dkim"', ' id="domainkey"', ' id="none"', ' id="x"',
    ' selector="s"', ' domain="%"', ' domain="./me"', ' method="nofws"', ' keyfile="k/%"',
    ' algorithm="ed25519-sha256"', ' headers="a:b"', ' expiration="1"', " x=\"1\"",
    "&amp;", "&a;", "<!--", "-->", "<![CDATA[", "]]>", "\u00e9", "\x00", " ",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=30) | st.binary(max_size=200))
def test_parser_answers_any_input_with_a_conf_or_one_clear_line(xml: list[str] | bytes) -> None:
    data = xml if isinstance(xml, bytes) else "".join(xml).encode("utf-8")
    try:
        conf = parse_signconf(data)
    except SignConfError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(conf, SignConf)


# -- signing ------------------------------------------------------------------------


class Keys:
    def __init__(self) -> None:
        self.rsa = generate("rsa", 1024)
        self.rsa2 = generate("rsa", 1024)
        self.ed = generate("ed25519")


@pytest.fixture(scope="module")
def k() -> Keys:
    return Keys()


@pytest.fixture
def control(tmp_path: Path) -> Path:
    """ROOT/control with `me`, as `quail init` leaves it."""
    control = tmp_path / "control"
    (control / "dkim").mkdir(parents=True)
    (control / "me").write_text("mail.sample.com\n")
    return control


def put_key(path: Path, key: PrivateKey) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(private_key_pem(key))
    return path


def write_conf(control: Path, xml: str) -> None:
    (control / "dkim" / "signconf.xml").write_text(xml)


class Dns:
    """The loopback DNS server and the selector records published in it
    (the same table is handed to the in-process peers)."""

    def __init__(self, server: ZoneServer) -> None:
        self.server = server
        self.table: dict[str, str] = {}

    def publish(self, selector: str, domain: str, key: PrivateKey, *, dk: bool = False) -> None:
        name, value = f"{selector}._domainkey.{domain}", record_value(key, dkim=not dk)
        self.table[name] = value
        self.server.zone.add_txt(name, value)

    def dkim(self, message: bytes) -> list[tuple[str, str, str]]:
        """(d=, s=, status letter) of each DKIM-Signature, by quailmail's verifier."""
        resolver = DnsResolver(self.server.addresses, timeout=2)
        result = asyncio.run(verify_dkim(parse_message(message), resolver))
        return [(s.domain or "", s.selector or "", s.code) for s in result.signatures]

    def dk(self, message: bytes) -> DkStatus:
        resolver = DnsResolver(self.server.addresses, timeout=2)
        return asyncio.run(verify_domainkeys(parse_message(message), resolver)).status


@pytest.fixture
def dns(dns_server: ZoneServer) -> Dns:
    return Dns(dns_server)


@pytest.mark.parametrize(
    "domain_attr",
    ['domain="{control}/me"', 'domain="./me"', ""],
    ids=["absolute-path", "relative-path", "default"],
)
def test_global_signs_as_control_me(domain_attr: str, control: Path, k: Keys, dns: Dns) -> None:
    """The seed's global: d= is control/me's first word, rsa-sha1 signed as rsa-sha256."""
    put_key(control / "dkim" / "global.key", k.rsa)
    global_xml = SEED_GLOBAL.decode().replace(
        'domain="/var/qmail/control/me"', domain_attr.format(control=control)
    )
    write_conf(control, global_xml.replace("/var/qmail/control/", f"{control}/"))
    dns.publish("dkim1", "mail.sample.com", k.rsa)
    signed = sign_outgoing(MESSAGE, control)
    assert signed.temporary is None and signed.domain == "mail.sample.com"
    assert signed.key == control / "dkim" / "global.key"
    assert signed.fields.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=simple/simple;")
    assert signed.fields.count(b"DKIM-Signature:") == 1
    assert dns.dkim(signed.fields + MESSAGE) == [("mail.sample.com", "dkim1", "A")]


def test_per_domain_element_with_parent_fallback(control: Path, k: Keys, dns: Dns) -> None:
    """bar.sample.com finds <sample.com>; other.org gets the global rule."""
    put_key(control / "dkim" / "global.key", k.rsa)
    put_key(control / "domainkeys" / "sample.com" / "default", k.rsa2)
    conf = SEED_GLOBAL.replace(b"/var/qmail/control/", b"./").replace(
        b"</dkimsign>",
        SEED_DOMAIN.replace(
            b'selector="default"', b'selector="default" keyfile="domainkeys/%/default"'
        )
        + b"</dkimsign>",
    )
    write_conf(control, conf.decode())
    dns.publish("dkim1", "mail.sample.com", k.rsa)
    dns.publish("default", "sample.com", k.rsa2)

    signed = sign_outgoing(MESSAGE, control)
    assert signed.temporary is None and signed.domain == "sample.com"
    dkim, dk = split_fields(signed.fields)
    assert dkim.startswith(b"DKIM-Signature:") and b"d=sample.com; s=default;" in dkim
    assert dk.startswith(b"DomainKey-Signature: a=rsa-sha1; c=nofws;")
    message = signed.fields + MESSAGE
    assert dns.dkim(message) == [("sample.com", "default", "A")]
    assert dns.dk(message) is DkStatus.OK

    other = sign_outgoing(OTHER, control)
    assert other.domain == "mail.sample.com" and b"DomainKey-Signature" not in other.fields
    assert dns.dkim(other.fields + OTHER) == [("mail.sample.com", "dkim1", "A")]


TOGETHER = """<dkimsign>
  <global keyfile="dkim/global.key" selector="dkim1"><types id="none"/></global>
  <sample.com domain="sample.com" method="relaxed">
    <types id="dkim" keyfile="keys/%/rsa" selector="rsa" algorithm="rsa-sha256" />
    <types id="dkim" keyfile="keys/%/ed" selector="ed" algorithm="ed25519-sha256" />
    <types id="domainkey" keyfile="keys/%/rsa" selector="dk" method="nofws" />
  </sample.com>
</dkimsign>
"""


@pytest.fixture
def together(control: Path, k: Keys, dns: Dns) -> Path:
    write_conf(control, TOGETHER)
    put_key(control / "keys" / "sample.com" / "rsa", k.rsa)
    put_key(control / "keys" / "sample.com" / "ed", k.ed)
    dns.publish("rsa", "sample.com", k.rsa)
    dns.publish("ed", "sample.com", k.ed)
    dns.publish("dk", "sample.com", k.rsa, dk=True)
    return control


def test_rsa_and_ed25519_together_verify_everywhere(together: Path, dns: Dns) -> None:
    signed = sign_outgoing(MESSAGE, together)
    assert signed.temporary is None
    assert signed.fields.count(b"DKIM-Signature:") == 2
    assert signed.fields.count(b"DomainKey-Signature:") == 1
    dkim, dk = split_fields(signed.fields)
    assert b"a=rsa-sha256; c=relaxed/simple;" in dkim and b"a=ed25519-sha256;" in dkim
    assert dk.startswith(b"DomainKey-Signature:")
    message = signed.fields + MESSAGE
    assert dns.dkim(message) == [("sample.com", "rsa", "A"), ("sample.com", "ed", "A")]
    assert dns.dk(message) is DkStatus.OK
    with skip_missing():
        verdict = peers.dkimpy_verify(message, dns.table)
        assert [(s.algorithm, s.word) for s in verdict.signatures] == [
            ("rsa-sha256", "pass"),
            ("ed25519-sha256", "pass"),
        ]
    with skip_missing():
        # Debian's Mail::DKIM predates RFC 8463: its word on the ed25519
        # signature is not asked; the RSA one and the DomainKeys one must pass.
        verdict = peers.mail_dkim_verify(message, dns_port=dns.server.port)
        words = {(s.algorithm, s.selector): s.word for s in verdict.signatures}
        assert words[("rsa-sha256", "rsa")] == "pass"
        assert words[("rsa-sha1", "dk")] == "pass"
    altered = message.replace(b"body", b"Body")
    assert [code for _, _, code in dns.dkim(altered)] != ["A", "A"]
    with skip_missing():
        assert peers.dkimpy_verify(altered, dns.table).words == ["fail", "fail"]


def test_dksign_and_signconf_together(together: Path, k: Keys, dns: Dns) -> None:
    """DKIM fields first (signconf's, then dksign's); one DomainKey-Signature,
    right above the message: signconf's, dksign's being left out."""
    put_key(together / "domainkeys" / "sample.com" / "default", k.rsa2)
    (together / "dksign").write_text(f"{together}/domainkeys/%/default\n")
    dns.publish("default", "sample.com", k.rsa2)
    signed = sign_outgoing(MESSAGE, together)
    assert signed.temporary is None and signed.domain == "sample.com"
    assert signed.fields.count(b"DKIM-Signature:") == 3
    assert signed.fields.count(b"DomainKey-Signature:") == 1
    message = signed.fields + MESSAGE
    assert dns.dkim(message) == [
        ("sample.com", "rsa", "A"),
        ("sample.com", "ed", "A"),
        ("sample.com", "default", "A"),
    ]
    assert dns.dk(message) is DkStatus.OK
    with skip_missing():
        verdict = peers.mail_dkim_verify(message, dns_port=dns.server.port)
        words = [
            (s.selector, s.word) for s in verdict.signatures if s.algorithm != "ed25519-sha256"
        ]
        assert words == [("rsa", "pass"), ("default", "pass"), ("dk", "pass")]
    # Without signconf.xml, dksign alone signs both, as before.
    (together / "dkim" / "signconf.xml").unlink()
    alone = sign_outgoing(MESSAGE, together)
    assert alone.fields.count(b"DKIM-Signature:") == 1 and b"s=default;" in alone.fields
    assert dns.dk(alone.fields + MESSAGE) is DkStatus.OK


def test_dksign_domainkeys_stays_below_signconf_dkim(control: Path, k: Keys, dns: Dns) -> None:
    write_conf(
        control, '<dkimsign><global domain="%" keyfile="keys/%/rsa" selector="rsa"/></dkimsign>'
    )
    put_key(control / "keys" / "sample.com" / "rsa", k.rsa)
    put_key(control / "domainkeys" / "sample.com" / "default", k.rsa2)
    (control / "dksign").write_text(f"{control}/domainkeys/%/default\n")
    dns.publish("rsa", "sample.com", k.rsa)
    dns.publish("default", "sample.com", k.rsa2)
    signed = sign_outgoing(MESSAGE, control)
    assert signed.domain == "sample.com"  # `%` domain: the parent whose key exists
    dkim, dk = split_fields(signed.fields)
    assert dkim.count(b"DKIM-Signature:") == 2 and dk.count(b"DomainKey-Signature:") == 1
    message = signed.fields + MESSAGE
    assert dns.dkim(message) == [("sample.com", "rsa", "A"), ("sample.com", "default", "A")]
    assert dns.dk(message) is DkStatus.OK


# -- what keeps the message queued, and what sends it unsigned ----------------------------


def test_nothing_configured_sends_unsigned(control: Path) -> None:
    assert sign_outgoing(MESSAGE, control) == Signed()


def test_missing_keys_send_unsigned(together: Path, k: Keys, dns: Dns) -> None:
    (together / "keys" / "sample.com" / "ed").unlink()
    signed = sign_outgoing(MESSAGE, together)  # the Ed25519 signature is skipped
    assert signed.fields.count(b"DKIM-Signature:") == 1 and b"s=rsa;" in signed.fields
    assert dns.dkim(signed.fields + MESSAGE) == [("sample.com", "rsa", "A")]
    (together / "keys" / "sample.com" / "rsa").unlink()
    assert sign_outgoing(MESSAGE, together) == Signed()
    assert sign_outgoing(OTHER, together) == Signed()  # global: types none
    write_conf(together, SEED_GLOBAL.decode().replace("/var/qmail/control/", f"{together}/"))
    assert sign_outgoing(OTHER, together) == Signed()  # no dkim/global.key


def test_empty_domain_element_signs_nothing(control: Path, k: Keys) -> None:
    put_key(control / "dkim" / "global.key", k.rsa)
    write_conf(control, "<dkimsign><global/><sample.com/></dkimsign>")
    assert sign_outgoing(MESSAGE, control) == Signed()
    assert sign_outgoing(OTHER, control).domain == "mail.sample.com"


def test_broken_xml_keeps_the_message_queued(control: Path, k: Keys) -> None:
    put_key(control / "dkim" / "global.key", k.rsa)
    write_conf(control, '<dkimsign><global selector="x"></dkimsign>')
    signed = sign_outgoing(MESSAGE, control)
    assert signed.fields == b"" and signed.temporary is not None
    assert "signconf.xml: not well-formed XML: mismatched tag" in signed.temporary
    write_conf(control, '<!DOCTYPE x [<!ENTITY a "b">]><dkimsign/>')
    signed = sign_outgoing(MESSAGE, control)
    assert signed.temporary is not None and "DTD" in signed.temporary
    write_conf(control, "<dkimsign/>")  # fixed: seen at the next message
    assert sign_outgoing(MESSAGE, control).domain == "mail.sample.com"


def test_unreadable_or_broken_key_keeps_the_message_queued(together: Path) -> None:
    ed = together / "keys" / "sample.com" / "ed"
    ed.write_bytes(b"not a key\n")
    signed = sign_outgoing(MESSAGE, together)
    assert signed.fields == b"" and signed.temporary is not None
    assert f"key {ed} cannot be used" in signed.temporary and signed.key == ed
    ed.unlink()
    ed.mkdir()  # exists, cannot be read (root reads mode 000 files, so a directory)
    signed = sign_outgoing(MESSAGE, together)
    assert signed.temporary is not None and f"cannot read key {ed}" in signed.temporary


def test_configuration_problems_found_at_signing_keep_the_message_queued(
    control: Path, k: Keys
) -> None:
    put_key(control / "dkim" / "global.key", k.ed)
    write_conf(control, '<dkimsign><global><types id="domainkey"/></global></dkimsign>')
    signed = sign_outgoing(MESSAGE, control)
    assert signed.temporary is not None and "DomainKeys signs only with RSA" in signed.temporary
    write_conf(control, '<dkimsign><global identity="@other.org"/></dkimsign>')
    signed = sign_outgoing(MESSAGE, control)
    assert signed.temporary is not None and "not within d=mail.sample.com" in signed.temporary
    (control / "me").unlink()
    write_conf(control, "<dkimsign/>")
    signed = sign_outgoing(MESSAGE, control)
    assert signed.temporary is not None and "domain file" in signed.temporary


def test_headers_identity_and_expiration(control: Path, k: Keys, dns: Dns) -> None:
    put_key(control / "dkim" / "global.key", k.rsa)
    write_conf(
        control,
        '<dkimsign><global domain="sample.com" selector="s" headers="X-List:to"'
        ' identity="joe@bar.sample.com" expiration="4102444800"/></dkimsign>',
    )
    dns.publish("s", "sample.com", k.rsa)
    message = b"X-List: l\r\n" + MESSAGE
    signed = sign_with_signconf(
        message,
        parse_signconf((control / "dkim" / "signconf.xml").read_bytes()),
        root_control=control,
    )
    assert b"i=joe@bar.sample.com;" in signed.fields and b"x=4102444800;" in signed.fields
    assert b"h=x-list:from:to:subject:date:message-id:from;" in signed.fields.replace(b"\r\n ", b"")
    assert dns.dkim(signed.fields + message) == [("sample.com", "s", "A")]
