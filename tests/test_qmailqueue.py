"""QMAILQUEUE: the qmail-queue protocol, `quail qmail-queue` at the end of a
chain, and `quail serve` handing messages to filter programs."""

from __future__ import annotations

import contextlib
import os
import smtplib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quailmail.config.tcprules import compile_rules
from quailmail.core.reply import Reply
from quailmail.queue import QueueSet
from quailmail.queue.qmailqueue import (
    EnvelopeError,
    encode_envelope,
    parse_envelope,
    reply_for_exit,
)

from serverfixtures import QUAIL, Running, wait_for

DATA = Path(__file__).parent / "data" / "qmailqueue"
QMAIL_QUEUE = str(Path(sys.executable).with_name("quail-qmail-queue"))
MESSAGE = b"From: a@example.com\r\nTo: postmaster@mx.test\r\nSubject: chain\r\n\r\nhello\r\n"


# -- the protocol ----------------------------------------------------------------------------


def test_envelope_round_trip_and_incomplete_input() -> None:
    data = encode_envelope("a@example.com", ["b@example.org", "c@example.net"])
    assert data == b"Fa@example.com\0Tb@example.org\0Tc@example.net\0\0"
    assert parse_envelope(data) == ("a@example.com", ["b@example.org", "c@example.net"])
    assert parse_envelope(data + b"ignored") == parse_envelope(data)
    assert parse_envelope(b"F\0\0") == ("", [])
    for cut in range(len(data)):
        assert parse_envelope(data[:cut]) is None  # read on


_ADDRESS = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
                   max_size=60)  # fmt: skip


@given(_ADDRESS, st.lists(_ADDRESS, max_size=5))
def test_envelope_round_trips_any_addresses(sender: str, recipients: list[str]) -> None:
    assert parse_envelope(encode_envelope(sender, recipients)) == (sender, recipients)


@given(st.binary(max_size=300))
def test_envelope_parser_takes_any_bytes(data: bytes) -> None:
    """Untrusted input (a filter may write anything): a result, None, or an
    EnvelopeError with one of qmail-queue's codes; nothing else."""
    try:
        parse_envelope(data)
    except EnvelopeError as exc:
        assert exc.code in (11, 54, 91)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"Xa@b\0\0", 91),
        (b"Fa@b\0Xc@d\0\0", 91),
        (b"F" + b"a" * 1003 + b"\0\0", 11),
        (b"Fa@b\0T" + b"r" * 2000, 11),
    ],
)
def test_envelope_errors_carry_qmail_queue_exit_codes(data: bytes, code: int) -> None:
    with pytest.raises(EnvelopeError) as caught:
        parse_envelope(data)
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("code", "reply"),
    [
        (11, Reply(554, "5.1.3", "envelope address too long for qq")),
        (31, Reply(554, "5.3.0", "mail server permanently rejected message")),
        (33, Reply(554, "5.3.0", "qq permanent problem")),
        (51, Reply(451, "4.3.0", "qq out of memory")),
        (53, Reply(451, "4.3.0", "qq write error or disk full")),
        (64, Reply(451, "4.3.0", "qq trouble creating files in queue")),
        (71, Reply(451, "4.3.0", "mail server temporarily rejected message")),
        (74, Reply(451, "4.4.2", "communication with mail server failed")),
        (91, Reply(451, "4.3.0", "qq internal bug")),
        (99, Reply(451, "4.3.0", "qq temporary problem")),
        (111, Reply(451, "4.3.0", "qq temporary problem")),
        (120, Reply(451, "4.3.0", "unable to exec qq")),
        (None, Reply(451, "4.3.0", "qq crashed")),
    ],
)
def test_exit_codes_answer_as_qmail_smtpd(code: int | None, reply: Reply) -> None:
    assert reply_for_exit(code) == reply


def test_exit_zero_is_success_unless_it_did_not_take_everything() -> None:
    assert reply_for_exit(0) is None
    assert reply_for_exit(0, write_failed=True) == Reply(451, "4.3.0", "qq read error")


# -- quail qmail-queue on its own ---------------------------------------------------------


