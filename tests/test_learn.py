"""`quail learn`: seed 003's nightly job against Debian's spamd (--allow-tell).

Old messages in the `.Junk/cur` folders are told to spamd as spam and
deleted; recent ones, `new/`, and inboxes are left; spamd's Bayes database
counts what it learnt (sa-learn --dump magic)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from quailmail.cli.learn import junk_folders, old_messages

from serverfixtures import QUAIL, free_port
from spamdfixtures import start_spamd

pytestmark = pytest.mark.peer

DAY = 86400


def spam(n: int) -> bytes:
    # Distinct words so Bayes has tokens to learn; distinct Message-IDs.
    return (
        f"From: Winner {n} <prize{n}@lottery.test>\nTo: joe@example.com\n"
        f"Subject: claim your prize number {n}\nMessage-ID: <prize{n}@lottery.test>\n"
        "Date: Sat, 21 Nov 2026 10:00:00 +0000\n\n"
        f"Congratulations, ticket {n} won a million. Send your bank details today.\n"
    ).encode()


def put(folder: Path, name: str, data: bytes, age_days: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    when = time.time() - age_days * DAY
    os.utime(path, (when, when))
    return path


def learn(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [QUAIL, "learn", "--root", str(root), *args], capture_output=True, text=True, check=False
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Two users with Junk folders (vpopmail layout), an alias Maildir with one."""
    r = tmp_path / "root"
    (r / "control").mkdir(parents=True)
    joe = r / "domains" / "example.com" / "joe" / "Maildir"
    ann = r / "domains" / "example.org" / "ann" / "Maildir"
    put(joe / ".Junk" / "cur", "1.old:2,S", spam(1), 6)
    put(joe / ".Junk" / "cur", "2.old:2,S", spam(2), 5.01)
    put(joe / ".Junk" / "cur", "3.recent:2,S", spam(3), 4.5)
    put(joe / ".Junk" / "new", "4.unseen", spam(4), 30)
    put(joe / "cur", "5.inbox:2,S", spam(5), 30)  # the inbox: never
    put(ann / ".Junk" / "cur", "6.old:2,", spam(6), 10)
    (ann / ".Junk" / "tmp").mkdir()
    put(r / "alias" / "Maildir" / ".Junk" / "cur", "7.old:2,S", spam(7), 7)
    return r


def test_walks_as_the_seed_does(root: Path) -> None:
    folders = junk_folders(root)
    assert [f.relative_to(root).as_posix() for f in folders] == [
        "alias/Maildir/.Junk",
        "domains/example.com/joe/Maildir/.Junk",
        "domains/example.org/ann/Maildir/.Junk",
    ]
    old = old_messages(folders, time.time() - 5 * DAY, include_new=False)
    assert sorted(p.name for p in old) == ["1.old:2,S", "2.old:2,S", "6.old:2,", "7.old:2,S"]
    with_new = old_messages(folders, time.time() - 5 * DAY, include_new=True)
    assert "4.unseen" in {p.name for p in with_new}


def test_walks_the_homes_users_assign_names(root: Path, tmp_path: Path) -> None:
    # A QmailToaster tree moved over: its domains stay in ~vpopmail/domains.
    moved = tmp_path / "vpopmail" / "domains" / "sample.com"
    put(moved / "bob" / "Maildir" / ".Junk" / "cur", "8.old:2,S", spam(8), 9)
    assign = root / "users" / "assign"
    assign.parent.mkdir()
    assign.write_text(f"+sample.com-:sample.com:89:89:{moved}:-::\n+joe-:joe:1:1:domains:-::\n.\n")
    found = [f.relative_to(tmp_path).as_posix() for f in junk_folders(root)]
    assert found == [  # each once, though domains/ is also an assign home
        "root/alias/Maildir/.Junk",
        "root/domains/example.com/joe/Maildir/.Junk",
        "root/domains/example.org/ann/Maildir/.Junk",
        "vpopmail/domains/sample.com/bob/Maildir/.Junk",
    ]


