"""QMAILQUEUE's custom error (the "qmail-queue-custom-error" patch, simscan's
--enable-custom-smtp-reject): a program writes `D` or `Z` and its text on
descriptor 4 and exits 82; the client gets `554` or `451` with that text."""

from __future__ import annotations

import asyncio
import errno
import os
import re
import signal
import smtplib
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from quailmail.config.control import Control
from quailmail.core.reply import Reply
from quailmail.dns.resolver import make_resolver
from quailmail.policy.base import Client, Message
from quailmail.queue import QueueSet
from quailmail.queue.qmailqueue import custom_reply, reply_for_exit
from quailmail.server import qmailqueue

from policyfixtures import write_rules
from serverfixtures import Running, wait_for

DATA = Path(__file__).parent / "data" / "qmailqueue"
MESSAGE = b"From: a@example.com\r\nTo: someone@example.org\r\nSubject: custom\r\n\r\nhello\r\n"
SPAM = b"DYour email is considered spam (12.3 hits)"
TEMPORARY = b"ZVirus scanner unavailable, try again later"


# -- the answer to exit 82 (pure) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reply"),
    [
        (SPAM, Reply(554, "5.3.0", "Your email is considered spam (12.3 hits)")),
        (TEMPORARY, Reply(451, "4.3.0", "Virus scanner unavailable, try again later")),
        (b"Dbanned attachment (#5.7.1)", Reply(554, "5.7.1", "banned attachment (#5.7.1)")),
        (b"Zgreylisted (#4.7.1)\n", Reply(451, "4.7.1", "greylisted (#4.7.1)")),
        # An enhanced code of the other class is not taken (RFC 3463 §2).
        (b"Dodd (#4.7.1)", Reply(554, "5.3.0", "odd (#4.7.1)")),
        (b"Dnot at the end (#5.7.1) here", Reply(554, "5.3.0", "not at the end (#5.7.1) here")),
        # qmail-smtpd: 554 for D, 451 for anything else.
        (b"Xsomething", Reply(451, "4.3.0", "something")),
        (b"Dfirst line\r\nsecond line", Reply(554, "5.3.0", "first line")),
        (b"Dtab\there \x00\x1b[31m\xc3\xa4", Reply(554, "5.3.0", "tab?here ??[31m??")),
        (b"Dok", Reply(554, "5.3.0", "ok")),
    ],
)
def test_custom_reply(data: bytes, reply: Reply) -> None:
    assert custom_reply(data) == reply
    assert reply_for_exit(82, custom=data) == reply


@pytest.mark.parametrize("data", [b"", b"D", b"Dx", b"D\n", b"D   \nhidden", b"\r\nZ"])
def test_no_usable_custom_text_is_the_temporary_problem(data: bytes) -> None:
    assert custom_reply(data) is None
    assert reply_for_exit(82, custom=data) == Reply(451, "4.3.0", "qq temporary problem")


def test_a_long_custom_text_fits_one_reply_line() -> None:
    reply = custom_reply(b"D" + b"x" * 2000)
    assert reply is not None
    # RFC 5321 §4.5.3.1.5: 512 octets with CRLF, even with the longest code.
    assert len(reply.render()) <= 512
    assert len(Reply(554, "5.999.999", reply.text).render()) == 512


def test_custom_text_counts_only_with_exit_82() -> None:
    for code in (0, 31, 71, 81, 111):
        assert reply_for_exit(code, custom=SPAM) == reply_for_exit(code)


# -- quail serve: the program's descriptor 4 ------------------------------------------------


def custom_rules(text: str, answer: bytes | None = None) -> Callable[[Path], None]:
    """Rules for 127.; `$ANSWER` in `text` names a file holding `answer`."""

    def setup(root: Path) -> None:
        rules = text
        if answer is not None:
            (root / "answer").write_bytes(answer)
            rules = text.replace("$ANSWER", str(root / "answer"))
        (root / "control" / "workers").write_text("1\n")  # one process: its log, its fds
        write_rules(root, rules)

    return setup


def data_answer(server: Running) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30) as client:
        client.ehlo("client.test")
        client.mail("a@example.com")
        client.rcpt("someone@example.org")
        answer = client.data(MESSAGE)
        # The session goes on after a custom refusal.
        assert client.rset()[0] == 250
    return answer


def queued(root: Path) -> int:
    return len(list(QueueSet(root / "queue").messages()))


def log_of(server: Running) -> str:
    return server.log_path.read_text(errors="replace")


