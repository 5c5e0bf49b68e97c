"""Greylisting at connection time (jgreylist with the seeds' IPv6 patch):
keys and the file layout, jgreylist's knobs over real SMTP (IPv4 from
chosen loopback addresses, IPv6 on ::1 and behind the PROXY protocol), AUTH
lifting a greylisting, `quail greylist clean`, and a Redis store shared by
two nodes (a real redis-server on loopback)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from quailmail.dns.zoneserver import ZoneServer
from quailmail.policy import greylist
from quailmail.policy.greylist import Verdict, decide, getenv_int
from quailmail.policy.greylist.files import FileStore
from quailmail.policy.greylist.store import StoreError, Visit, client_key

from policyfixtures import SESSION, finals, talk, v1_header, write_rules
from serverfixtures import QUAIL, Running, free_port

GREY1 = "450 4.7.1 GREYLIST Try again later."
GREY2 = "450 4.7.1 GREYLIST I said to try later."


# -- keys, decisions, numbers -------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "by_ip", "key"),
    [
        ("127.0.0.1", False, "ip4/127/000/000"),
        ("127.0.0.1", True, "ip4/127/000/000/001"),
        ("192.0.2.99", False, "ip4/192/000/002"),
        ("::ffff:192.0.2.99", True, "ip4/192/000/002/099"),
        ("2001:470:1f0f:350::1", False, "ip6/20/01/04/70/1f/0f/03/50"),  # the seeds' example
        ("2001:470:1f0f:350::1", True, "ip6/20/01/04/70/1f/0f/03/50/00/00/00/00/00/00/00/01"),
        ("::1", False, "ip6/00/00/00/00/00/00/00/00"),
    ],
)
def test_keys_are_jgreylists_paths(ip: str, by_ip: bool, key: str) -> None:
    assert "/".join(client_key(ip, by_ip=by_ip)) == key


def test_hold_time_as_jgreylist_counts_it() -> None:
    assert decide(Visit(None, 1000.0), 120) is Verdict.FIRST
    assert decide(Visit(1000.0, 1119.0), 120) is Verdict.TOO_SOON
    assert decide(Visit(1000.0, 1120.0), 120) is Verdict.KNOWN  # mtime + hold > now: too soon
    assert decide(Visit(1000.0, 1000.0), 0) is Verdict.KNOWN  # 0: the second connection passes


@pytest.mark.parametrize(
    ("value", "number"),
    [
        (None, 120), ("", 120), ("5", 5), (" 7s", 7), ("x", 0), ("-3", -3), ("+4", 4),
        # Past int()'s 4300 digits (and C's overflow): very large, not a traceback.
        ("9" * 5000, 10**18), ("-" + "9" * 5000, -(10**18)), ("0" * 5000 + "7", 7),
    ],
)  # fmt: skip
def test_numbers_are_read_with_atoi(value: str | None, number: int) -> None:
    env = {} if value is None else {"JGREYLIST_HOLDTIME": value}
    assert getenv_int(env, "JGREYLIST_HOLDTIME", 120) == number


def test_file_store_keeps_first_seen_in_mtime_and_last_seen_in_atime(tmp_path: Path) -> None:
    now = [1_000_000.0]
    store = FileStore(tmp_path, clock=lambda: now[0])
    key = client_key("192.0.2.1", by_ip=False)
    assert asyncio.run(store.visit(key)) == Visit(None, 1_000_000.0)
    path = tmp_path / "ip4" / "192" / "000" / "002"
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "ip4" / "192").stat().st_mode & 0o777 == 0o700
    os.utime(path, (1_000_000, 1_000_000))
    now[0] = 1_000_050.0
    assert asyncio.run(store.visit(key)) == Visit(1_000_000.0, 1_000_050.0)
    st = path.stat()
    assert (st.st_mtime, st.st_atime) == (1_000_000.0, 1_000_050.0)
    # JGREYLIST_BY_IP switched on: the /24 file gives way to a directory.
    assert asyncio.run(store.visit(client_key("192.0.2.1", by_ip=True))).first_seen is None
    assert (path / "001").is_file()


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("x" * 300, "File name too long"),
        ("a\0b", "embedded null byte"),
        ("missing", "does not exist"),
        ("file", "is not a directory"),
    ],
)
def test_an_unusable_directory_is_a_store_error(tmp_path: Path, name: str, reason: str) -> None:
    """What the store answers with 451 and one log line (a name too long or
    with a NUL was a traceback)."""
    (tmp_path / "file").touch()
    store = FileStore(tmp_path / name)
    with pytest.raises(StoreError, match=reason):
        asyncio.run(store.visit(client_key("192.0.2.1", by_ip=False)))


# -- end to end ---------------------------------------------------------------------


def _serve(
    server_factory: Callable[..., Running],
    dns: ZoneServer,
    rules: str,
    *,
    control: dict[str, str] | None = None,
    name: str = "root",
) -> Running:
    def setup(root: Path) -> None:
        files = {
            "dnsservers": dns.spec,
            "proxyfrom": "127.0.0.1",
            "authloopback": "1",
            **(control or {}),
        }
        for file, text in files.items():
            (root / "control" / file).write_text(text + "\n")
        write_rules(root, rules)

    return server_factory(setup, name)


def _greylisting(
    server_factory: Callable[..., Running], dns: ZoneServer, tmp_path: Path, knob: str
) -> Running:
    """A server greylisting every client in a new directory, with one more knob."""
    grey = tmp_path / "jgreylist"
    grey.mkdir()
    return _serve(server_factory, dns, f':allow,JGREYLIST_DIR="{grey}",{knob}\n')


def _codes(transcript: list[str]) -> list[str]:
    return [line[:3] for line in transcript]


def _backdate(path: Path, seconds: float) -> None:
    """Move the first sighting back (what waiting the hold time does)."""
    st = path.stat()
    os.utime(path, (st.st_atime, st.st_mtime - seconds))


def test_greylisted_then_accepted_over_ipv4(
    server_factory: Callable[..., Running], dns_server: ZoneServer, tmp_path: Path
) -> None:
    grey = tmp_path / "jgreylist"
    grey.mkdir()
    server = _serve(server_factory, dns_server, f':allow,JGREYLIST_DIR="{grey}"\n')
    proxied = "192.0.2.7"
    first = finals(talk(server.smtp, proxied=proxied))
    assert first[0].startswith("220 ") and first[3] == GREY1  # RCPT (MAIL taken, as jgreylist does)
    assert first[-1].startswith("221 ")  # told, not dropped
    entry = grey / "ip4" / "192" / "000" / "002"
    assert entry.is_file()
    assert finals(talk(server.smtp, proxied=proxied))[3] == GREY2  # within JGREYLIST_HOLDTIME
    first_seen = entry.stat().st_mtime
    _backdate(entry, 121)  # the default hold time is 120 s
    accepted = finals(talk(server.smtp, proxied="192.0.2.200"))  # same /24
    assert _codes(accepted) == ["220", "250", "250", "250", "221"]
    st = entry.stat()
    assert st.st_mtime == first_seen - 121  # first sighting kept
    assert st.st_atime >= time.time() - 60  # last sighting now
    log = server.log_path.read_text()
    assert "jgreylist: 192.0.2.7: GREY first time" in log
    assert "jgreylist: 192.0.2.7: GREY too soon" in log
    assert "jgreylist: 192.0.2.200: OK known" in log


def test_a_passed_client_is_remembered_for_a_minute(
    server_factory: Callable[..., Running], dns_server: ZoneServer, tmp_path: Path
) -> None:
    """Once passed, a key is decided from memory for KNOWN_FOR seconds: no
    stat and no utime of its file (its atime lags); a deleted entry
    greylists again only after that."""
    grey = tmp_path / "jgreylist"
    entry = grey / "ip4" / "192" / "000" / "002"
    entry.parent.mkdir(parents=True)
    entry.touch()
    os.utime(entry, (time.time(), time.time() - 3600))  # passed an hour ago
    # One worker: the memory is each process's own.
    server = _serve(
        server_factory, dns_server, f':allow,JGREYLIST_DIR="{grey}"\n', control={"workers": "1"}
    )
    assert _codes(finals(talk(server.smtp, proxied="192.0.2.7"))) == [
        "220", "250", "250", "250", "221",
    ]  # fmt: skip
    assert entry.stat().st_atime >= time.time() - 60  # looked up and touched
    os.utime(entry, (1_000_000, entry.stat().st_mtime))
    assert finals(talk(server.smtp, proxied="192.0.2.8"))[3].startswith("250 ")
    assert entry.stat().st_atime == 1_000_000  # decided from memory: not touched
    entry.unlink()
    assert finals(talk(server.smtp, proxied="192.0.2.9"))[3].startswith("250 ")
    assert not entry.exists()  # still remembered: the store was not asked
    log = server.log_path.read_text()
    assert log.count("OK known") == 3


def test_jgreylist_limit_hangs_up_at_the_limits_rcpt(
    server_factory: Callable[..., Running], dns_server: ZoneServer, tmp_path: Path
) -> None:
    server = _greylisting(server_factory, dns_server, tmp_path, 'JGREYLIST_LIMIT="3"')
    script = b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n" + b"RCPT TO:<x@mx.test>\r\n" * 5
    replies = finals(talk(server.smtp, script + b"QUIT\r\n", proxied="192.0.2.7"))
    # MAIL taken, the RCPTs refused until the third, as jgreylist counts them.
    assert _codes(replies) == ["220", "250", "250", "450", "450", "421"]
    assert replies[-1] == "421 4.7.0 Too many RCPT commands, goodbye."  # and closed
    assert "192.0.2.7: HANGUP too many RCPT commands" in server.log_path.read_text()
    # Fewer RCPTs than the limit: the conversation ends with the client's QUIT.
    two = b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n" + b"RCPT TO:<x@mx.test>\r\n" * 2
    assert _codes(finals(talk(server.smtp, two + b"QUIT\r\n", proxied="192.0.2.7")))[-1] == "221"


def test_jgreylist_timeout_ends_the_refused_conversation(
    server_factory: Callable[..., Running], dns_server: ZoneServer, tmp_path: Path
) -> None:
    """JGREYLIST_TIMEOUT="1" is raised to jgreylist's minimum, 5 s."""
    server = _greylisting(server_factory, dns_server, tmp_path, 'JGREYLIST_TIMEOUT="1"')
    with socket.create_connection(("127.0.0.1", server.smtp), timeout=15) as sock:
        sock.sendall(v1_header("192.0.2.7", 40000, "127.0.0.1", server.smtp))
        start = time.monotonic()
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
        waited = time.monotonic() - start
    lines = received.decode().splitlines()
    assert lines[0].startswith("220 ") and lines[-1].startswith("421 ")
    assert 4.5 <= waited < 10


