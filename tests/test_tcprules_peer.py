"""tcprules against Debian's ucspi-tcp-ipv6: tcprules, tcprulescheck, tcpserver.

- A cdb made by Debian's tcprules is byte for byte what `compile_rules` makes,
  and our lookup in it agrees with tcprulescheck for IPv4 and IPv6 clients,
  with and without a host name.
- A cdb made by `quail tcprules` is read by tcprulescheck as expected.
- Random rule-like text is refused by both or compiled to the same bytes.
- tcpserver itself, in a private network namespace with IPv6 addresses on its
  loopback, writes TCPREMOTEIP as `rules_ip` does (skipped where `unshare -n`
  is not allowed).

tcprulescheck reads the client from TCPREMOTEIP / TCPREMOTEHOST (not from its
arguments, whatever its manual says) and does not rewrite the address, so it is
given the text tcpserver would give it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quailmail.config.cdb import Cdb
from quailmail.config.tcprules import (
    RuleMatch,
    TcpRulesError,
    compile_rules,
    lookup,
    match_cdb,
    rules_ip,
)

pytestmark = pytest.mark.peer

DATA = Path(__file__).parent / "data" / "tcprules"
QUAIL = str(Path(sys.executable).with_name("quail"))

needs_tcprules = pytest.mark.skipif(
    shutil.which("tcprules") is None or shutil.which("tcprulescheck") is None,
    reason="Debian's ucspi-tcp-ipv6 (tcprules, tcprulescheck) is not installed",
)

RULES = """\
# every kind of address
127.:allow,RELAYCLIENT=""
127.0.0.2:deny
127.0.0.3:deny,IGNORED="yes"
1.2.3.40-60:allow,RANGE="yes"
10.2-3.:allow,NET=/10.2-3/
192.0.2.1:allow,FIRST="1",FIRST="2"
192.0.2.1:deny
::1:allow,RELAYCLIENT="",V6="loopback"
2001:db8::25:allow,MX="yes"
2001:db8::1:1:1:1:1:allow,SINGLE="zero group"
2001:db8:::allow,COMPRESSED="yes"
2001:db8::allow,DOC="yes"
=mail.example.com:allow,HOST="exact"
=.example.com:allow,HOST="domain"
=:allow,HOST="any"
:allow,DEFAULT="",X=xx
"""

CLIENTS = [
    ("127.0.0.1", None),
    ("127.0.0.2", None),
    ("127.0.0.3", None),
    ("127.0.0.2", "mail.example.com"),
    ("1.2.3.39", None),
    ("1.2.3.40", None),
    ("1.2.3.60", None),
    ("1.2.3.61", None),
    ("10.2.0.1", None),
    ("10.3.0.1", "mail.example.com"),
    ("10.4.0.1", None),
    ("192.0.2.1", None),
    ("::1", None),
    ("::2", None),
    ("::ffff:127.0.0.2", None),
    ("2001:db8::25", None),
    ("2001:db8:0:0:0:0:0:25", None),
    ("2001:db8:0:1:1:1:1:1", None),
    ("2001:db8::26", None),
    ("2001:db8:1::5", None),
    ("2001:db9::5", None),
    ("2001:db9::5", "a.b.example.com"),
    ("9.9.9.9", "mail.example.com"),
    ("9.9.9.9", "x.example.com"),
    ("9.9.9.9", "x.example.org"),
    ("9.9.9.9", None),
]


def debian_tcprules(text: str, tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    """Debian's tcprules on `text`; the timeout guards against its known hang."""
    return subprocess.run(
        ["tcprules", str(tmp_path / "d.cdb"), str(tmp_path / "d.tmp")],
        input=text.encode(),
        capture_output=True,
        check=False,
        timeout=10,
    )