CUSTOM = f'127.:allow,RELAYCLIENT="",QMAILQUEUE="{DATA}/custom",QQ_CUSTOM_FILE="$ANSWER"\n'


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (SPAM, (554, b"5.3.0 Your email is considered spam (12.3 hits)")),
        (TEMPORARY, (451, b"4.3.0 Virus scanner unavailable, try again later")),
    ],
    ids=["D-permanent", "Z-temporary"],
)
def test_a_custom_error_answers_with_the_filters_text(
    server_factory: Callable[..., Running], answer: bytes, expected: tuple[int, bytes]
) -> None:
    server = server_factory(custom_rules(CUSTOM, answer))
    assert data_answer(server) == expected
    assert queued(server.root) == 0
    code, text = expected
    assert f"exit 82: {code} {text.decode()}" in log_of(server)


def test_qmails_enhanced_code_in_the_text_is_used(server_factory: Callable[..., Running]) -> None:
    answer = b"DYour email was rejected because it contains a bad attachment: x.exe (#5.7.1)"
    server = server_factory(custom_rules(CUSTOM, answer))
    assert data_answer(server) == (
        554,
        b"5.7.1 Your email was rejected because it contains a bad attachment: x.exe (#5.7.1)",
    )


def test_exit_82_without_a_text_is_the_temporary_problem(
    server_factory: Callable[..., Running],
) -> None:
    server = server_factory(custom_rules(f'127.:allow,RELAYCLIENT="",QMAILQUEUE="{DATA}/custom"\n'))
    assert data_answer(server) == (451, b"4.3.0 qq temporary problem")


def test_a_text_with_any_other_exit_is_ignored(server_factory: Callable[..., Running]) -> None:
    server = server_factory(custom_rules(CUSTOM.replace("\n", ',QQ_EXIT="31"\n'), SPAM))
    assert data_answer(server) == (554, b"5.3.0 mail server permanently rejected message")


def test_a_long_multi_line_binary_text_is_one_safe_line(
    server_factory: Callable[..., Running],
) -> None:
    # 200 KB: more than a pipe holds, so the server must read on while the
    # program writes; only the first line of the first 1,024 bytes counts.
    answer = b"DBad\x00 \xff\x1b[1mthing " + b"x" * 600 + b"\r\nSecond line\n" + b"y" * 200_000
    server = server_factory(custom_rules(CUSTOM, answer))
    code, text = data_answer(server)
    assert code == 554
    assert text == b"5.3.0 Bad? ??[1mthing " + b"x" * (496 - len("Bad? ??[1mthing "))
    assert b"Second" not in text and b"\r" not in text


def test_a_filter_that_passes_the_message_on_still_queues(
    server_factory: Callable[..., Running],
) -> None:
    """No text on descriptor 4, exit 0 from quail-qmail-queue: queued, as
    before.  The program gets exactly descriptors 0, 1, 2 and 4."""

    def setup(root: Path) -> None:
        seen = root / "seen"
        seen.mkdir()
        rules = f'127.:allow,RELAYCLIENT="",QMAILQUEUE="{DATA}/fds",RECORD_DIR="{seen}"\n'
        custom_rules(rules)(root)

    server = server_factory(setup)
    code, text = data_answer(server)
    assert code == 250 and text.startswith(b"2.0.0 ok "), text
    assert queued(server.root) == 1
    assert given_fds(server.root / "seen" / "fds") == [0, 1, 2, 4]


def given_fds(listing: Path) -> list[int]:
    """The descriptors `fds` found open, each a pipe but for the shell's
    hold on its script (`ls -l /proc/PID/fd`: "… 0 -> pipe:[123]")."""
    given = {}
    for line in listing.read_text().splitlines():
        if " -> " in line:
            left, target = line.split(" -> ", 1)
            if target != str(DATA / "fds"):
                given[int(left.split()[-1])] = target
    assert all(target.startswith("pipe:") for target in given.values()), given
    return sorted(given)


def test_the_custom_error_comes_through_quail_dkverify(
    server_factory: Callable[..., Running],
) -> None:
    """QMAILQUEUE=quail-dkverify, DKQUEUE the exit-82 program: dkverify execs
    it with descriptor 4 as it came, so its text reaches the client."""
    server = server_factory(
        custom_rules(
            f'127.:allow,RELAYCLIENT="",QMAILQUEUE="quail-dkverify",DKQUEUE="{DATA}/custom",'
            'QQ_CUSTOM_FILE="$ANSWER"\n',
            SPAM,
        )
    )
    assert data_answer(server) == (554, b"5.3.0 Your email is considered spam (12.3 hits)")
    assert queued(server.root) == 0


