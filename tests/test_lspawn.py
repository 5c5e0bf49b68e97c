"""qmail-lspawn's process (deliver/lspawn.py): the framing, the helper that
forks per delivery as another uid, and a real `quail serve` whose helper
takes many deliveries at once, dies mid-delivery, and goes with the server.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from quailmail.deliver.asuser import deliver_as_user
from quailmail.deliver.local import LocalResult, Mailbox
from quailmail.deliver.lspawn import MAX_HEADER, Frame, FrameError, Frames, Lspawn, frame

from serverfixtures import Running, maildir, wait_for
from systemusers import SystemUser

# -- frames ---------------------------------------------------------------


def test_frames_round_trip_at_any_split() -> None:
    sent = [Frame(1, b'{"uid": 5}', b"Subject: x\n\nbody\n"), Frame(2**40, b"{}"), Frame(3, b"")]
    stream = b"".join(frame(f.ident, f.header, f.body) for f in sent)
    for cut in range(len(stream) + 1):
        frames = Frames()
        got = frames.feed(stream[:cut]) + frames.feed(stream[cut:])
        frames.eof()
        assert got == sent
    frames = Frames()
    assert [f for byte in stream for f in frames.feed(bytes([byte]))] == sent


def test_a_truncated_frame_is_an_error_at_eof() -> None:
    whole = frame(7, b'{"kind": "ok"}')
    for cut in range(1, len(whole)):
        frames = Frames()
        assert frames.feed(whole[:cut]) == []
        with pytest.raises(FrameError, match="inside a frame"):
            frames.eof()


def test_a_header_too_long_is_refused_before_it_is_read() -> None:
    frames = Frames()
    with pytest.raises(FrameError, match="header of"):
        frames.feed(frame(1, b"")[:8] + (MAX_HEADER + 1).to_bytes(4, "big") + b"\0\0\0\0")


def helper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "quailmail.deliver.lspawn"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        cwd="/",
    )


def test_the_helper_answers_a_bad_request_and_exits_when_stdin_closes() -> None:
    with helper() as proc:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(frame(9, b"not json", b"message"))
        proc.stdin.write(frame(10, b'{"uid": -1, "gid": 0}'))
        proc.stdin.close()
        frames = Frames()
        got = frames.feed(proc.stdout.read())
        frames.eof()
        assert proc.wait(timeout=30) == 0
    assert [f.ident for f in got] == [9, 10]
    assert all(b'"temporary"' in f.header and b"bad request" in f.header for f in got)


def test_the_helper_exits_on_a_truncated_request() -> None:
    with helper() as proc:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(frame(1, b'{"uid": 1, "gid": 1}', b"message")[:-3])
        proc.stdin.close()
        assert proc.stdout.read() == b""
        assert proc.wait(timeout=30) == 0


# -- the helper as root, to real users ----------------------------------------


def mailbox(user: SystemUser, ext: str = "") -> Mailbox:
    return Mailbox(user.home, user.name, user.name, "mx.test", ext, uid=user.uid, gid=user.gid)


def children_of(pid: int) -> list[int]:
    """pids whose parent is `pid` (zombies included)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def state(pid: int) -> str | None:
    """The process's state letter (Z: a zombie), None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def running(pid: int) -> bool:
    return state(pid) not in (None, "Z")


def test_concurrent_deliveries_share_one_helper(system_user: Callable[..., SystemUser]) -> None:
    ann, bob = system_user(), system_user()
    ann_md, bob_md = ann.maildir(), bob.maildir()
    ann.write(".qmail-die", "|kill -9 $PPID\n")  # the delivering child itself

    async def run() -> tuple[list[LocalResult], LocalResult, set[int | None]]:
        async with Lspawn() as spawn:
            pids: set[int | None] = set()

            async def one(user: SystemUser, n: int) -> LocalResult:
                result = await deliver_as_user(
                    mailbox(user), b"Subject: %d\n\nbody\n" % n, sender="a@b.test",
                    junk_folder=False, command_timeout=30, lspawn=spawn,
                )  # fmt: skip
                pids.add(spawn.pid)
                return result

            results = await asyncio.gather(*(one((ann, bob)[n % 2], n) for n in range(40)))
            died = await deliver_as_user(
                mailbox(ann, "die"), b"Subject: die\n\n", sender="", junk_folder=False,
                command_timeout=30, lspawn=spawn,
            )  # fmt: skip
            assert spawn.pid is not None and children_of(spawn.pid) == []  # all reaped
            return results, died, pids

    results, died, pids = asyncio.run(run())
    assert [r.outcome.kind for r in results] == ["ok"] * 40
    assert len(pids) == 1
    for user, md in ((ann, ann_md), (bob, bob_md)):
        files = sorted((md / "new").iterdir())
        assert len(files) == 20
        assert {f.stat().st_uid for f in files} == {user.uid}
    assert died.outcome.kind == "temporary"
    assert "ended without an answer: killed by signal 9" in died.outcome.reason


def test_a_cancelled_delivery_kills_its_child(system_user: Callable[..., SystemUser]) -> None:
    joe = system_user()
    started = joe.home / "started"
    joe.write(
        ".qmail-wait", f"|echo $$ > {started}.tmp; mv {started}.tmp {started}; exec sleep 600\n"
    )

    async def run() -> tuple[int, list[int]]:
        async with Lspawn() as spawn:
            task = asyncio.ensure_future(
                deliver_as_user(
                    mailbox(joe, "wait"),
                    b"Subject: w\n\n",
                    sender="",
                    junk_folder=False,
                    command_timeout=600,
                    lspawn=spawn,
                )
            )
            while not started.exists():
                await asyncio.sleep(0.02)
            assert spawn.pid is not None
            pid, child = spawn.pid, children_of(spawn.pid)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            deadline = time.monotonic() + 20
            while children_of(pid) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert children_of(pid) == []
            return pid, child

    start = time.monotonic()
    pid, child = asyncio.run(run())
    assert time.monotonic() - start < 20  # close() did not wait out the sleep
    assert len(child) == 1 and not running(child[0]) and not running(pid)
    # The program has a session of its own, as under qmail-local: it outlives the child.
    os.kill(int(started.read_text()), signal.SIGKILL)


# -- a real server ------------------------------------------------------------

STARTED = re.compile(r"qmail-lspawn's part started: pid (\d+)")


def helpers(server: Running) -> list[int]:
    return [int(pid) for pid in STARTED.findall(server.log_path.read_text(errors="replace"))]


def send(server: Running, rcpts: list[str], subject: str) -> None:
    data = f"From: a@sender.test\r\nSubject: {subject}\r\n\r\nbody\r\n".encode()
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30) as client:
        assert client.sendmail("a@sender.test", rcpts, data) == {}


def zombies_under(pid: int) -> list[int]:
    """Zombies among `pid`'s descendants."""
    found, todo = [], [pid]
    while todo:
        for child in children_of(todo.pop()):
            if state(child) == "Z":
                found.append(child)
            todo.append(child)
    return found