def tcprulescheck(cdb: Path, ip: str, hostname: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TCPREMOTE")}
    env["TCPREMOTEIP"] = rules_ip(ip)
    if hostname is not None:
        env["TCPREMOTEHOST"] = hostname
    proc = subprocess.run(
        ["tcprulescheck", str(cdb)], env=env, capture_output=True, text=True, check=True
    )
    return proc.stdout


def as_tcprulescheck(found: RuleMatch | None) -> str:
    if found is None:
        return "default:\nallow connection\n"
    lines = [f"rule {found.key}:"]
    if found.allow:
        lines += [f"set environment variable {n}={v}" for n, v in found.settings]
        lines.append("allow connection")
    else:
        lines.append("deny connection")
    return "\n".join(lines) + "\n"


@needs_tcprules
@pytest.mark.parametrize(
    "text",
    [
        RULES,
        (DATA / "seed001.tcp.qmail-smtp").read_text(),
        (DATA / "seed003.tcp.smtp").read_text(),
        "",
        "1.2.3.4:allow\n1.2.3.4:deny\n",
    ],
    ids=["rules", "seed001", "seed003", "empty", "duplicates"],
)
def test_byte_identical_to_debian(text: str, tmp_path: Path) -> None:
    proc = debian_tcprules(text, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "d.cdb").read_bytes() == compile_rules(text)


@needs_tcprules
def test_lookup_in_debian_cdb_agrees_with_tcprulescheck(tmp_path: Path) -> None:
    assert debian_tcprules(RULES, tmp_path).returncode == 0
    cdb = tmp_path / "d.cdb"
    for ip, hostname in CLIENTS:
        ours = as_tcprulescheck(lookup(cdb, ip, hostname=hostname))
        assert ours == tcprulescheck(cdb, ip, hostname), (ip, hostname)


@needs_tcprules
@pytest.mark.parametrize("seed", ["seed001.tcp.qmail-smtp", "seed003.tcp.smtp"])
def test_seeds_in_debian_cdb(seed: str, tmp_path: Path) -> None:
    assert debian_tcprules((DATA / seed).read_text(), tmp_path).returncode == 0
    cdb = tmp_path / "d.cdb"
    for ip in ["127.0.0.1", "127.9.9.9", "69.36.226.12", "69.36.226.13", "::1", "2001:db8::1"]:
        assert as_tcprulescheck(lookup(cdb, ip)) == tcprulescheck(cdb, ip, None), ip


@needs_tcprules
def test_quail_cdb_read_by_tcprulescheck(tmp_path: Path) -> None:
    cdb = tmp_path / "q.cdb"
    proc = subprocess.run(
        [QUAIL, "tcprules", str(cdb), str(tmp_path / "q.tmp")],
        input=RULES,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    expected = {
        (
            "127.0.0.1",
            None,
        ): "rule 127.:\nset environment variable RELAYCLIENT=\nallow connection\n",
        ("127.0.0.3", None): "rule 127.0.0.3:\ndeny connection\n",
        ("10.3.0.1", None): "rule 10.3.:\nset environment variable NET=10.2-3\nallow connection\n",
        ("192.0.2.1", None): "rule 192.0.2.1:\nset environment variable FIRST=1\n"
        "set environment variable FIRST=2\nallow connection\n",
        ("2001:db8:1::5", None): "rule 2001:db8::\nset environment variable DOC=yes\n"
        "allow connection\n",
        ("9.9.9.9", "x.example.com"): "rule =.example.com:\n"
        "set environment variable HOST=domain\nallow connection\n",
        ("9.9.9.9", None): "rule :\nset environment variable DEFAULT=\n"
        "set environment variable X=\nallow connection\n",
    }
    for (ip, hostname), out in expected.items():
        assert tcprulescheck(cdb, ip, hostname) == out
    # And the CLI's --check prints what tcprulescheck prints.
    for ip, hostname in CLIENTS:
        args = ["--check", ip, "--rules", str(cdb)]
        if hostname:
            args += ["--hostname", hostname]
        check = subprocess.run(
            [QUAIL, "tcprules", *args], capture_output=True, text=True, check=True
        )
        assert check.stdout == tcprulescheck(cdb, ip, hostname), (ip, hostname)


@needs_tcprules
@pytest.mark.parametrize(
    "line",
    [
        "1.2.3.4:allow,",
        "1.2.3.4:allow,X",
        "1.2.3.4:allow,X=v",
        "1.2.3.4:allowx",
        "1.2.3.4:allow\r",
        "1.2.3.4:allow # comment",
        "1.2.3.a-5:allow",
        "2001:db8::1-3:allow",
    ],
)
def test_both_refuse(line: str, tmp_path: Path) -> None:
    assert debian_tcprules(f"{line}\n", tmp_path).returncode == 100
    with pytest.raises(TcpRulesError):
        compile_rules(f"{line}\n")


# Lines that hold ':allow' or ':deny', so Debian's tcprules cannot hang on them
# (it loops forever on a line without one; we refuse such a line).
_piece = st.text(alphabet='0123456789.-:=,"/ \tx@#', max_size=12)
_address = st.one_of(_piece, st.text(alphabet="0123456789.-:abcdef=", max_size=16))
_setting = st.builds(
    lambda name, quote, value: f",{name}={quote}{value}{quote}",
    st.text(alphabet="ABXY_ ,", max_size=4),
    st.sampled_from(['"', "/", "x", "'"]),
    st.text(alphabet='abc/,=" %', max_size=6),
)
_rest = st.one_of(_piece, st.lists(_setting, max_size=3).map("".join))
_line = st.builds(
    lambda a, verb, rest: f"{a}:{verb}{rest}", _address, st.sampled_from(["allow", "deny"]), _rest
)


@needs_tcprules
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(_line, min_size=1, max_size=4))
def test_random_rules_agree_with_debian(lines: list[str], tmp_path: Path) -> None:
    text = "\n".join(lines) + "\n"
    (tmp_path / "d.cdb").unlink(missing_ok=True)
    proc = debian_tcprules(text, tmp_path)
    try:
        ours: bytes | None = compile_rules(text)
    except TcpRulesError:
        ours = None
    if proc.returncode == 0:
        assert ours == (tmp_path / "d.cdb").read_bytes()
    else:
        assert ours is None, proc.stderr


# --- tcpserver in a private network namespace ------------------------------------

NAMESPACE_HELPER = r"""
import socket, subprocess, sys
addrs = sys.argv[1:]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
for a in addrs:
    if ":" in a and a != "::1":
        subprocess.run(["ip", "-6", "addr", "add", a + "/128", "dev", "lo", "nodad"], check=True)
server = subprocess.Popen(
    ["tcpserver", "-v", "-H", "-R", "-x", sys.stdin.readline().strip(), "0", "2525",
     "sh", "-c", 'echo "$TCPREMOTEIP ${RELAYCLIENT-unset} ${DOC-unset}"'],
    stderr=subprocess.PIPE, text=True)
assert server.stderr is not None
server.stderr.readline()  # "tcpserver: status: 0/40": listening
for a in addrs:
    family = socket.AF_INET6 if ":" in a else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((a, 0))
        s.connect(("::1" if family == socket.AF_INET6 else "127.0.0.1", 2525))
        print(a, s.makefile().readline().strip(), flush=True)
server.terminate()
server.wait()
"""


@pytest.mark.skipif(shutil.which("tcpserver") is None, reason="tcpserver is not installed")
@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare is not installed")
def test_tcpserver_remote_ip_and_rules(tmp_path: Path) -> None:
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("no private network namespace here (unshare -n needs root)")
    cdb = tmp_path / "r.cdb"
    cdb.write_bytes(compile_rules(RULES))
    addrs = [
        "2001:db8:0:1:1:1:1:1",
        "2001:0:0:1:0:0:0:1",
        "2001:db8::abcd:0:0:1",
        "2001:db8:0:0:1:0:0:0",
        "2001:db8:1::5",
        "::1",
        "127.0.0.1",
        "127.0.0.2",
    ]
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", NAMESPACE_HELPER, *addrs],
        input=f"{cdb}\n",
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    seen = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert set(seen) == set(addrs)
    table = Cdb(cdb.read_bytes())
    for a in addrs:
        if a == "127.0.0.2":  # denied: tcpserver closes without running the program
            assert seen[a] == ""
            continue
        remote_ip, relay, doc = seen[a].split(" ")
        assert remote_ip == rules_ip(a)
        found = match_cdb(table, a)
        env = found.env if found else {}
        assert relay == env.get("RELAYCLIENT", "unset")
        assert doc == env.get("DOC", "unset")