# -- the server's side in this process: descriptors, both event loops ------------------------


def _runners() -> list[Any]:
    runners: list[Any] = [pytest.param(asyncio.run, id="asyncio")]
    try:
        import uvloop
    except ImportError:
        return runners
    return [*runners, pytest.param(uvloop.run, id="uvloop")]


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def in_process(root: Path, **env: str) -> tuple[Client, Message]:
    (root / "control").mkdir(exist_ok=True)
    (root / "answer").write_bytes(SPAM)
    client = Client(
        root=root,
        control=Control(root),
        resolver=make_resolver(["127.0.0.1"], None),
        hostname="mx.test",
        ip="192.0.2.7",
        env={"QQ_CUSTOM_FILE": str(root / "answer"), "RECORD_DIR": str(root), **env},
    )
    return client, Message("a@example.com", ["b@example.org"], [MESSAGE], len(MESSAGE))


@pytest.mark.parametrize("runner", _runners())
def test_run_passes_fd_4_and_leaks_no_descriptor(
    tmp_path: Path, runner: Callable[[Coroutine[Any, Any, list[Reply]]], list[Reply]]
) -> None:
    client, message = in_process(tmp_path)

    async def each(programs: list[str]) -> list[Reply]:
        replies = []
        for program in programs:
            client.env["QMAILQUEUE"] = program
            replies.append(await qmailqueue.run(client, message))
        return replies

    programs = ["custom", "exitwith", "missing", "fds"]
    paths = [str(DATA / name) for name in programs]
    runner(each(paths))  # the loop's own first-use descriptors
    before = _open_fds()
    replies = runner(each(paths))
    assert _open_fds() == before  # none of the pipes stays open here
    # qmail-smtpd's "ok <time> qp <pid>": the time of the run, the program's pid.
    assert re.fullmatch(r"ok \d{10} qp [1-9]\d*", replies[1].text), replies[1].text
    assert given_fds(tmp_path / "fds") == [0, 1, 2, 4]  # nor reaches the program
    assert replies == [
        Reply(554, "5.3.0", "Your email is considered spam (12.3 hits)"),
        Reply(250, "2.0.0", replies[1].text),  # exitwith: QQ_EXIT unset, exit 0
        Reply(451, "4.3.0", "unable to exec qq"),
        Reply(451, "4.3.0", "qq trouble creating files in queue"),  # no queue in this root
    ]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, not yet reaped


def test_a_descendant_holding_fd_4_costs_the_grace_time_only(tmp_path: Path) -> None:
    """qmail.c reads fd 4 to its end, which a descendant of the filter may
    hold for long; the server waits `_GRACE` seconds and answers with what
    came by then."""
    client, message = in_process(tmp_path, QMAILQUEUE=str(DATA / "linger"))
    started = time.monotonic()
    try:
        reply = asyncio.run(qmailqueue.run(client, message))
    finally:
        os.kill(int((tmp_path / "linger.pid").read_text()), signal.SIGKILL)
    assert reply == Reply(554, "5.3.0", "Your email is considered spam (12.3 hits)")
    assert time.monotonic() - started < 30  # not the sleep's 60 s


def test_a_program_past_the_timeout_is_killed_with_its_descendants(tmp_path: Path) -> None:
    client, message = in_process(tmp_path, QMAILQUEUE=str(DATA / "linger"), LINGER_WAIT="1")
    (tmp_path / "control" / "timeoutsmtpd").write_text("1\n")
    reply = asyncio.run(qmailqueue.run(client, message))
    assert reply == Reply(451, "4.3.0", "qq timeout")
    sleeper = int((tmp_path / "linger.pid").read_text())
    wait_for(lambda: not alive(sleeper), timeout=10, what="the filter's sleep killed")


def test_without_pidfd_a_thread_waits_for_the_program(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kernel before 5.3 has no pidfd_open: the end is waited for in a
    thread, with the same answers and no descriptor left open."""

    def no_pidfd(pid: int, flags: int = 0) -> int:
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    client, message = in_process(tmp_path, QMAILQUEUE=str(DATA / "custom"))
    asyncio.run(qmailqueue.run(client, message))  # the loop's own first-use descriptors
    before = _open_fds()
    assert asyncio.run(qmailqueue.run(client, message)) == Reply(
        554, "5.3.0", "Your email is considered spam (12.3 hits)"
    )
    client.env["QMAILQUEUE"] = str(DATA / "exitwith")
    assert asyncio.run(qmailqueue.run(client, message)).code == 250
    assert _open_fds() == before