def test_jgreylist_limits_as_jgreylist_reads_them() -> None:
    assert greylist._limits({}) == (0, 60.0)
    assert greylist._limits({"JGREYLIST_LIMIT": "10", "JGREYLIST_TIMEOUT": "90"}) == (10, 90.0)
    assert greylist._limits({"JGREYLIST_TIMEOUT": "1"}) == (0, 5.0)
    assert greylist._limits({"JGREYLIST_TIMEOUT": "9999", "JGREYLIST_LIMIT": "x"}) == (0, 300.0)


def test_ipv6_clients_by_64_and_by_address(
    server_factory: Callable[..., Running], dns_server: ZoneServer, tmp_path: Path
) -> None:
    grey = tmp_path / "jgreylist"
    grey.mkdir()
    rules = (
        '2001:db8::7:allow,JGREYLIST_BY_IP="1"\n'
        '192.0.2.8:allow,JGREYLIST_BY_IP="1"\n'
        ':allow,JGREYLIST_HOLDTIME="0"\n'
    )
    server = _serve(server_factory, dns_server, rules, control={"greylistdir": str(grey)})
    # ::1 connects directly; the seeds' address through the PROXY protocol.
    assert finals(talk(server.smtp, host="::1"))[3] == GREY1
    assert (grey / "ip6/00/00/00/00/00/00/00/00").is_file()
    assert finals(talk(server.smtp, proxied="2001:470:1f0f:350::1"))[3] == GREY1
    assert (grey / "ip6/20/01/04/70/1f/0f/03/50").is_file()
    # JGREYLIST_HOLDTIME="0": the second connection passes.
    assert finals(talk(server.smtp, proxied="2001:470:1f0f:350::99"))[3].startswith("250 ")
    # JGREYLIST_BY_IP: one entry per address.
    assert finals(talk(server.smtp, proxied="2001:db8::7"))[3] == GREY1
    assert (grey / "ip6/20/01/0d/b8/00/00/00/00/00/00/00/00/00/00/00/07").is_file()
    assert finals(talk(server.smtp, proxied="192.0.2.8"))[3] == GREY1
    assert (grey / "ip4/192/000/002/008").is_file()


