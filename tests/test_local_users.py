"""System users and users/assign end to end: a real `quail serve` (as root)
takes mail over SMTP for real system users and a vpopmail domain kept
outside the root, and delivers it as qmail-lspawn would: to the user's
home, as the user."""

from __future__ import annotations

import asyncio
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import argon2
import pytest

from quailmail.config import users

from serverfixtures import Running, maildir, wait_for
from systemusers import SystemUser

MESSAGE = b"From: a@sender.test\r\nTo: you\r\nSubject: %s\r\n\r\nbody %s\r\n"


def message(tag: str) -> bytes:
    return MESSAGE % (tag.encode(), tag.encode())


def rcpt_codes(server: Running, rcpts: list[str]) -> dict[str, int]:
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=10) as client:
        client.ehlo("client.test")
        client.mail("a@sender.test")
        return {r: client.rcpt(r)[0] for r in rcpts}


def send(server: Running, rcpts: list[str], data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=10) as client:
        client.ehlo("client.test")
        assert client.sendmail("a@sender.test", rcpts, data) == {}


def owned_by(directory: Path, uid: int) -> list[Path]:
    files = sorted((directory / "new").iterdir()) if (directory / "new").is_dir() else []
    assert all(f.stat().st_uid == uid for f in files), [(f, f.stat().st_uid) for f in files]
    return files