def test_learns_and_deletes_old_junk(root: Path) -> None:
    spamd = start_spamd(allow_tell=True)
    try:
        (root / "control" / "spamd").write_text(spamd.spec + "\n")
        done = learn(root)
        assert done.returncode == 0, done.stderr
        assert done.stdout == ("4 of 4 messages from 3 Junk folders deleted: 4 learnt as spam\n")
        assert spamd.nspam() == 4
        left = sorted(p.name for p in root.rglob("*") if p.is_file())
        assert left == ["3.recent:2,S", "4.unseen", "5.inbox:2,S", "spamd"]
        # Already learnt: deleted, and said so.
        joe_junk = root / "domains" / "example.com" / "joe" / "Maildir" / ".Junk"
        put(joe_junk / "cur", "8.again:2,S", spam(1), 9)
        done = learn(root, "--spamd", str(spamd.socket_path), "--include-new")
        assert done.returncode == 0, done.stderr
        assert done.stdout == (
            "2 of 2 messages from 3 Junk folders deleted: "
            "1 learnt as spam, 1 known to spamd already\n"
        )
        assert spamd.nspam() == 5
        # --older-than 0: everything in cur/.
        done = learn(root, "--older-than", "0")
        assert done.returncode == 0, done.stderr
        assert not (joe_junk / "cur" / "3.recent:2,S").exists()
        assert spamd.nspam() == 6
    finally:
        spamd.stop()


def _without_dac_override() -> list[str]:
    """A command prefix under which a mode-000 file is unreadable, root or not."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to drop root's file access override")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}"]


def test_an_unreadable_message_or_folder_is_passed_over(root: Path) -> None:
    # As the seed's loop passes over what sa-learn cannot read, and goes on.
    ann_message = (
        root / "domains" / "example.org" / "ann" / "Maildir" / ".Junk" / "cur" / "6.old:2,"
    )
    alias_cur = root / "alias" / "Maildir" / ".Junk" / "cur"
    ann_message.chmod(0)
    alias_cur.chmod(0)
    spamd = start_spamd(allow_tell=True)
    try:
        done = subprocess.run(
            [*_without_dac_override(), QUAIL, "learn", "--root", str(root), "--spamd", spamd.spec],
            capture_output=True,
            text=True,
            check=False,
        )
        assert spamd.nspam() == 2
    finally:
        spamd.stop()
        alias_cur.chmod(0o700)
    assert done.returncode == 1
    assert done.stdout == "2 of 3 messages from 3 Junk folders deleted: 2 learnt as spam\n"
    said = [line for line in done.stderr.splitlines() if not line.startswith("[")]  # the bar
    assert said == [
        f"quail learn: cannot read {alias_cur}: Permission denied",
        f"quail learn: cannot read {ann_message}: Permission denied",
    ]
    assert ann_message.exists() and (alias_cur / "7.old:2,S").exists()  # left for next time


def test_spamd_without_allow_tell_stops_with_one_line(root: Path) -> None:
    spamd = start_spamd(allow_tell=False)
    try:
        done = learn(root, "--spamd", spamd.spec)
    finally:
        spamd.stop()
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"quail learn: spamd {spamd.spec}: 69 ")
    assert "allow-tell" in line and line.endswith("(0 learnt as spam until then)")
    assert len(list(root.rglob("*.old*"))) == 4  # nothing deleted


def test_spamd_unreachable_and_bad_arguments(root: Path) -> None:
    done = learn(root, "--spamd", f"127.0.0.1:{free_port()}")
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("quail learn: spamd 127.0.0.1:")
    assert len(list(root.rglob("*.old*"))) == 4
    bad = learn(root, "--spamd", "no such:host")
    assert (bad.returncode, bad.stderr.count("\n")) == (2, 1)
    assert "not a spamd address" in bad.stderr
    missing = learn(root / "nowhere")
    assert (missing.returncode, missing.stderr.strip()) == (
        2,
        f"quail learn: {root / 'nowhere'}: not a directory",
    )


def test_nothing_to_learn(tmp_path: Path) -> None:
    (tmp_path / "control").mkdir()
    done = learn(tmp_path, "--spamd", f"127.0.0.1:{free_port()}")
    assert (done.returncode, done.stdout) == (
        0,
        "0 of 0 messages from 0 Junk folders deleted: 0 learnt as spam\n",
    )
