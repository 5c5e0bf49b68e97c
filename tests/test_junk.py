"""The built-in Junk folder (seed 003's maildrop mailfilter-to-spam), and the
seeds' own ``|preline /usr/bin/maildrop FILTER`` line run with Debian's maildrop."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest

from quailmail.config.users import make_maildir
from quailmail.deliver import junk
from quailmail.deliver.junk import is_spam, junk_enabled
from quailmail.deliver.local import Mailbox, deliver_local

SPAM = b"X-Spam-Status: Yes, score=9.1\nSubject: buy\n\nbody\n"
HAM = b"X-Spam-Status: No, score=0.1\nSubject: hi\n\nbody\n"


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "joe"
    home.mkdir(mode=0o700)
    make_maildir(home / "Maildir")
    return home


def _deliver(home: Path, message: bytes, junk: bool = True) -> None:
    mb = Mailbox(home, "joe", "joe", "example.org")
    res = asyncio.run(deliver_local(mb, message, sender="s@x.example", junk_folder=junk))
    assert res.outcome.kind == "ok", res.outcome


def _count(md: Path) -> int:
    return len(list((md / "new").iterdir())) if (md / "new").is_dir() else 0


def test_is_spam() -> None:
    assert is_spam(SPAM)
    assert is_spam(b"x-spam-status:yes\n\n")
    assert not is_spam(HAM)
    assert not is_spam(b"Subject: x\n\nX-Spam-Status: Yes\n")  # body, not header


def test_tagged_goes_to_junk_subscribed_once(tmp_path: Path) -> None:
    home = _home(tmp_path)
    md = home / "Maildir"
    _deliver(home, SPAM)
    _deliver(home, SPAM)
    _deliver(home, HAM)
    junk = md / ".Junk"
    assert (junk / "maildirfolder").is_file()
    assert all((junk / d).is_dir() for d in ("cur", "new", "tmp"))
    assert (_count(junk), _count(md)) == (2, 1)
    assert (md / "courierimapsubscribed").read_text() == "INBOX.Junk\n"
    assert (md / "subscriptions").read_text() == "V\t2\n\nJunk\n"


def test_untagged_stays_in_inbox_and_switch_off(tmp_path: Path) -> None:
    home = _home(tmp_path)
    _deliver(home, SPAM, junk=False)
    assert _count(home / "Maildir") == 1
    assert not (home / "Maildir" / ".Junk").exists()


def test_junk_enabled_files(tmp_path: Path) -> None:
    control, ddir, home = tmp_path / "control", tmp_path / "d", tmp_path / "u"
    for d in (control, ddir, home):
        d.mkdir()

    def enabled(default: bool = True) -> bool:
        return junk_enabled(control_dir=control, domain_dir=ddir, home=home, default=default)

    assert enabled()
    assert not enabled(default=False)  # no file: the caller's default
    (control / "junkfolder").write_text("0\n")
    assert not enabled()
    (ddir / ".junkfolder").write_text("1\n")
    assert enabled(default=False)
    (home / ".junkfolder").write_text("0\n")
    assert not enabled()


def test_domain_and_user_files_override_the_servers_setting(tmp_path: Path) -> None:
    # deliver_local's junk_folder is control/junkfolder; the nearer files win.
    home, ddir = _home(tmp_path), tmp_path / "domain"
    ddir.mkdir()
    (ddir / ".junkfolder").write_text("0\n")
    mb = Mailbox(home, "joe", "joe", "example.org", domain_dir=ddir)
    asyncio.run(deliver_local(mb, SPAM, sender="s@x.example", junk_folder=True))
    assert (_count(home / "Maildir"), (home / "Maildir" / ".Junk").exists()) == (1, False)
    (home / ".junkfolder").write_text("1\n")
    asyncio.run(deliver_local(mb, SPAM, sender="s@x.example", junk_folder=False))
    assert (_count(home / "Maildir"), _count(home / "Maildir" / ".Junk")) == (1, 1)


SEED_FILTER = """\
SHELL="/bin/sh"
import EXT
import HOST
USERHOME="{home}"