def init_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    subprocess.run([QUAIL, "init", str(root), "--hostname", "mx.test"], check=True,
                   capture_output=True)  # fmt: skip
    return root


def qmail_queue(
    message: bytes, envelope: bytes, *, root: Path | None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run quail-qmail-queue as qmail-smtpd runs qmail-queue: the message on
    fd 0, the envelope on a pipe at fd 1."""
    read_end, write_end = os.pipe()
    environ = {k: v for k, v in os.environ.items() if k != "QUAIL_ROOT"}
    if root is not None:
        environ["QUAIL_ROOT"] = str(root)
    environ.update(env or {})
    with subprocess.Popen(
        [QMAIL_QUEUE], stdin=subprocess.PIPE, stdout=read_end, stderr=subprocess.PIPE, env=environ
    ) as proc:
        os.close(read_end)
        with contextlib.suppress(BrokenPipeError), os.fdopen(write_end, "wb") as pipe:
            pipe.write(envelope)  # small: fits the pipe before the message is read
        _, stderr = proc.communicate(message)
    return subprocess.CompletedProcess(proc.args, proc.returncode, b"", stderr)


def queued(root: Path) -> list[tuple[str, list[str], bytes, dict[str, str]]]:
    queue = QueueSet(root / "queue")
    return [
        (m.sender, list(m.recipients), queue.read_sync(m.id), dict(m.meta))
        for m in queue.messages()
    ]


def test_quail_qmail_queue_puts_into_the_inject_shard(tmp_path: Path) -> None:
    root = init_root(tmp_path)
    message = b"Subject: lf\n\nline one\nline two\n"
    envelope = encode_envelope("a@example.com", ["b@example.org", "c@example.net"])
    done = qmail_queue(message, envelope, root=root, env={"TCPREMOTEIP": "192.0.2.7"})
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""  # qmail-queue prints nothing when all is well
    [(sender, rcpts, data, meta)] = queued(root)
    assert (sender, rcpts) == ("a@example.com", ["b@example.org", "c@example.net"])
    assert data == b"Subject: lf\r\n\r\nline one\r\nline two\r\n"  # the queue keeps CRLF
    assert meta["client"] == "192.0.2.7"
    assert (root / "queue" / "inject").is_dir()


@pytest.mark.parametrize(
    ("envelope", "code", "words"),
    [
        (b"Fa@example.com\0Tb@example.org\0", 54, b"cut short"),
        (b"", 54, b"cut short"),
        (b"Fa@example.com\0Zb@example.org\0\0", 91, b"not T"),
        (b"F" + b"x" * 1100 + b"\0Tb@example.org\0\0", 11, b"too long"),
    ],
)
def test_quail_qmail_queue_refuses_bad_envelopes(
    tmp_path: Path, envelope: bytes, code: int, words: bytes
) -> None:
    root = init_root(tmp_path)
    done = qmail_queue(b"Subject: x\n\nx\n", envelope, root=root)
    assert done.returncode == code
    assert done.stderr.count(b"\n") == 1 and words in done.stderr
    assert b"Traceback" not in done.stderr
    assert queued(root) == []


def test_quail_qmail_queue_without_a_root(tmp_path: Path) -> None:
    done = qmail_queue(b"x\n", encode_envelope("", ["b@example.org"]), root=None)
    assert done.returncode == 61 and b"QUAIL_ROOT" in done.stderr
    done = qmail_queue(b"x\n", encode_envelope("", ["b@example.org"]), root=tmp_path)
    assert done.returncode == 62 and b"no queue" in done.stderr


# -- quail serve with QMAILQUEUE ------------------------------------------------------------


def rules(text: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        (root / "control" / "tcp.smtp").write_text(text)
        (root / "control" / "tcp.smtp.cdb").write_bytes(compile_rules(text))

    return setup


def delivered(server: Running) -> list[bytes]:
    new = server.root / "alias" / "Maildir" / "new"
    return [p.read_bytes() for p in sorted(new.iterdir())] if new.is_dir() else []


def log_of(server: Running) -> str:
    return server.log_path.read_text(errors="replace")


def test_a_chain_of_filters_ends_queued_and_delivered(
    server_factory: Callable[..., Running],
) -> None:
    server = server_factory(
        rules(f'127.:allow,RELAYCLIENT="",QMAILQUEUE="{DATA}/filter-a"\n:allow\n'), deliver=True
    )
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30) as client:
        client.ehlo("client.test")
        client.mail("a@example.com")
        client.rcpt("postmaster@mx.test")
        code, text = client.data(MESSAGE)
    assert code == 250 and text.startswith(b"2.0.0 ok ") and b" qp " in text
    wait_for(lambda: delivered(server), what="delivery to alias/Maildir")
    [mail] = delivered(server)
    head = mail.split(b"\n\n", 1)[0]
    lines = head.split(b"\n")
    # The fields of the chain on top, in the order the filters put them,
    # then our Received, then the message as sent.
    index = {line.split(b":", 1)[0]: i for i, line in enumerate(lines)}
    assert index[b"X-Filter-B"] < index[b"X-Filter-A"] < index[b"Received"]
    assert b"X-Filter-A: seen 127.0.0.1" in lines
    assert b"X-Filter-B: root known" in lines
    assert mail.endswith(b"Subject: chain\n\nhello\n")
    assert "queued through QMAILQUEUE" in log_of(server)
    # The message went through the inject shard: nothing of it stays queued.
    wait_for(lambda: not list(QueueSet(server.root / "queue").messages()), what="an empty queue")


@pytest.mark.parametrize(
    ("code", "reply_code", "enhanced"),
    [("31", 554, b"5.3.0"), ("71", 451, b"4.3.0"), ("11", 554, b"5.1.3"), ("0", 250, b"2.0.0")],
)
def test_exit_codes_of_the_program_answer_the_data(
    server_factory: Callable[..., Running], code: str, reply_code: int, enhanced: bytes
) -> None:
    server = server_factory(
        rules(f'127.:allow,RELAYCLIENT="",QMAILQUEUE="{DATA}/exitwith",QQ_EXIT="{code}"\n')
    )
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30) as client:
        client.ehlo("client.test")
        client.mail("a@example.com")
        client.rcpt("someone@example.org")
        answer, text = client.data(MESSAGE)
        assert (answer, text[:5]) == (reply_code, enhanced)
        # The session goes on: the next transaction is answered as usual.
        assert client.mail("b@example.com")[0] == 250
    assert list(QueueSet(server.root / "queue").messages()) == []  # exitwith queues nothing
    if code != "0":
        assert f"exit {code}" in log_of(server)


def test_a_program_that_cannot_run_is_a_temporary_failure(
    server_factory: Callable[..., Running],
) -> None:
    server = server_factory(
        rules('127.:allow,RELAYCLIENT="",QMAILQUEUE="/var/qmail/bin/simscan-not-here"\n')
    )
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30) as client:
        client.ehlo("client.test")
        client.mail("a@example.com")
        client.rcpt("someone@example.org")
        assert client.data(MESSAGE) == (451, b"4.3.0 unable to exec qq")
    assert "cannot run QMAILQUEUE /var/qmail/bin/simscan-not-here" in log_of(server)


def test_relative_program_runs_from_the_root(server_factory: Callable[..., Running]) -> None:
    def setup(root: Path) -> None:
        (root / "bin").mkdir()
        (root / "bin" / "record").symlink_to(DATA / "record")
        seen = root / "seen"
        seen.mkdir()
        rules(f'127.:allow,RELAYCLIENT="",QMAILQUEUE="bin/record",RECORD_DIR="{seen}"\n')(root)

    server = server_factory(setup)
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30) as client:
        client.ehlo("client.test")
        client.sendmail("a@example.com", ["x@example.org", "y@example.net"], MESSAGE)
    seen = server.root / "seen"
    assert (seen / "envelope").read_bytes() == b"Fa@example.com\0Tx@example.org\0Ty@example.net\0\0"
    message = (seen / "message").read_bytes()
    assert b"\r" not in message  # handed on with LF, as qmail-smtpd does
    assert message.startswith(b"Received: from client.test (")
    assert message.endswith(MESSAGE.replace(b"\r\n", b"\n"))
