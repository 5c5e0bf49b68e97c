"""`quail queue list|show|stats`, run as a user runs it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from quailmail.queue import Outcome, Queue

QUAIL = str(Path(sys.executable).with_name("quail"))


def quail(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [QUAIL, "queue", *args], capture_output=True, text=True, check=False, env=env
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture
def root(tmp_path: Path) -> tuple[Path, list[str]]:
    async def fill() -> list[str]:
        q = Queue.open(tmp_path / "queue")
        ids = [
            await q.put(
                "alice@example.com",
                ["bob@example.org", "jörg@bücher.example"],
                b"From: alice@example.com\r\nSubject: one\r\n\r\nsecret body\r\n",
                meta={"helo": "mail.example.com"},
            ),
            await q.put("", ["carol@example.net"], b"Subject: two\n\nbody\n"),
            await q.put("x@y", ["z@w"], b"Subject: three\r\n\r\n"),
        ]
        await q.mark_done(ids[0], 0, Outcome.DELIVERED)
        await q.mark_done(ids[2], 0, Outcome.BOUNCED)  # its only recipient: gone
        await q.close()
        return ids

    return tmp_path, asyncio.run(fill())


def test_stats(root: tuple[Path, list[str]]) -> None:
    path, _ = root
    proc = quail("stats", "--json", "--root", str(path))
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["messages"] == 2 and stats["recipients"] == 2
    env = {**os.environ, "QUAIL_ROOT": str(path)}
    proc = quail("stats", env=env)
    assert "messages: 2\n" in proc.stdout and "recipients: 2\n" in proc.stdout


def test_list(root: tuple[Path, list[str]]) -> None:
    path, ids = root
    proc = quail("--root", str(path), "list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ids[:2]
    assert "<alice@example.com>" in lines[0] and lines[0].endswith("1/2")
    assert "<>" in lines[1] and lines[1].endswith("1/1")
    rows = [
        json.loads(line)
        for line in quail("list", "--json", "--root", str(path)).stdout.splitlines()
    ]
    assert rows[0]["recipients"][1] == {"address": "jörg@bücher.example", "state": "pending"}
    assert rows[0]["recipients"][0]["state"] == "delivered"


def test_show(root: tuple[Path, list[str]]) -> None:
    path, ids = root
    proc = quail("show", ids[0], "--root", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "sender: <alice@example.com>" in proc.stdout
    assert "recipient: <bob@example.org> delivered" in proc.stdout
    assert "recipient: <jörg@bücher.example> pending" in proc.stdout
    assert "meta: helo=mail.example.com" in proc.stdout
    assert "Subject: one" in proc.stdout
    assert "secret body" not in proc.stdout  # headers only
    shown = json.loads(quail("show", "--json", ids[1], "--root", str(path)).stdout)
    assert shown["headers"] == "Subject: two"


def test_errors_are_one_line(root: tuple[Path, list[str]], tmp_path: Path) -> None:
    path, ids = root
    for args, code, text in [
        (("show", ids[2], "--root", str(path)), 1, "no message"),  # done: gone
        (("show", "nonsense", "--root", str(path)), 1, "no message"),
        (("stats", "--root", str(tmp_path / "missing")), 2, "not a directory"),
        (("stats", "--root", str(path / "queue")), 2, "no queue at"),
    ]:
        proc = quail(*args)
        assert proc.returncode == code, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and text in proc.stderr, proc.stderr
    env = {k: v for k, v in os.environ.items() if k != "QUAIL_ROOT"}
    proc = quail("stats", env=env)
    assert proc.returncode == 2 and "--root" in proc.stderr


def test_reads_beside_a_writer(root: tuple[Path, list[str]]) -> None:
    """A read-only look while the queue is open for writing takes no lock."""
    path, _ = root

    async def main() -> str:
        q = Queue.open(path / "queue")
        await q.put("a@b", ["c@d"], b"x")
        proc = await asyncio.to_thread(quail, "stats", "--json", "--root", str(path))
        await q.close()
        return proc.stdout

    assert json.loads(asyncio.run(main()))["messages"] == 3