def test_jgreylist_norev_relayclient_and_logging(
    server_factory: Callable[..., Running], dns_server: ZoneServer, tmp_path: Path
) -> None:
    grey = tmp_path / "jgreylist"
    grey.mkdir()
    dns_server.zone.add_ptr("127.0.0.5", "named.example")
    each = f'JGREYLIST_DIR="{grey}",JGREYLIST_BY_IP="1"'
    rules = (
        f'127.0.0.2:allow,JGREYLIST="",{each}\n'
        f'127.0.0.3:allow,JGREYLIST="go away %, not welcome",{each}\n'
        f'127.0.0.4:allow,JGREYLIST_NOREV="no reverse DNS for %",{each}\n'
        f'127.0.0.5:allow,JGREYLIST_NOREV="no reverse DNS for %",{each}\n'
        f'127.0.0.6:allow,RELAYCLIENT="",{each}\n'
        f'127.0.0.7:allow,JGREYLIST_LOG="0",{each}\n'
        f'127.0.0.8:allow,RELAYCLIENT="",JGREYLIST="no relaying from %",{each}\n'
        ":allow\n"
    )
    server = _serve(server_factory, dns_server, rules)
    assert _codes(finals(talk(server.smtp, source="127.0.0.2"))) == [
        "220", "250", "250", "250", "221",
    ]  # fmt: skip
    assert finals(talk(server.smtp, source="127.0.0.3"))[3] == (
        "553 5.7.1 DENIED go away 127.0.0.3, not welcome"
    )
    assert finals(talk(server.smtp, source="127.0.0.4"))[3] == (
        "553 5.7.1 DENIED no reverse DNS for 127.0.0.4"
    )
    assert finals(talk(server.smtp, source="127.0.0.5"))[3] == GREY1  # has a name: greylisted
    relay = finals(talk(server.smtp, source="127.0.0.6"))
    assert relay[3].startswith("250 ")
    assert finals(talk(server.smtp, source="127.0.0.7"))[3] == GREY1
    # JGREYLIST's text is the admin's deny, RELAYCLIENT or not (jgreylist runs first).
    assert finals(talk(server.smtp, source="127.0.0.8"))[3] == (
        "553 5.7.1 DENIED no relaying from 127.0.0.8"
    )
    made = sorted(p.name for p in (grey / "ip4" / "127" / "000" / "000").iterdir())
    assert made == ["005", "007"]  # never an entry for allowed, denied or relay clients
    log = server.log_path.read_text()
    assert "jgreylist: 127.0.0.2: OK whitelisted" in log
    assert "jgreylist: 127.0.0.3: DENY blacklisted" in log
    assert "jgreylist: 127.0.0.4: DENY no reverse DNS" in log
    assert "jgreylist: 127.0.0.7:" not in log  # JGREYLIST_LOG="0"