if ( /^X-Spam-Status: Yes/ )
{{
        `test -d $USERHOME/Maildir/.Junk`

        if ( $RETURNCODE == 1 )
        {{
            `/usr/bin/maildirmake -f Junk $USERHOME/Maildir`
            `echo INBOX.Junk >> $USERHOME/Maildir/courierimapsubscribed`
        }}

        to "$USERHOME/Maildir/.Junk"
}}
else
{{
        to "$USERHOME/Maildir/"
}}
"""


@pytest.mark.peer
@pytest.mark.skipif(shutil.which("maildrop") is None, reason="Debian maildrop not installed")
@pytest.mark.skipif(
    shutil.which("maildirmake") is None, reason="maildirmake (maildrop) not installed"
)
def test_seed_line_with_real_maildrop(tmp_path: Path) -> None:
    home = _home(tmp_path)
    filt = tmp_path / "mailfilter-to-spam"
    filt.write_text(SEED_FILTER.format(home=home))
    filt.chmod(0o600)  # maildrop refuses filters others may read or write
    (home / ".qmail").write_text(f"|preline /usr/bin/maildrop {filt}\n")
    _deliver(home, SPAM, junk=False)
    _deliver(home, HAM, junk=False)
    md = home / "Maildir"
    assert (md / ".Junk" / "maildirfolder").exists()
    assert (_count(md / ".Junk"), _count(md)) == (1, 1)
    assert (md / "courierimapsubscribed").read_text() == "INBOX.Junk\n"
    (spam,) = (md / ".Junk" / "new").iterdir()
    # maildrop keeps preline's From_ line in a Maildir file, as Debian builds it.
    assert b"\nReturn-Path: <s@x.example>\nDelivered-To: joe@example.org\n" in spam.read_bytes()


# -- Dovecot's dotlock on `subscriptions` --------------------------------------


def test_waits_for_dovecots_lock_and_keeps_what_dovecot_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An IMAP SUBSCRIBE under way holds subscriptions.lock, writes the new
    file into it and renames it over: we wait, then add Junk to its result."""
    home = _home(tmp_path)
    md = home / "Maildir"
    (md / "subscriptions").write_text("V\t2\n\nINBOX\n")
    lock = md / "subscriptions.lock"
    lock.write_text("V\t2\n\nINBOX\nWork\n")  # Dovecot, mid-change
    pauses: list[float] = []

    def dovecot_finishes(seconds: float) -> None:
        # Our first pause in the wait is when Dovecot completes its change.
        pauses.append(seconds)
        if lock.exists():
            os.rename(lock, md / "subscriptions")

    monkeypatch.setattr(junk.time, "sleep", dovecot_finishes)
    _deliver(home, SPAM)
    assert pauses  # it did wait
    assert (md / "subscriptions").read_text() == "V\t2\n\nINBOX\nWork\nJunk\n"
    assert not lock.exists()
    assert _count(md / ".Junk") == 1


def test_a_stale_lock_is_overridden(tmp_path: Path) -> None:
    home = _home(tmp_path)
    md = home / "Maildir"
    lock = md / "subscriptions.lock"
    lock.write_text("left by a dead process")
    old = time.time() - 60
    os.utime(lock, (old, old))
    _deliver(home, SPAM)
    assert (md / "subscriptions").read_text() == "V\t2\n\nJunk\n"
    assert not lock.exists()


def test_a_lock_held_too_long_skips_the_subscription_not_the_mail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(junk, "LOCK_WAIT", 0.2)
    home = _home(tmp_path)
    md = home / "Maildir"
    (md / "subscriptions.lock").write_text("busy")
    with caplog.at_level("WARNING", logger="quailmail.deliver"):
        _deliver(home, SPAM)
    assert _count(md / ".Junk") == 1  # delivered all the same
    assert not (md / "subscriptions").exists()
    assert "Junk not subscribed" in caplog.text
    (md / "subscriptions.lock").unlink()
    _deliver(home, SPAM)  # the next spam subscribes it
    assert (md / "subscriptions").read_text() == "V\t2\n\nJunk\n"
