"""users/assign (qmail-users(5)) and qmail-lspawn's lookup order
(config/assign.py, config/lspawn.py), on real files and real system users."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from quailmail.config.assign import Entry, parse_assign, read_assign
from quailmail.config.control import Control
from quailmail.config.lspawn import LookupFailure, assignment, getpw, qmesearch
from quailmail.deliver.dotqmail import Kind, Line
from quailmail.deliver.local import default_delivery

from systemusers import SystemUser

ASSIGN = """\
=joe.shmoe:joe:503:78:/home/joe:::
+sample.com-:sample.com:89:89:/home/vpopmail/domains/sample.com:-::
+sample.com-list-:lists:90:90:/home/lists:-:sample-:
+:catch:91:91:/home/catch:-:all-:
=Joe.Shmoe:second:1:1:/nowhere:::
.
=after.the.dot:x:1:1:/x:::
"""


def test_exact_and_wildcard_lines() -> None:
    assign = parse_assign(ASSIGN.encode())
    # exact, case-insensitively; the first of two lines for one address wins
    assert assign.lookup("JOE.shmoe") == (Entry("joe", 503, 78, "/home/joe", "", ""), "")
    # a wildcard: the rest of the address (as written) after `pre`
    entry, ext = assign.lookup("sample.com-Joe") or (None, "")
    assert entry is not None and entry.home == "/home/vpopmail/domains/sample.com"
    assert (entry.dash, ext) == ("-", "Joe")
    # the longer wildcard wins over the shorter
    entry, ext = assign.lookup("sample.com-list-dev") or (None, "")
    assert entry is not None and (entry.user, ext) == ("lists", "sample-dev")
    # the empty loc catches what nothing else does; nothing after the dot counts
    entry, ext = assign.lookup("after.the.dot") or (None, "")
    assert entry is not None and (entry.user, ext) == ("catch", "all-after.the.dot")
    assert assign.domain_entry("SAMPLE.COM") is not None
    assert assign.domain_entry("other.com") is None


def test_bad_lines_skipped_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    users = tmp_path / "users"
    users.mkdir()
    (users / "assign").write_text(
        "# a comment qmail-newu would refuse\n"
        "=short:joe:1:1:/home/joe\n"
        "=nouid:joe:x:1:/home/joe:::\n"
        "=nohome:joe:1:1::::\n"
        "+:nocolon\n"
        "=nul\0:joe:1:1:/home/joe:::\n"
        "=good:joe:1001:1001:/home/joe:::extra:fields\n"
    )
    with caplog.at_level(logging.WARNING, "quailmail.config"):
        first = read_assign(tmp_path)
        second = read_assign(tmp_path)  # from the cache: not logged again
    assert first is second
    assert list(first.exact) == ["good"] and not first.wild
    assert first.exact["good"] == Entry("joe", 1001, 1001, "/home/joe", "", "")
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 6, skipped
    assert read_assign(tmp_path / "nothing").lookup("x") is None


def test_qmesearch_with_and_without_dash(tmp_path: Path) -> None:
    assert qmesearch(tmp_path, "", "") is not None  # no .qmail: default delivery
    assert qmesearch(tmp_path, "-", "") is None  # a dash and nothing: no mailbox
    (tmp_path / ".qmail-").write_text("./Maildir/\n")
    found = qmesearch(tmp_path, "-", "")
    assert found is not None and found.path == tmp_path / ".qmail-"
    (tmp_path / ".qmailfoo").write_text("./Maildir/\n")  # an assign ext without a dash
    found = qmesearch(tmp_path, "", "foo")
    assert found is not None and found.path == tmp_path / ".qmailfoo"


def _control(tmp_path: Path, assign: str = "") -> Control:
    (tmp_path / "control").mkdir(exist_ok=True)
    (tmp_path / "control" / "locals").write_text("local.test\n")
    (tmp_path / "control" / "virtualdomains").write_text("v.test:v.test\nsys.test:sysprefix\n")
    (tmp_path / "alias").mkdir(exist_ok=True)
    if assign:
        (tmp_path / "users").mkdir(exist_ok=True)
        (tmp_path / "users" / "assign").write_text(assign)
    return Control(tmp_path)


def test_getpw_order_and_checks(system_user: Callable[..., SystemUser]) -> None:
    plain = system_user()
    found = getpw(plain.name.upper())  # lowercased, as qmail-getpw does
    assert found is not None and (found.user, found.dash, found.ext) == (plain.name, "", "")
    assert (found.uid, found.gid, found.home) == (plain.uid, plain.gid, plain.home)
    found = getpw(f"{plain.name}-Ext-More")
    assert found is not None
    assert (found.user, found.dash, found.ext) == (plain.name, "-", "Ext-More")
    # a name with a dash (www-data): the longest candidate first
    dashed = system_user(f"{plain.name}-data")
    found = getpw(f"{dashed.name}-x")
    assert found is not None and (found.user, found.ext) == (dashed.name, "x")
    # a home owned by another uid, or missing: not a candidate
    foreign = system_user(home_owner=plain.uid)
    homeless = system_user(make_home=False)
    assert getpw(foreign.name) is None
    assert getpw(f"{homeless.name}-x") is None
    assert getpw("root") is None  # uid 0: never
    assert getpw("no-such-user-anywhere") is None


def test_lookup_order(tmp_path: Path, system_user: Callable[..., SystemUser]) -> None:
    user = system_user()
    control = _control(tmp_path, f"={user.name}:{user.name}:4242:4242:/assigned:::\n")
    # users/assign before qmail-getpw
    found = assignment(control, user.name, "local.test")
    assert (found.source, found.uid, found.home) == ("users/assign", 4242, Path("/assigned"))
    found = assignment(control, f"{user.name}-ext", "local.test")
    assert (found.source, found.user, found.ext) == ("system user", user.name, "ext")
    # the alias user, with the whole local part
    found = assignment(control, "Nobody-Here", "local.test")
    assert (found.source, found.home, found.dash, found.ext, found.uid) == (
        "alias",
        tmp_path / "alias",
        "-",
        "Nobody-Here",
        None,
    )
    # a virtual domain: ROOT/domains/PREFIX when it exists, else qmail-getpw
    # and the alias user on PREFIX-local, as qmail-send rewrites it
    (tmp_path / "domains" / "v.test").mkdir(parents=True)
    found = assignment(control, "joe", "v.test")
    assert (found.source, found.ext, found.domain_dir) == (
        "domains",
        "joe",
        tmp_path / "domains" / "v.test",
    )
    found = assignment(control, "joe", "sys.test")
    assert (found.source, found.ext) == ("alias", "sysprefix-joe")


def test_assign_uid_zero_defers(tmp_path: Path) -> None:
    control = _control(tmp_path, "=boss:root:0:0:/root:::\n")
    with pytest.raises(LookupFailure, match="uid 0"):
        assignment(control, "boss", "local.test")


def test_relative_home_is_under_the_root(tmp_path: Path) -> None:
    control = _control(tmp_path, "+v.test-:v.test:89:89:domains/elsewhere:-::\n")
    found = assignment(control, "joe", "v.test")
    assert found.home == tmp_path / "domains" / "elsewhere"
    assert found.domain_dir == found.home  # vadddomain's +PREFIX- line: a vpopmail domain
    assert os.path.basename(found.home) == "elsewhere"


def test_defaultdelivery(tmp_path: Path) -> None:
    control = _control(tmp_path)
    assert default_delivery(control) == (Line(Kind.MAILDIR, "./Maildir/"),)
    (tmp_path / "control" / "defaultdelivery").write_text("|preline procmail\n./Mail/\n")
    assert default_delivery(control) == (
        Line(Kind.PROGRAM, "preline procmail"),
        Line(Kind.MAILDIR, "./Mail/"),
    )
    (tmp_path / "control" / "defaultdelivery").write_text("\n./Mail/\n")  # qmail-local refuses it
    assert default_delivery(control) == (Line(Kind.MAILDIR, "./Maildir/"),)