def test_authentication_lifts_greylisting(
    server_factory: Callable[..., Running], dns_server: ZoneServer, tmp_path: Path
) -> None:
    grey = tmp_path / "jgreylist"
    grey.mkdir()
    server = _serve(server_factory, dns_server, f':allow,JGREYLIST_DIR="{grey}"\n')
    added = server.quail("user", "add", "joe@example.net", "--password-stdin", stdin=b"s3cret\n")
    assert added.returncode == 0, added.stderr
    good = "AGpvZUBleGFtcGxlLm5ldABzM2NyZXQ="  # \0joe@example.net\0s3cret
    bad = "AGpvZUBleGFtcGxlLm5ldAB3cm9uZw=="  # \0joe@example.net\0wrong
    script = (
        b"EHLO client.example\r\nMAIL FROM:<joe@example.net>\r\n"
        b"RCPT TO:<friend@elsewhere.example>\r\nRSET\r\n"
        + f"AUTH PLAIN {bad}\r\n".encode()
        + b"MAIL FROM:<joe@example.net>\r\nRCPT TO:<friend@elsewhere.example>\r\nRSET\r\n"
        + f"AUTH PLAIN {good}\r\n".encode()
        + b"MAIL FROM:<joe@example.net>\r\nRCPT TO:<friend@elsewhere.example>\r\nQUIT\r\n"
    )
    replies = finals(talk(server.smtp, script, host="::1"))
    assert _codes(replies[:5]) == ["220", "250", "250", "450", "250"]
    assert replies[3] == GREY1
    assert replies[5].startswith("535 ")  # a failed AUTH lifts nothing
    assert replies[7] == GREY1
    assert replies[9].startswith("235 ")
    assert replies[10].startswith("250 ") and replies[11].startswith("250 ")  # relays as joe
    assert replies[12].startswith("221 ")