def test_many_deliveries_to_two_users_through_a_server(
    system_user: Callable[..., SystemUser], server_factory: Callable[..., Running]
) -> None:
    ann, bob = system_user(), system_user()
    ann_md, bob_md = ann.maildir(), bob.maildir()

    def setup(root: Path) -> None:
        (root / "control" / "concurrencylocal").write_text("20\n")

    server = server_factory(setup, deliver=True)

    async def send_all() -> None:
        async def one(n: int) -> None:
            rcpts = [f"{ann.name}@mx.test", f"{bob.name}@mx.test"]
            await asyncio.to_thread(send, server, rcpts, f"many {n}")

        await asyncio.gather(*(one(n) for n in range(50)))

    asyncio.run(send_all())
    wait_for(lambda: len(maildir(ann_md)) == 50 and len(maildir(bob_md)) == 50,
             what="50 messages each")  # fmt: skip
    for user, md in ((ann, ann_md), (bob, bob_md)):
        files = list((md / "new").iterdir())
        assert {f.stat().st_uid for f in files} == {user.uid}
        assert {f.read_bytes().split(b"Subject: ")[1].split(b"\n")[0] for f in files} == {
            b"many %d" % n for n in range(50)
        }
    started = helpers(server)
    assert 1 <= len(started) <= 2  # one helper per worker that delivered
    assert zombies_under(server.process.pid) == []
    server.stop()
    assert [pid for pid in started if running(pid)] == []


def test_a_helper_killed_mid_delivery_defers_and_a_new_one_delivers(
    system_user: Callable[..., SystemUser], server_factory: Callable[..., Running]
) -> None:
    joe = system_user()
    md = joe.maildir()
    waiting, release = joe.home / "waiting", joe.home / "release"
    # The first attempt waits (in a program of its own session) until released.
    joe.write(".qmail", f"|test -e {release} || {{ touch {waiting}; "
                        f"while ! test -e {release}; do sleep 0.05; done; exit 111; }}\n"
                        "./Maildir/\n")  # fmt: skip
    server = server_factory(deliver=True)
    send(server, [f"{joe.name}@mx.test"], "killed")
    wait_for(waiting.exists, what="the first attempt under way")
    (first,) = helpers(server)
    os.kill(first, signal.SIGKILL)
    log = server.log_path
    wait_for(lambda: "unable to run qmail-lspawn's part" in log.read_text(), what="the deferral")
    assert "deliveries deferred" in log.read_text()
    release.touch()
    flushed = [0.0]

    def delivered() -> bool:
        # flushed until the deferral is recorded and the retry is under way
        if time.monotonic() - flushed[0] > 1:
            assert server.quail("queue", "flush").returncode == 0
            flushed[0] = time.monotonic()
        return len(maildir(md)) == 1

    wait_for(delivered, what="the retry's delivery")
    assert (md / "new").iterdir().__next__().stat().st_uid == joe.uid
    started = helpers(server)
    assert started[0] == first and len(started) == 2 and running(started[1])
    assert not running(first)
    assert zombies_under(server.process.pid) == []
    server.stop()
    assert not running(started[1])


def test_a_killed_server_leaves_no_helper(
    system_user: Callable[..., SystemUser], server_factory: Callable[..., Running]
) -> None:
    joe = system_user()
    md = joe.maildir()
    server = server_factory(deliver=True)
    send(server, [f"{joe.name}@mx.test"], "before the kill")
    wait_for(lambda: maildir(md), what="the delivery")
    (helper_pid,) = helpers(server)
    workers = children_of(server.process.pid)
    assert running(helper_pid)
    server.process.kill()  # the supervisor: its workers die with it (PDEATHSIG)
    server.process.wait()
    wait_for(lambda: not any(running(pid) for pid in [*workers, helper_pid]),
             what="workers and helper gone")  # fmt: skip