@pytest.fixture
def outside() -> Iterator[Path]:
    """A directory outside the root, traversable by every user
    (/home/vpopmail/domains on a migrated box)."""
    path = Path(tempfile.mkdtemp(prefix="quailvpop-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_system_users_on_a_locals_domain(
    system_user: Callable[..., SystemUser], server_factory: Callable[..., Running]
) -> None:
    joe = system_user()
    dashed = system_user(f"{joe.name}-data")  # www-data's shape
    other = system_user(home_owner=joe.uid)  # home owned by someone else
    homeless = system_user(make_home=False)
    joe_md, dashed_md = joe.maildir(), dashed.maildir()
    joe.write(".qmail-box", "./mbox\n")
    joe.write(".qmail-prog", "|id -u > uid.out; id -g > gid.out; id -G > groups.out\n")
    dashed.write(".qmail-ext", "./Maildir/\n")

    def setup(root: Path) -> None:
        (root / "alias" / f".qmail-{other.name}").write_text("./Maildir/\n")

    server = server_factory(setup, deliver=True)
    box = server.root / "alias" / "Maildir"
    codes = rcpt_codes(
        server,
        [
            f"{joe.name}@mx.test",
            f"{joe.name.upper()}-Box@mx.test",
            f"{joe.name}-nothing@mx.test",  # no .qmail-nothing, no -default
            f"{dashed.name}@mx.test",
            f"{dashed.name}-ext@mx.test",
            f"{other.name}@mx.test",  # not a candidate: the alias's file
            f"{homeless.name}@mx.test",  # no home: alias, no file
            "root@mx.test",  # uid 0: the alias (quail init writes .qmail-root)
            "no-such-user-anywhere@mx.test",
        ],
    )
    assert codes == {
        f"{joe.name}@mx.test": 250,
        f"{joe.name.upper()}-Box@mx.test": 250,
        f"{joe.name}-nothing@mx.test": 550,
        f"{dashed.name}@mx.test": 250,
        f"{dashed.name}-ext@mx.test": 250,
        f"{other.name}@mx.test": 250,
        f"{homeless.name}@mx.test": 550,
        "root@mx.test": 250,
        "no-such-user-anywhere@mx.test": 550,
    }

    send(server, [f"{joe.name}@mx.test"], message("plain"))
    send(server, [f"{joe.name.upper()}-Box@mx.test"], message("mbox"))
    send(server, [f"{joe.name}-prog@mx.test"], message("prog"))
    send(server, [f"{dashed.name}@mx.test", f"{dashed.name}-ext@mx.test"], message("dashed"))
    send(server, [f"{other.name}@mx.test"], message("other"))
    send(server, [f"{joe.name}@mx.test"], b"X-Spam-Status: Yes, score=9\r\n" + message("spam"))

    wait_for(lambda: maildir(joe_md), what="joe's Maildir")
    (got,) = owned_by(joe_md, joe.uid)[:1]
    assert got.read_bytes().startswith(
        b"Return-Path: <a@sender.test>\nDelivered-To: " + joe.name.encode() + b"@mx.test\n"
    )
    mbox = joe.home / "mbox"
    wait_for(mbox.exists, what="joe's mbox")
    assert mbox.stat().st_uid == joe.uid and b"Subject: mbox" in mbox.read_bytes()
    groups = joe.home / "groups.out"
    wait_for(lambda: groups.exists() and groups.read_text().strip(), what="the program's end")
    assert (joe.home / "uid.out").read_text().split() == [str(joe.uid)]
    assert (joe.home / "gid.out").read_text().split() == [str(joe.gid)]
    assert (joe.home / "groups.out").read_text().split() == [str(joe.gid)]  # ours dropped
    junk = joe_md / ".Junk"
    wait_for(lambda: maildir(junk), what="the Junk folder made as joe")
    assert len(owned_by(junk, joe.uid)) == 1
    made = [junk, junk / "new", junk / "maildirfolder", joe_md / "courierimapsubscribed"]
    assert [p.stat().st_uid for p in made] == [joe.uid] * len(made)
    wait_for(lambda: len(maildir(dashed_md)) == 2, what="both of dashed's messages")
    assert len(owned_by(dashed_md, dashed.uid)) == 2
    wait_for(lambda: maildir(box), what="the alias's message")
    (aliased,) = maildir(box)
    assert b"Subject: other" in aliased


def test_defaultdelivery_for_a_user_without_dotqmail(
    system_user: Callable[..., SystemUser], server_factory: Callable[..., Running]
) -> None:
    joe = system_user()

    def setup(root: Path) -> None:
        (root / "control" / "defaultdelivery").write_text("./Mailbox\n")

    server = server_factory(setup, deliver=True)
    send(server, [f"{joe.name}@mx.test"], message("default"))
    mbox = joe.home / "Mailbox"
    wait_for(mbox.exists, what="the mbox of control/defaultdelivery")
    wait_for(lambda: b"body default" in mbox.read_bytes(), what="the whole message")
    assert mbox.stat().st_uid == joe.uid
    assert not (joe.home / "Maildir").exists()


def test_sticky_home_defers(
    system_user: Callable[..., SystemUser], server_factory: Callable[..., Running]
) -> None:
    joe = system_user()
    joe.maildir()
    os.chmod(joe.home, 0o1755)
    server = server_factory(deliver=True)
    send(server, [f"{joe.name}@mx.test"], message("sticky"))
    log = server.log_path
    wait_for(lambda: "sticky" in log.read_text(errors="replace"), what="the deferral")
    assert "deferred: home directory is sticky" in log.read_text()
    assert not maildir(joe.home / "Maildir")


def test_assign_exact_and_vpopmail_domain_outside_the_root(
    system_user: Callable[..., SystemUser],
    server_factory: Callable[..., Running],
    outside: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        users, "_hasher", argon2.PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    )
    vpopmail = system_user(make_home=False)  # vpopmail's uid, as on QmailToaster
    joe = system_user()
    joe_md = joe.maildir()
    ddir = outside / "sample.test"

    def setup(root: Path) -> None:
        (root / "users").mkdir()
        (root / "users" / "assign").write_text(
            f"+sample.test-:sample.test:{vpopmail.uid}:{vpopmail.gid}:{ddir}:-::\n"
            f"=webmaster:{joe.name}:{joe.uid}:{joe.gid}:{joe.home}:::\n"
            ".\n"
        )
        control = root / "control"
        with (control / "rcpthosts").open("a") as f:
            f.write("sample.test\n")
        (control / "virtualdomains").write_text("sample.test:sample.test\n")
        # `quail user add` finds the domain where users/assign says it is
        ddir.mkdir()
        users.add_user(root, "ann@sample.test", "secret")
        (ddir / ".qmail-postmaster").write_text("./ann/Maildir/\n")
        # what vpopmail's vadddomain leaves: the domain is vpopmail's
        os.chown(ddir, vpopmail.uid, vpopmail.gid)
        made = [ddir / "vpasswd", ddir / "ann", ddir / "ann" / "Maildir" / "new"]
        assert [p.stat().st_uid for p in made] == [vpopmail.uid] * 3

    server = server_factory(setup, deliver=True)
    assert not (server.root / "domains" / "sample.test").exists()
    codes = rcpt_codes(
        server,
        [
            "ann@sample.test",
            "ann-ext@sample.test",
            "postmaster@sample.test",
            "nobody@sample.test",
            "webmaster@mx.test",
        ],
    )
    assert codes == {
        "ann@sample.test": 250,
        "ann-ext@sample.test": 250,
        "postmaster@sample.test": 250,
        "nobody@sample.test": 550,
        "webmaster@mx.test": 250,
    }
    send(server, ["ann@sample.test", "postmaster@sample.test"], message("vpop"))
    send(server, ["webmaster@mx.test"], message("exact"))
    ann_md = ddir / "ann" / "Maildir"
    wait_for(lambda: len(maildir(ann_md)) == 2, what="ann's two messages")
    assert len(owned_by(ann_md, vpopmail.uid)) == 2
    wait_for(lambda: maildir(joe_md), what="webmaster's message in joe's Maildir")
    (got,) = owned_by(joe_md, joe.uid)
    assert b"Delivered-To: webmaster@mx.test\n" in got.read_bytes()


_NOT_ROOT = """
import asyncio, os, sys
from pathlib import Path
from quailmail.deliver.local import Mailbox, deliver_local
os.setgid(65534); os.setuid(65534)
mb = Mailbox(Path(sys.argv[1]), "someone", "someone", "mx.test", uid=12345, gid=12345)
result = asyncio.run(deliver_local(mb, b"Subject: x\\n\\nbody\\n", sender="a@b.test"))
print(result.outcome.kind, result.outcome.reason)
"""


def test_not_root_and_another_uid_defers(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("becomes nobody from root")
    done = subprocess.run(
        [sys.executable, "-c", _NOT_ROOT, str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        cwd="/",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("temporary cannot deliver as uid 12345: quailmail is not running")


def test_as_user_delivery_reports_a_child_that_cannot_start(tmp_path: Path) -> None:
    """The parent side alone: an unknown uid makes the child fail to become
    it cleanly, which is temporary, never a traceback."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from quailmail.deliver.asuser import deliver_as_user
    from quailmail.deliver.local import Mailbox

    mb = Mailbox(tmp_path, "ghost", "ghost", "mx.test", uid=2**31 - 5, gid=2**31 - 5)
    result = asyncio.run(
        deliver_as_user(mb, b"Subject: x\n\nbody\n", sender="", junk_folder=True, command_timeout=5)
    )
    assert result.outcome.kind == "temporary"