def test_an_existing_jgreylist_directory_keeps_working(
    server_factory: Callable[..., Running], dns_server: ZoneServer, tmp_path: Path
) -> None:
    grey = tmp_path / "jgreylist"
    seen = time.time() - 3 * 86400
    # Seen by the seeds' patched jgreylist (ip4/), and by the unpatched one.
    for path in ("ip4/127/000/000", "192/000/002"):
        entry = grey / path
        entry.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        entry.touch(mode=0o600)
        os.utime(entry, (time.time() - 86400, seen))
    server = _serve(server_factory, dns_server, f':allow,JGREYLIST_DIR="{grey}"\n')
    for client in ("127.0.0.1", "192.0.2.7"):
        assert _codes(finals(talk(server.smtp, proxied=client))) == [
            "220", "250", "250", "250", "221",
        ], client  # fmt: skip
    # The old entry's first sighting is carried over into the layout with ip4/.
    moved = (grey / "ip4" / "192" / "000" / "002").stat()
    assert abs(moved.st_mtime - seen) < 1 and moved.st_atime > seen + 86400
    assert finals(talk(server.smtp, proxied="192.0.3.7"))[3] == GREY1  # a new one
    # A directory that is not there: the client is told to retry, and why is logged.
    missing = _serve(
        server_factory,
        dns_server,
        f':allow,JGREYLIST_DIR="{tmp_path / "nowhere"}"\n',
        name="missing",
    )
    assert finals(talk(missing.smtp, host="::1"))[3] == (
        "451 4.3.0 greylisting unavailable, try again later"
    )
    assert "does not exist" in missing.log_path.read_text()
    (tmp_path / "afile").write_text("")
    not_dir = _serve(
        server_factory, dns_server, f':allow,JGREYLIST_DIR="{tmp_path / "afile"}"\n', name="file"
    )
    assert finals(talk(not_dir.smtp, host="::1"))[3].startswith("451 4.3.0 ")
    assert "afile is not a directory" in not_dir.log_path.read_text()


# -- quail greylist clean -------------------------------------------------------------


def _entry(root: Path, path: str, age_days: float) -> Path:
    entry = root / path
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.touch()
    seen = time.time() - age_days * 86400
    os.utime(entry, (seen, seen - 3600))
    return entry


