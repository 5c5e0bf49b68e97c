"""config.recipients: relay control, open-relay tricks, existence checks, chkuser limits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import argon2
import pytest

from quailmail.config import users
from quailmail.config.recipients import (
    RcptCounter,
    Verdict,
    decide_recipient,
)
from quailmail.core.reply import Reply

from systemusers import SystemUser


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(
        users, "_hasher", argon2.PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    )
    users.add_user(tmp_path, "joe@ours.example", "pw")
    control = tmp_path / "control"
    with (control / "rcpthosts").open("a") as f:
        f.write("backup.example\nlocal.example\n")
    (control / "locals").write_text("local.example\n")
    (control / "me").write_text("mx.ours.example\n")
    return tmp_path


def rcpt(root: Path, local: str, domain: str, **kw: object) -> tuple[int, str, str | None]:
    kw.setdefault("relayclient", None)
    kw.setdefault("authenticated", False)
    d = decide_recipient(root, local, domain, **kw)  # type: ignore[arg-type]
    return d.reply.code, d.reply.enhanced, d.recipient


def test_hosted_user_accepted_case_insensitively(root: Path) -> None:
    assert rcpt(root, "joe", "ours.example") == (250, "2.1.5", "joe@ours.example")
    assert rcpt(root, "JOE", "OURS.EXAMPLE")[:2] == (250, "2.1.5")


def test_unknown_user_550_511(root: Path) -> None:
    d = decide_recipient(root, "nobody", "ours.example", relayclient=None, authenticated=False)
    assert d.reply == Reply(550, "5.1.1", "sorry, no mailbox here by that name")
    assert d.verdict is Verdict.UNKNOWN
    # for a relay client too: a typo is refused at once
    assert rcpt(root, "nobody", "ours.example", authenticated=True)[:2] == (550, "5.1.1")


def test_other_domain_not_relayed(root: Path) -> None:
    assert rcpt(root, "user", "other.example")[:2] == (553, "5.7.1")
    assert rcpt(root, "user", "OTHER.COM")[:2] == (553, "5.7.1")


def test_backup_mx_domain_relayed_unchecked(root: Path) -> None:
    assert rcpt(root, "anyone", "backup.example")[:2] == (250, "2.1.5")


OPEN_RELAY_TRICKS = [
    # (local, domain, route): each names a foreign mailbox through ours
    ("user%other.example", "ours.example", ()),  # the percent hack
    ("other.example!user", "ours.example", ()),  # UUCP bang path
    ('"user@other.example"', "ours.example", ()),  # quoted local part with @
    ("user@other.example", "ours.example", ()),  # the same, unquoted by the parser
    ("joe", "ours.example", ("ours.example",)),  # source route @ours:joe@ours
    ("user", "other.example", ("ours.example",)),  # source route through us
    ("user", "[192.0.2.1]", ()),  # IPv4 address literal
    ("user", "[IPv6:2001:db8::1]", ()),  # IPv6 address literal
    ("user", "other.example.", ()),  # trailing dot
    ("user", "OTHER.example", ()),  # uppercase
    ("user", "ours.example.other.example", ()),  # our name as a prefix
    ("user", "ours.example@other.example", ()),  # second @ in the domain
    ("user", "ours.example%other.example", ()),
    ("user", "other.example\r\nRCPT TO:<x@ours.example>", ()),
]


@pytest.mark.parametrize(("local", "domain", "route"), OPEN_RELAY_TRICKS)
def test_open_relay_tricks_refused_for_unauthorized(
    root: Path, local: str, domain: str, route: tuple[str, ...]
) -> None:
    d = decide_recipient(root, local, domain, relayclient=None, authenticated=False, route=route)
    assert not d.accepted
    assert d.reply.code in (550, 553)
    assert d.recipient is None


@pytest.mark.parametrize(
    ("local", "domain", "route"),
    [
        t
        for t in OPEN_RELAY_TRICKS
        if t[1].lower().startswith(("[", "other.example"))
        and t[1].lower() != "other.example."
        and not any(c in t[1] for c in "\r\n@%")
    ]
    + [("user%x", "other.example", ())],
)
def test_relay_clients_may_relay(
    root: Path, local: str, domain: str, route: tuple[str, ...]
) -> None:
    for kw in ({"relayclient": ""}, {"authenticated": True}):
        code, _, recipient = rcpt(root, local, domain, route=route, **kw)
        assert code == 250
        assert recipient == f"{local}@{domain if domain.startswith('[') else domain.lower()}"


def test_bad_domain_refused_for_everyone(root: Path) -> None:
    for domain in ("other.example.", "a..b", "-a.example", "a_b.example", "x" * 300):
        assert rcpt(root, "u", domain, relayclient="")[:2] == (553, "5.1.3")


def test_relayclient_value_appended(root: Path) -> None:
    assert rcpt(root, "user", "other.example", relayclient="@fixup")[2] == (
        "user@other.example@fixup"
    )
    assert rcpt(root, "joe", "ours.example", relayclient="-x")[2] == "joe@ours.example-x"
    assert rcpt(root, "joe", "ours.example", authenticated=True)[2] == "joe@ours.example"


def test_postmaster_without_domain(root: Path) -> None:
    assert rcpt(root, "Postmaster", "") == (250, "2.1.5", "postmaster@mx.ours.example")
    assert rcpt(root, "joe", "")[:2] == (553, "5.1.2")


def test_virtual_extension_alias_and_catchall(root: Path) -> None:
    ddir = root / "domains" / "ours.example"
    assert rcpt(root, "joe-lists", "ours.example")[:2] == (250, "2.1.5")  # user-ext
    assert rcpt(root, "joe-a-b", "ours.example")[:2] == (250, "2.1.5")
    assert rcpt(root, "sales", "ours.example")[:2] == (550, "5.1.1")
    (ddir / ".qmail-sales").write_text("&joe@ours.example\n")
    assert rcpt(root, "Sales", "ours.example")[:2] == (250, "2.1.5")
    (ddir / ".qmail-list-default").write_text("&joe@ours.example\n")
    assert rcpt(root, "list-x-y", "ours.example")[:2] == (250, "2.1.5")
    (ddir / ".qmail-first:last").write_text("&joe@ours.example\n")
    assert rcpt(root, "first.last", "ours.example")[:2] == (250, "2.1.5")
    # vpopmail's default line is not a catch-all
    (ddir / ".qmail-default").write_text("| /home/vpopmail/bin/vdelivermail '' bounce-no-mailbox\n")
    assert rcpt(root, "nobody", "ours.example")[:2] == (550, "5.1.1")
    (ddir / ".qmail-default").write_text("| /home/vpopmail/bin/vdelivermail '' joe@ours.example\n")
    assert rcpt(root, "nobody", "ours.example")[:2] == (250, "2.1.5")


def test_path_characters_never_reach_the_filesystem(root: Path) -> None:
    (root / "domains" / "ours.example" / ".qmail-x").mkdir()
    assert rcpt(root, "x/../../joe", "ours.example", relayclient="")[:2] == (550, "5.1.1")
    assert rcpt(root, "joe\0", "ours.example", relayclient="")[:2] == (550, "5.1.1")


def test_locals_system_user_and_alias(root: Path, system_user: Callable[..., SystemUser]) -> None:
    # qmail-getpw: uid not 0, home present and owned by the user
    joe = system_user()
    assert rcpt(root, joe.name, "local.example")[:2] == (250, "2.1.5")
    # user-ext needs the .qmail file qmail-local would read
    assert rcpt(root, f"{joe.name}-ext", "local.example")[:2] == (550, "5.1.1")
    joe.write(".qmail-default", "./Maildir/\n")
    assert rcpt(root, f"{joe.name}-ext", "local.example")[:2] == (250, "2.1.5")
    other = system_user(home_owner=joe.uid)  # not a candidate: the alias decides
    assert rcpt(root, other.name, "local.example")[:2] == (550, "5.1.1")
    assert rcpt(root, "root", "local.example")[:2] == (550, "5.1.1")  # uid 0: never
    assert rcpt(root, "no-such-user-here", "local.example")[:2] == (550, "5.1.1")
    alias = root / "alias"
    alias.mkdir()
    (alias / ".qmail-postmaster").write_text("&joe@ours.example\n")
    (alias / ".qmail-root").write_text("&joe@ours.example\n")
    (alias / f".qmail-{other.name}").write_text("&joe@ours.example\n")
    assert rcpt(root, "PostMaster", "local.example")[:2] == (250, "2.1.5")
    assert rcpt(root, "root", "local.example")[:2] == (250, "2.1.5")
    assert rcpt(root, other.name, "local.example")[:2] == (250, "2.1.5")
    (alias / ".qmail-default").write_text("&joe@ours.example\n")
    assert rcpt(root, "no-such-user-here", "local.example")[:2] == (250, "2.1.5")


def test_assign_home_missing_is_temporary(root: Path) -> None:
    (root / "users").mkdir()
    (root / "users" / "assign").write_text(f"=gone:gone:4242:4242:{root / 'gone'}:::\n.\n")
    assert rcpt(root, "gone", "local.example")[:2] == (451, "4.3.0")


def test_virtualdomains_exception_and_unmanaged_prefix(root: Path) -> None:
    control = root / "control"
    with (control / "virtualdomains").open("a") as f:
        f.write("special@ours.example:someone\nsys.example:sysuser\nother.example:\n")
    with (control / "rcpthosts").open("a") as f:
        f.write("sys.example\nother.example\n")
    # `other.example:` is an exception: not ours, relayed unchecked
    assert rcpt(root, "anything", "other.example")[:2] == (250, "2.1.5")
    # a prefix without ROOT/domains/PREFIX: qmail-send's PREFIX-local goes to
    # a system user or the alias user, which must have a .qmail for it
    assert rcpt(root, "special", "ours.example")[:2] == (550, "5.1.1")
    assert rcpt(root, "anything", "sys.example")[:2] == (550, "5.1.1")
    alias = root / "alias"
    alias.mkdir()
    (alias / ".qmail-someone-special").write_text("&joe@ours.example\n")
    (alias / ".qmail-sysuser-default").write_text("&joe@ours.example\n")
    assert rcpt(root, "special", "ours.example")[:2] == (250, "2.1.5")
    assert rcpt(root, "anything", "sys.example")[:2] == (250, "2.1.5")


def test_unreadable_store_is_temporary(root: Path) -> None:
    vpasswd = root / "domains" / "ours.example" / "vpasswd"
    vpasswd.unlink()
    vpasswd.mkdir()
    assert rcpt(root, "joe", "ours.example")[:2] == (451, "4.3.0")


def test_an_edit_of_rcpthosts_takes_effect(root: Path) -> None:
    assert rcpt(root, "u", "new.example")[0] == 553
    with (root / "control" / "rcpthosts").open("a") as f:
        f.write("new.example\n")
    assert rcpt(root, "u", "new.example")[0] == 250


def test_counter_from_env() -> None:
    c = RcptCounter.from_env({"CHKUSER_RCPTLIMIT": "50", "CHKUSER_WRONGRCPTLIMIT": " 3 "})
    assert (c.rcpt_limit, c.wrong_limit) == (50, 3)
    c = RcptCounter.from_env({"CHKUSER_RCPTLIMIT": "x", "CHKUSER_WRONGRCPTLIMIT": "0"})
    assert (c.rcpt_limit, c.wrong_limit) == (None, None)
    assert RcptCounter.from_env({}).check() is None


def test_rcptlimit_per_message(root: Path) -> None:
    counter = RcptCounter(rcpt_limit=2)

    def go(local: str) -> int:
        kw = {"relayclient": None, "authenticated": False, "counter": counter}
        return decide_recipient(root, local, "ours.example", **kw).reply.code  # type: ignore[arg-type]

    assert [go("joe"), go("joe-a"), go("joe-b")] == [250, 250, 452]
    d = decide_recipient(
        root, "joe", "ours.example", relayclient=None, authenticated=False, counter=counter
    )
    assert (d.reply.code, d.reply.enhanced, d.verdict) == (452, "4.5.3", Verdict.LIMIT)
    counter.new_message()  # MAIL FROM / RSET
    assert go("joe") == 250


def test_wrongrcptlimit_per_session(root: Path) -> None:
    counter = RcptCounter(wrong_limit=3)

    def go(local: str, domain: str = "ours.example") -> tuple[int, str]:
        d = decide_recipient(
            root, local, domain, relayclient=None, authenticated=False, counter=counter
        )
        return d.reply.code, d.reply.enhanced

    assert go("a") == (550, "5.1.1")
    assert go("joe") == (250, "2.1.5")
    assert go("b", "other.example") == (553, "5.7.1")  # relay probes count too
    counter.new_message()  # not reset by a new message
    assert go("c") == (550, "5.1.1")
    assert go("joe") == (550, "5.5.3")  # even a good address, from now on
    assert go("joe") == (550, "5.5.3")
