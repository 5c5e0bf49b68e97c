"""tcprules: parsing, the cdb, lookup as tcpserver, `quail tcprules`.

The comparisons with Debian's tcprules, tcprulescheck and tcpserver are in
test_tcprules_peer.py.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quailmail.config.cdb import Cdb, CdbError, cdb_hash, make_cdb, write_atomic
from quailmail.config.tcprules import (
    RuleMatch,
    TcpRulesError,
    candidate_keys,
    compile_rules,
    lookup,
    match_cdb,
    parse_rules,
    rules_ip,
)

DATA = Path(__file__).parent / "data" / "tcprules"
QUAIL = str(Path(sys.executable).with_name("quail"))

RULES = """\
# a comment
127.:allow,RELAYCLIENT=""
127.0.0.2:deny
1.2.3.40-60:allow,RANGE="yes"
10.2-3.:allow,NET="10.2-3"
::1:allow,RELAYCLIENT="",V6="loopback"
2001:db8::25:allow,MX="yes"
2001:db8::allow,DOC="yes"
=mail.example.com:allow,HOST="exact"
=.example.com:allow,HOST="domain"
=:allow,HOST="any"
192.0.2.1:allow,FIRST="1"
192.0.2.1:deny
:allow,DEFAULT=""
"""


def match(ip: str, hostname: str | None = None, text: str = RULES) -> RuleMatch | None:
    return match_cdb(Cdb(compile_rules(text)), ip, hostname=hostname)


# --- parsing ---------------------------------------------------------------


def test_parse_fields() -> None:
    rules = parse_rules(RULES)
    assert [r.address for r in rules][:4] == ["127.", "127.0.0.2", "1.2.3.40-60", "10.2-3."]
    assert rules[0].allow and rules[0].env == (("RELAYCLIENT", ""),)
    assert not rules[1].allow and rules[1].env == ()
    assert rules[0].lineno == 2
    assert len(rules[2].keys) == 21 and rules[2].keys[0] == "1.2.3.40"
    assert rules[3].keys == ("10.2.", "10.3.")
    # The IPv6 patch: the address ends at the first ':' followed by allow/deny.
    assert [r.address for r in rules][4:7] == ["::1", "2001:db8::25", "2001:db8:"]


@pytest.mark.parametrize(
    ("line", "env"),
    [
        ('1.2.3.4:allow,X="a,b=c"', (("X", "a,b=c"),)),
        ('1.2.3.4:allow,X=/a"b/', (("X", 'a"b'),)),  # any repeated character quotes
        ("1.2.3.4:allow,X=xx", (("X", ""),)),  # "unquoted": x quotes the empty value
        ('1.2.3.4:allow,A="1",A="2"', (("A", "1"), ("A", "2"))),
        ('1.2.3.4:allow,A B="x"', (("A B", "x"),)),  # names are not checked, as in tcprules
        ("1.2.3.4:allow \t", ()),
    ],
)
def test_values(line: str, env: tuple[tuple[str, str], ...]) -> None:
    assert parse_rules(line)[0].env == env


def test_deny_with_variables_encoding() -> None:
    assert parse_rules('1.2.3.4:deny,X="1"')[0].data() == b"D\0+X=1\0"
    assert parse_rules("1.2.3.4:allow")[0].data() == b""


@pytest.mark.parametrize(
    ("address", "keys"),
    [
        ("1.2.3.-2", ("1.2.3.0", "1.2.3.1", "1.2.3.2")),  # an empty number is 0
        ("1.2.3.250-300", tuple(f"1.2.3.{n}" for n in range(250, 256))),  # cut to 255
        ("1.2.3.5-3", ()),  # nothing at all
        ("1-2.3.", ("1.3.", "2.3.")),
        ("1.2-3.4-5", ("1.2.4-5", "1.3.4-5")),  # only the first '-' counts
        ("=a-b.example", ("=a-b.example",)),  # no ranges in names
        ("joe@1.2.3.4-5", ("joe@1.2.3.4-5",)),
    ],
)
def test_ranges(address: str, keys: tuple[str, ...]) -> None:
    assert parse_rules(f"{address}:allow")[0].keys == keys


def test_comments_and_blank_lines() -> None:
    assert parse_rules("# x\n\n   \n\t\n#:deny\n1.2.3.4:allow\n") == parse_rules(
        "\n\n\n\n\n1.2.3.4:allow"
    )


@pytest.mark.parametrize(
    "line",
    [
        "1.2.3.4:allow,",
        "1.2.3.4:allow,X",
        "1.2.3.4:allow,X=",
        "1.2.3.4:allow,X=v",  # v opens a value that never closes
        '1.2.3.4:allow,X="a",',
        "1.2.3.4:allowx",
        "1.2.3.4:allow\r",  # tcprules does not cut a CR
        "1.2.3.4:allow # comment",
        "1.2.3.4:ALLOW",
        "1.2.3.4:permit",
        "1.2.3.4 allow",
        "  # indented comment",  # '#' counts only in the first column
        "1.2.3.a-5:allow",
        "x-y:allow",
        "2001:db8::1-3:allow",  # no IPv6 ranges
        '1.2.3.4:allow,X="a\0"',
    ],
)
def test_bad_lines(line: str) -> None:
    with pytest.raises(TcpRulesError) as info:
        compile_rules(f"# ok\n1.2.3.4:allow\n{line}\n")
    assert info.value.lineno == 3


def test_error_message_names_line() -> None:
    with pytest.raises(TcpRulesError, match=r"line 1: .*CRLF"):
        parse_rules("1.2.3.4:allow\r\n")


@given(st.text())
def test_parser_raises_only_its_error(text: str) -> None:
    try:
        data = compile_rules(text)
    except TcpRulesError:
        return
    Cdb(data)


@given(st.text(alphabet='0123456789.-:=,"/ \t#\nadeilnowyx@', max_size=80))
def test_parser_on_rule_like_text(text: str) -> None:
    with contextlib.suppress(TcpRulesError):
        compile_rules(text)


# --- cdb ---------------------------------------------------------------------


def test_cdb_hash_known_value() -> None:
    assert cdb_hash(b"") == 5381
    assert cdb_hash(b"a") == (5381 * 33) ^ ord("a")


@given(st.lists(st.tuples(st.binary(max_size=12), st.binary(max_size=12)), max_size=60))
def test_cdb_round_trip(records: list[tuple[bytes, bytes]]) -> None:
    cdb = Cdb(make_cdb(records))
    assert list(cdb.items()) == records
    for key, _ in records:
        assert list(cdb.get_all(key)) == [d for k, d in records if k == key]
        assert cdb.get(key) == next(d for k, d in records if k == key)
    assert cdb.get(b"\xff" * 13) is None


def test_empty_cdb() -> None:
    data = make_cdb([])
    assert len(data) == 2048
    assert Cdb(data).get(b"") is None


@given(st.binary(min_size=2048, max_size=2200), st.binary(max_size=8))
def test_corrupt_cdb_raises_cdb_error(data: bytes, key: bytes) -> None:
    with contextlib.suppress(CdbError):
        Cdb(data).get(key)
        list(Cdb(data).items())


def test_short_file_is_not_a_cdb() -> None:
    with pytest.raises(CdbError):
        Cdb(b"x" * 100)


def test_write_atomic(tmp_path: Path) -> None:
    target, tmp = tmp_path / "r.cdb", tmp_path / "r.tmp"
    target.write_bytes(b"old")
    tmp.write_bytes(b"stale leftover, longer than the new data")
    write_atomic(target, tmp, b"new")
    assert target.read_bytes() == b"new"
    assert not tmp.exists()


# --- matching ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "hostname", "key", "allow"),
    [
        ("127.0.0.1", None, "127.", True),  # prefix
        ("127.0.0.2", None, "127.0.0.2", False),  # exact beats prefix; deny
        ("1.2.3.40", None, "1.2.3.40", True),  # range
        ("1.2.3.60", None, "1.2.3.60", True),
        ("1.2.3.61", None, "", True),
        ("10.3.9.9", None, "10.3.", True),
        ("10.4.9.9", None, "", True),
        ("::1", None, "::1", True),  # IPv6 exact
        ("2001:db8::25", None, "2001:db8::25", True),
        ("2001:db8:0:0:0:0:0:25", None, "2001:db8::25", True),  # written as tcpserver does
        ("2001:db8:1::5", None, "2001:db8:", True),  # IPv6 prefix
        ("2001:db9::5", None, "", True),
        ("192.0.2.1", None, "192.0.2.1", True),  # duplicate keys: the first wins
        ("9.9.9.9", None, "", True),  # default
        ("9.9.9.9", "mail.example.com", "=mail.example.com", True),
        ("9.9.9.9", "MAIL.Example.COM.", "=mail.example.com", True),
        ("9.9.9.9", "a.b.example.com", "=.example.com", True),
        ("9.9.9.9", "mail.example.org", "=", True),
        ("127.0.0.1", "a.example.com", "127.", True),  # an address prefix beats =.domain
        ("10.3.1.1", "mail.example.com", "=mail.example.com", True),  # =host beats prefixes
        ("127.0.0.2", "mail.example.com", "127.0.0.2", False),  # exact beats =host
    ],
)
def test_match(ip: str, hostname: str | None, key: str, allow: bool) -> None:
    found = match(ip, hostname)
    assert found is not None
    assert (found.key, found.allow) == (key, allow)


def test_match_env() -> None:
    found = match("192.0.2.1")
    assert found is not None and found.env == {"FIRST": "1"}
    twice = match("1.1.1.1", text='1.1.1.1:allow,A="1",A="2"')
    assert twice is not None
    assert twice.env == {"A": "2"}  # set in order, as tcpserver does
    assert twice.settings == (("A", "1"), ("A", "2"))
    deny = match("1.1.1.1", text='1.1.1.1:deny,A="1"')
    assert deny is not None and not deny.allow


def test_mapped_ipv4_matches_ipv4_rules() -> None:
    found = match("::ffff:127.0.0.2")
    assert found is not None and (found.key, found.allow) == ("127.0.0.2", False)
    assert rules_ip("::ffff:192.0.2.1") == "192.0.2.1"


def test_no_default_means_none() -> None:
    assert match("9.9.9.9", text="1.2.3.4:deny") is None


@pytest.mark.parametrize(
    ("ip", "text"),
    [
        ("2001:db8:0:1:1:1:1:1", "2001:db8::1:1:1:1:1"),  # one zero group is compressed
        ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),  # the longest run
        ("2001:db8::abcd:0:0:1", "2001:db8::abcd:0:0:1"),  # the first of equal runs
        ("2001:db8:a::", "2001:db8:a::"),
        ("::", "::"),
        ("1::", "1::"),
        ("::1.2.3.4", "::102:304"),  # IPv4-compatible is not mapped
        ("::ffff:0:102:304", "::ffff:0:102:304"),
        ("2001:DB8::A", "2001:db8::a"),
        ("fe80::1%eth0", "fe80::1"),
        ("192.0.2.1", "192.0.2.1"),
    ],
)
def test_rules_ip_is_tcpserver_text(ip: str, text: str) -> None:
    assert rules_ip(ip) == text


def test_candidate_keys_order() -> None:
    assert candidate_keys("1.2.3.4", "a.b.example", "joe") == [
        "joe@1.2.3.4",
        "joe@=a.b.example",
        "1.2.3.4",
        "=a.b.example",
        "1.2.3.",
        "1.2.",
        "1.",
        "=.b.example",
        "=.example",
        "=",
        "",
    ]
    assert candidate_keys("2001:db8::5") == [
        "2001:db8::5",
        "2001:db8::",
        "2001:db8:",
        "2001:",
        "",
    ]


def test_bad_ip_raises_value_error(tmp_path: Path) -> None:
    path = tmp_path / "r.cdb"
    path.write_bytes(compile_rules(RULES))
    with pytest.raises(ValueError, match="does not appear"):
        lookup(path, "1.2.3")


# --- files: missing, recompiled ------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    assert lookup(tmp_path / "none.cdb", "1.2.3.4") is None
    with pytest.raises(FileNotFoundError):
        lookup(tmp_path / "none.cdb", "1.2.3.4", missing_ok=False)


def test_recompiled_file_seen_at_once(tmp_path: Path) -> None:
    path, tmp = tmp_path / "r.cdb", tmp_path / "r.tmp"
    write_atomic(path, tmp, compile_rules("1.2.3.4:allow\n"))
    first = lookup(path, "1.2.3.4")
    assert first is not None and first.allow
    assert lookup(path, "1.2.3.4") == first  # from the cache
    write_atomic(path, tmp, compile_rules("1.2.3.4:deny\n"))
    second = lookup(path, "1.2.3.4")
    assert second is not None and not second.allow
    path.unlink()
    assert lookup(path, "1.2.3.4") is None


# --- the seeds' rules --------------------------------------------------------------


def test_seed001() -> None:
    text = (DATA / "seed001.tcp.qmail-smtp").read_text()
    assert len(parse_rules(text)) == 2
    local = match("127.0.0.1", text=text)
    assert local is not None
    assert local.env == {"RELAYCLIENT": "", "RBLSMTPD": ""}
    other = match("::ffff:198.51.100.7", text=text)
    assert other is not None and other.key == ""
    assert other.env == {"DKVERIFY": "", "AUTH_UNSET_DKVERIFY": ""}
    assert match("127.0.0.2", text=text) == other


def test_seed003() -> None:
    text = (DATA / "seed003.tcp.smtp").read_text()
    assert len(parse_rules(text)) == 3
    local = match("127.0.0.5", text=text)
    assert local is not None and local.key == "127."
    assert local.env == {
        "RELAYCLIENT": "",
        "QMAILQUEUE": "/var/qmail/bin/simscan",
        "DKVERIFY": "DEGIJKfh",
        "DKQUEUE": "/var/qmail/bin/qmail-queue.orig",
        "DKSIGN": "/var/qmail/control/domainkeys/%/default",
    }
    web = match("69.36.226.12", text=text)
    assert web is not None
    assert web.env == {"RELAYCLIENT": "", "DKSIGN": "/var/qmail/control/domainkeys/%/default"}
    other = match("69.36.226.13", text=text)
    assert other is not None and other.key == ""
    assert other.env["BADLOADERTYPE"] == "M"
    assert other.env["CHKUSER_RCPTLIMIT"] == "50"
    assert other.env["CHKUSER_WRONGRCPTLIMIT"] == "3"
    assert "RELAYCLIENT" not in other.env
    v6 = match("2001:db8::1", text=text)
    assert v6 == other


# --- the command ---------------------------------------------------------------------


def quail(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [QUAIL, "tcprules", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_cli_compile_and_check(tmp_path: Path) -> None:
    cdb, tmp = tmp_path / "tcp.smtp.cdb", tmp_path / "tcp.smtp.tmp"
    out = quail(str(cdb), str(tmp), stdin=RULES)
    assert out.returncode == 0, out.stderr
    assert cdb.read_bytes() == compile_rules(RULES)
    assert not tmp.exists()
    check = quail("--check", "127.0.0.9", "--rules", str(cdb))
    assert check.returncode == 0, check.stderr
    assert check.stdout == "rule 127.:\nset environment variable RELAYCLIENT=\nallow connection\n"
    deny = quail("--check", "::ffff:127.0.0.2", "--rules", str(cdb))
    assert deny.stdout == "rule 127.0.0.2:\ndeny connection\n"
    host = quail("--check", "9.9.9.9", "--hostname", "x.example.com", "--rules", str(cdb))
    assert host.stdout.splitlines()[0] == "rule =.example.com:"


def test_cli_check_default_root(tmp_path: Path) -> None:
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / "tcp.smtp.cdb").write_bytes(compile_rules("1.2.3.4:deny\n"))
    out = quail("--check", "9.9.9.9", "--root", str(tmp_path))
    assert out.stdout == "default:\nallow connection\n"
    env = quail("--check", "1.2.3.4", env={"QUAIL_ROOT": str(tmp_path)})
    assert env.stdout == "rule 1.2.3.4:\ndeny connection\n"


def test_cli_bad_line_leaves_cdb_alone(tmp_path: Path) -> None:
    cdb, tmp = tmp_path / "r.cdb", tmp_path / "r.tmp"
    cdb.write_bytes(b"the old rules")
    out = quail(str(cdb), str(tmp), stdin="1.2.3.4:allow\n5.6.7.8:allow,X=y\n")
    assert out.returncode == 100
    assert out.stderr.count("\n") == 1
    assert "line 2" in out.stderr and "5.6.7.8:allow,X=y" in out.stderr
    assert cdb.read_bytes() == b"the old rules"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("only-one.cdb",), 100, "usage"),
        (("--check", "1.2.3"), 2, "--check needs --rules"),
        (("--check", "1.2.3", "--rules", "x.cdb"), 2, "not an IP address"),
        (("--check", "1.2.3.4", "--rules", "/nonexistent/x.cdb"), 111, "unable to read"),
        (("--hostname", "x", "a.cdb", "a.tmp"), 2, "go with --check"),
        (("a.cdb", "/nonexistent/dir/a.tmp"), 111, "unable to write"),
    ],
)
def test_cli_errors(tmp_path: Path, args: tuple[str, ...], code: int, message: str) -> None:
    env = {"QUAIL_ROOT": ""}
    (tmp_path / "x.cdb").write_bytes(compile_rules(""))
    proc = subprocess.run(
        [QUAIL, "tcprules", *args],
        input="1.2.3.4:allow\n",
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env={**os.environ, **env},
    )
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_cli_corrupt_cdb(tmp_path: Path) -> None:
    bad = tmp_path / "bad.cdb"
    bad.write_bytes(b"\xff" * 3000)
    out = quail("--check", "1.2.3.4", "--rules", str(bad))
    assert out.returncode == 111
    assert "unable to read" in out.stderr