def test_clean_deletes_what_was_not_seen_for_days(tmp_path: Path) -> None:
    grey = tmp_path / "jgreylist"
    old4 = _entry(grey, "ip4/192/000/002", 40)
    new4 = _entry(grey, "ip4/192/000/003", 1)
    old6 = _entry(grey, "ip6/20/01/04/70/1f/0f/03/50", 31)
    week = _entry(grey, "ip4/010/000/000/001", 8)
    unpatched = _entry(grey, "198/051/100", 45)  # jgreylist without the IPv6 patch
    stray = _entry(grey, "README", 400)
    quail = QUAIL
    run = subprocess.run(
        [quail, "greylist", "clean", "--dir", str(grey)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "removed 3 entries not seen for 30 days, kept 2" in run.stdout
    assert not old4.exists() and not old6.exists() and not (grey / "ip6").exists()
    assert not unpatched.exists() and not (grey / "198").exists()
    assert new4.exists() and week.exists() and stray.exists()
    # --older-than, and the directory from control/greylistdir of --root.
    root = tmp_path / "root"
    (root / "control").mkdir(parents=True)
    (root / "control" / "greylistdir").write_text(f"{grey}\n")
    run = subprocess.run(
        [quail, "greylist", "clean", "--older-than", "7", "--root", str(root)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert not week.exists() and not (grey / "ip4" / "010").exists() and new4.exists()
    nowhere = subprocess.run(
        [quail, "greylist", "clean", "--dir", str(tmp_path / "nowhere")],
        check=False,
        capture_output=True,
        text=True,
    )
    assert nowhere.returncode == 2
    assert nowhere.stderr.startswith("quail greylist: ") and "not a directory" in nowhere.stderr


def test_clean_says_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    """A greylistdir that cannot be read, or a number of days that is not
    one: one line and an exit code (they were a traceback, or 'removed 0
    entries not seen for nan days')."""
    root = tmp_path / "root"
    (root / "control" / "greylistdir").mkdir(parents=True)  # a directory, not a file
    (tmp_path / "grey").mkdir()

    def clean(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [QUAIL, "greylist", "clean", *args], check=False, capture_output=True, text=True
        )

    unreadable = clean("--root", str(root))
    assert unreadable.returncode == 111
    assert unreadable.stderr == f"quail greylist: {root}/control/greylistdir: Is a directory\n"
    for days in ("nan", "-1"):
        bad = clean("--older-than", days, "--dir", str(tmp_path / "grey"))
        assert bad.returncode == 2, days
        assert bad.stderr.startswith("quail greylist: --older-than must be") and not bad.stdout


# -- the Redis store: two nodes, one greylist ------------------------------------------


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed (make peers)")
    pytest.importorskip("redis")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_redis_store_is_shared_by_two_nodes(
    server_factory: Callable[..., Running], dns_server: ZoneServer, redis_url: str
) -> None:
    import redis

    rules = ':allow,JGREYLIST_HOLDTIME="1"\n'
    control = {"greylistredis": redis_url}
    node_a = _serve(server_factory, dns_server, rules, control=control, name="a")
    node_b = _serve(server_factory, dns_server, rules, control=control, name="b")
    started = time.monotonic()
    assert finals(talk(node_a.smtp, proxied="198.51.100.9"))[3] == GREY1
    assert finals(talk(node_b.smtp, proxied="198.51.100.10"))[3] == GREY2  # A's sighting
    # After the hold time (one second on the Redis server's clock), node B lets
    # the network in.  The loop waits for that; nothing is timed.
    while True:
        reply = finals(talk(node_b.smtp, proxied="198.51.100.11"))[3]
        if reply.startswith("250 "):
            break
        assert reply == GREY2
        assert time.monotonic() - started < 30
        time.sleep(0.2)
    assert time.monotonic() - started >= 1.0
    client = redis.Redis.from_url(redis_url)
    try:
        entry = client.hgetall("greylist:ip4/198/051/100")
        assert set(entry) == {b"first", b"last"}
        assert float(entry[b"last"]) - float(entry[b"first"]) >= 1.0
        assert 0 < client.ttl("greylist:ip4/198/051/100") <= 30 * 86400
    finally:
        client.close()
    # node A agrees; a new network is greylisted on node A by a node-B sighting.
    assert finals(talk(node_a.smtp, proxied="198.51.100.12"))[3].startswith("250 ")
    assert finals(talk(node_b.smtp, proxied="203.0.113.5"))[3] == GREY1
    assert finals(talk(node_a.smtp, proxied="203.0.113.6"))[3] == GREY2


def test_redis_down_is_a_temporary_refusal(
    server_factory: Callable[..., Running], dns_server: ZoneServer
) -> None:
    pytest.importorskip("redis")
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    server = _serve(server_factory, dns_server, f':allow,JGREYLIST_REDIS="{dead}"\n')
    assert finals(talk(server.smtp, SESSION, host="::1"))[3] == (
        "451 4.3.0 greylisting unavailable, try again later"
    )
    assert "store failed: Redis 127.0.0.1" in server.log_path.read_text()


def test_check_is_registered_after_the_blocklists() -> None:
    from quailmail.policy import dnsbl, pipeline

    assert pipeline.CONNECT[:2] == (dnsbl.check, greylist.check)


def test_a_bad_redis_url_is_a_store_error() -> None:
    pytest.importorskip("redis")
    from quailmail.policy.greylist.redisstore import RedisStore
    from quailmail.policy.greylist.store import StoreError

    with pytest.raises(StoreError, match="bad Redis URL"):
        RedisStore("mysql://nowhere")
