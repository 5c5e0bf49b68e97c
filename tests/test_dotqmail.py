"""``.qmail`` files (dot-qmail(5)), lookup and execution (qmail-local(8),
qmail-command(8)) on real directories and real programs."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from quailmail.config.users import make_maildir
from quailmail.deliver.command import CommandEnv, _exchange, run_command
from quailmail.deliver.dotqmail import (
    DotQmailError,
    Kind,
    Line,
    find_dotqmail,
    parse_dotqmail,
)
from quailmail.deliver.local import LOOPING, LocalResult, Mailbox, deliver_local

MSG = b"From: a@b.example\nSubject: hi\n\nbody\n"


def test_parse_every_line_kind() -> None:
    text = (
        "# a comment\n|/bin/true arg\n&fwd@example.org\nbare@example.net\n"
        "./Maildir/\n/var/mail/joe\n\n"
    )
    assert parse_dotqmail(text) == [
        Line(Kind.PROGRAM, "/bin/true arg"),
        Line(Kind.FORWARD, "fwd@example.org"),
        Line(Kind.FORWARD, "bare@example.net"),
        Line(Kind.MAILDIR, "./Maildir/"),
        Line(Kind.MBOX, "/var/mail/joe"),
    ]


def test_blank_first_line_refused() -> None:
    with pytest.raises(DotQmailError):
        parse_dotqmail("\n./Maildir/\n")


def test_extension_lookup_order(tmp_path: Path) -> None:
    for name in (".qmail-foo-bar", ".qmail-foo-default", ".qmail-default"):
        (tmp_path / name).write_text("./Maildir/\n")
    found = find_dotqmail(tmp_path, "foo-bar")
    assert found is not None and found.path == tmp_path / ".qmail-foo-bar"
    found = find_dotqmail(tmp_path, "foo-baz-qux")
    assert found is not None
    assert (found.path, found.default) == (tmp_path / ".qmail-foo-default", "baz-qux")
    found = find_dotqmail(tmp_path, "Other.Name")
    assert found is not None and (found.path, found.default) == (
        tmp_path / ".qmail-default",
        "Other.Name",
    )
    (tmp_path / ".qmail-other:name").write_text("./Maildir/\n")
    found = find_dotqmail(tmp_path, "Other.Name")
    assert found is not None and found.path == tmp_path / ".qmail-other:name"
    (tmp_path / ".qmail-default").unlink()
    assert find_dotqmail(tmp_path, "zzz") is None
    assert find_dotqmail(tmp_path, "") is not None  # no .qmail: default delivery


def _home(tmp_path: Path, dotqmail: str | None = None, name: str = ".qmail") -> Path:
    home = tmp_path / "joe"
    home.mkdir(mode=0o700)
    make_maildir(home / "Maildir")
    if dotqmail is not None:
        (home / name).write_text(dotqmail)
    return home


def _run(mb: Mailbox, message: bytes = MSG, sender: str = "a@b.example") -> LocalResult:
    return asyncio.run(deliver_local(mb, message, sender=sender, command_timeout=10))


def _new(md: Path) -> list[bytes]:
    return [f.read_bytes() for f in sorted((md / "new").iterdir())]


def test_default_delivery_is_maildir(tmp_path: Path) -> None:
    home = _home(tmp_path)
    res = _run(Mailbox(home, "joe", "joe", "example.org"))
    assert res.outcome.kind == "ok"
    assert _new(home / "Maildir") == [
        b"Return-Path: <a@b.example>\nDelivered-To: joe@example.org\n" + MSG
    ]


def test_loop_detected(tmp_path: Path) -> None:
    home = _home(tmp_path)
    looped = b"Delivered-To: JOE@example.org\n" + MSG
    res = _run(Mailbox(home, "joe", "joe", "example.org"), looped)
    assert res.outcome.kind == "permanent"
    assert res.outcome.reason == LOOPING
    assert _new(home / "Maildir") == []


def test_forwards_maildir_and_mbox(tmp_path: Path) -> None:
    home = _home(tmp_path, "&x@example.net\n./Maildir/\ny@example.com\n./mbox\n")
    res = _run(Mailbox(home, "joe", "joe", "example.org"))
    assert res.outcome.kind == "ok"
    assert res.forwards == ("x@example.net", "y@example.com")
    assert res.new_sender == "a@b.example"
    assert len(_new(home / "Maildir")) == 1
    mbox = (home / "mbox").read_bytes()
    assert mbox.startswith(b"From a@b.example ")
    assert b"\nReturn-Path: <a@b.example>\nDelivered-To: joe@example.org\nFrom: a@b" in mbox
    assert mbox.endswith(b"body\n\n")


def test_unknown_extension_bounces(tmp_path: Path) -> None:
    home = _home(tmp_path)
    res = _run(Mailbox(home, "joe", "joe-nope", "example.org", "nope"))
    assert res.outcome.kind == "permanent"
    assert "#5.1.1" in res.outcome.reason


def test_world_writable_dotqmail_deferred(tmp_path: Path) -> None:
    home = _home(tmp_path, "./Maildir/\n")
    os.chmod(home / ".qmail", 0o666)
    assert _run(Mailbox(home, "joe", "joe", "example.org")).outcome.kind == "temporary"


DUMP = (
    "|for v in SENDER NEWSENDER RECIPIENT USER HOME HOST HOST2 HOST3 HOST4 LOCAL EXT EXT2 "
    'EXT3 EXT4 DEFAULT DTLINE RPLINE UFLINE; do printf "%s=%s|" "$v" "$(printenv $v)"; '
    "done > env.out; cat > stdin.out; pwd > pwd.out\n"
)


def test_command_environment(tmp_path: Path) -> None:
    home = _home(tmp_path, DUMP, ".qmail-list-default")
    mb = Mailbox(home, "joe", "joe-list-a-b-c", "mail.sub.example.org", "list-a-b-c")
    res = _run(mb)
    assert res.outcome.kind == "ok", res.outcome
    env = dict(
        item.split("=", 1) for item in (home / "env.out").read_text().split("|") if "=" in item
    )
    assert env["SENDER"] == env["NEWSENDER"] == "a@b.example"
    assert env["RECIPIENT"] == "joe-list-a-b-c@mail.sub.example.org"
    assert (env["USER"], env["HOME"], env["LOCAL"]) == ("joe", str(home), "joe-list-a-b-c")
    assert (env["HOST"], env["HOST2"], env["HOST3"], env["HOST4"]) == (
        "mail.sub.example.org",
        "mail.sub.example",
        "mail.sub",
        "mail",
    )
    assert (env["EXT"], env["EXT2"], env["EXT3"], env["EXT4"]) == (
        "list-a-b-c",
        "a-b-c",
        "b-c",
        "c",
    )
    assert env["DEFAULT"] == "a-b-c"
    # printenv output loses the final newline inside $(...)
    assert env["DTLINE"] == "Delivered-To: joe-list-a-b-c@mail.sub.example.org"
    assert env["RPLINE"] == "Return-Path: <a@b.example>"
    assert env["UFLINE"].startswith("From a@b.example ")
    assert (home / "stdin.out").read_bytes() == MSG  # no RPLINE/DTLINE on stdin
    assert (home / "pwd.out").read_text().strip() == str(home)


def test_owner_file_sets_newsender(tmp_path: Path) -> None:
    home = _home(tmp_path, "&x@example.net\n", ".qmail-list")
    (home / ".qmail-list-owner").write_text("&owner@example.net\n")
    res = _run(Mailbox(home, "joe", "joe-list", "example.org", "list"))
    assert res.new_sender == "joe-list-owner@example.org"


@pytest.mark.parametrize(
    ("code", "kind", "delivered"),
    [
        (0, "ok", 2),
        (99, "ok", 1),
        (100, "permanent", 0),
        (111, "temporary", 0),
        (64, "permanent", 0),
        (1, "temporary", 0),
    ],
)
def test_exit_codes(tmp_path: Path, code: int, kind: str, delivered: int) -> None:
    home = _home(
        tmp_path, f"./Maildir/\n|echo said {code}; exit {code}\n./Maildir/\n&f@x.example\n"
    )
    res = _run(Mailbox(home, "joe", "joe", "example.org"))
    assert res.outcome.kind == kind
    if kind != "ok":
        assert res.outcome.reason == f"said {code}"
        assert res.forwards == ()
    else:
        assert res.forwards == (("f@x.example",) if code == 0 else ())
    # the first Maildir line always ran; the second only after exit 0
    assert len(_new(home / "Maildir")) == (1 if code else 2) if kind == "ok" else 1


def test_command_timeout(tmp_path: Path) -> None:
    home = _home(tmp_path, "|sleep 30\n")
    res = asyncio.run(
        deliver_local(
            Mailbox(home, "joe", "joe", "example.org"), MSG, sender="", command_timeout=0.3
        )
    )
    assert res.outcome.kind == "temporary"
    assert "timed out" in res.outcome.reason


def test_preline_available(tmp_path: Path) -> None:
    home = _home(tmp_path, "|preline cat > out\n")
    assert _run(Mailbox(home, "joe", "joe", "example.org")).outcome.kind == "ok"
    out = (home / "out").read_bytes()
    assert out.startswith(b"From a@b.example ")
    assert out.endswith(b"\nReturn-Path: <a@b.example>\nDelivered-To: joe@example.org\n" + MSG)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize(("command", "kind"), [("exit 100", "permanent"), ("exit 0", "ok")])
def test_a_program_that_does_not_read_is_judged_by_its_exit(
    tmp_path: Path, loop: str, command: str, kind: str
) -> None:
    # More than a pipe holds, to a program that never reads it: qmail-local
    # ignores the EPIPE and takes the exit code.  Under uvloop (as `quail
    # serve` runs) the write then raised RuntimeError and the delivery failed.
    env = CommandEnv("s@x", "s@x", "u@h", "u", tmp_path, "u", "h", "")
    message = b"Subject: big\n\n" + b"x" * (1 << 20)
    run = asyncio.run
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        run = uvloop.run
    for _ in range(5):
        result = run(run_command(command, message, env))
        assert result.outcome.kind == kind, result

    async def after_the_exit() -> tuple[bytes, int | None]:
        # What the server met: the program gone before its input is written.
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", command, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await proc.wait()
        await asyncio.sleep(0.05)
        return await _exchange(proc, message), proc.returncode

    assert run(after_the_exit()) == (b"", 100 if kind == "permanent" else 0)
