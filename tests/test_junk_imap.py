"""The built-in Junk folder read through a real IMAP server: Debian's Dovecot,
started by the test on loopback (tests/peers/dovecot.py).

quailmail delivers into a vpopmail-style mailbox (`add_user`, then
`deliver_local` to `vpopmail_mailbox`); Dovecot then shows what a mail client
would see: the clean message in INBOX, the tagged one in Junk, and Junk
subscribed (LSUB), which only Dovecot's reading of the `subscriptions` file
quailmail wrote can produce.  Courier's `courierimapsubscribed` has no server
here and is checked as a file.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import imaplib
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from quailmail.config.users import add_user, domain_dir
from quailmail.deliver.local import deliver_local, vpopmail_mailbox

from peers._base import PeerMissing
from peers.dovecot import Dovecot, require, running_dovecot

pytestmark = pytest.mark.peer

SENDER = "ann@sender.example"
HAM = (
    b"From: Ann <ann@sender.example>\n"
    b"To: joe@example.org\n"
    b"Subject: lunch on friday\n"
    b"Message-ID: <ham.1@sender.example>\n"
    b"X-Spam-Status: No, score=0.4 required=5.0\n"
    b"\n"
    b"Shall we meet at noon?\n"
    b"\n"
    b"-- \n"
    b"Ann\n"
)
SPAM = (
    b"From: Prize Desk <win@spam.example>\n"
    b"To: joe@example.org\n"
    b"Subject: you have won\n"
    b"Message-ID: <spam.1@spam.example>\n"
    b"X-Spam-Flag: YES\n"
    b"X-Spam-Status: Yes, score=12.3 required=5.0 tests=LOTTERY,URIBL_BLACK\n"
    b"\n"
    b"Claim your prize now.\n"
    b".a line that starts with a dot\n"
    b"From the desk of the prize committee\n"
)


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    try:
        require()
    except PeerMissing as err:
        pytest.skip(str(err))
    with running_dovecot() as dc:
        yield dc


def _user(dc: Dovecot, address: str) -> Path:
    """A vpopmail user in dc.mail_root who can log in to Dovecot; the Maildir."""
    add_user(dc.mail_root, address, "vpopmail-pw")
    mb = vpopmail_mailbox(dc.mail_root, address)
    assert mb is not None
    dc.add_user(address, mb.home)
    dc.hand_over(dc.mail_root)
    return mb.home / "Maildir"


def _deliver(dc: Dovecot, address: str, message: bytes) -> None:
    mb = vpopmail_mailbox(dc.mail_root, address)
    assert mb is not None
    res = asyncio.run(deliver_local(mb, message, sender=SENDER))
    assert res.outcome.kind == "ok", res.outcome
    dc.hand_over(dc.mail_root)


def _as_delivered(address: str, message: bytes) -> bytes:
    """MESSAGE with the two lines qmail-local puts on top, in IMAP's CRLF."""
    top = f"Return-Path: <{SENDER}>\nDelivered-To: {address}\n".encode()
    return (top + message).replace(b"\n", b"\r\n")


@contextmanager
def _imap(dc: Dovecot, address: str) -> Iterator[imaplib.IMAP4]:
    imap = dc.login(address)
    try:
        yield imap
    finally:
        imap.logout()


_LIST_LINE = re.compile(rb'^\((?P<flags>[^)]*)\) "(?P<sep>[^"]*)" (?P<name>.+)$')


def _names(answer: tuple[str, Sequence[object]]) -> list[str]:
    """The mailbox names of a LIST or LSUB answer, sorted."""
    typ, lines = answer
    assert typ == "OK", answer
    names = []
    for line in lines:
        if line is None:  # imaplib's way to say "no untagged answer"
            continue
        assert isinstance(line, bytes), line
        m = _LIST_LINE.match(line)
        assert m is not None, line
        assert m["sep"] == b".", line  # Maildir++: folders are .NAME
        names.append(m["name"].strip(b'"').decode())
    return sorted(names)


def _list(imap: imaplib.IMAP4) -> list[str]:
    return _names(imap.list())


def _lsub(imap: imaplib.IMAP4) -> list[str]:
    return _names(imap.lsub())


def _messages(imap: imaplib.IMAP4, mailbox: str) -> list[bytes]:
    """Every message of MAILBOX as the server sends it (BODY.PEEK[])."""
    typ, data = imap.select(mailbox, readonly=True)
    assert typ == "OK", data
    count = int(data[0] or b"0")
    if count == 0:
        return []
    typ, fetched = imap.fetch(f"1:{count}", "(BODY.PEEK[])")
    assert typ == "OK", fetched
    raw = [part[1] for part in fetched if isinstance(part, tuple)]
    assert len(raw) == count
    imap.close()
    return raw


def _subject(raw: bytes) -> str:
    return str(email.message_from_bytes(raw, policy=email.policy.default)["Subject"])


def test_ham_in_inbox_spam_in_subscribed_junk(dovecot: Dovecot) -> None:
    maildir = _user(dovecot, "joe@example.org")
    _deliver(dovecot, "joe@example.org", HAM)
    _deliver(dovecot, "joe@example.org", SPAM)

    with _imap(dovecot, "joe@example.org") as imap:
        assert _list(imap) == ["INBOX", "Junk"]
        assert _lsub(imap) == ["Junk"]  # Dovecot read quailmail's subscriptions
        inbox = _messages(imap, "INBOX")
        junk = _messages(imap, "Junk")
        typ, status = imap.status("Junk", "(MESSAGES UNSEEN)")
    assert [_subject(m) for m in inbox] == ["lunch on friday"]
    assert inbox == [_as_delivered("joe@example.org", HAM)]
    assert [_subject(m) for m in junk] == ["you have won"]
    assert junk == [_as_delivered("joe@example.org", SPAM)]  # body intact to the byte
    assert typ == "OK"
    assert status == [b"Junk (MESSAGES 1 UNSEEN 1)"]  # new/, not yet seen
    # Courier IMAP's list of subscriptions, as the seeds' mailfilter writes it.
    assert (maildir / "courierimapsubscribed").read_text() == "INBOX.Junk\n"


def test_junk_made_after_dovecot_knows_the_mailbox(dovecot: Dovecot) -> None:
    """The usual order: the user has read mail (Dovecot has its indexes and
    its own subscriptions file) before the first tagged message arrives."""
    maildir = _user(dovecot, "joe@example.org")
    _deliver(dovecot, "joe@example.org", HAM)
    with _imap(dovecot, "joe@example.org") as imap:
        assert imap.create("Archive")[0] == "OK"
        assert imap.subscribe("Archive")[0] == "OK"
        assert _list(imap) == ["Archive", "INBOX"]
    # Dovecot 2.3's own format, which junk.DOVECOT_HEADER copies.
    assert (maildir / "subscriptions").read_text() == "V\t2\n\nArchive\n"

    _deliver(dovecot, "joe@example.org", SPAM)
    _deliver(dovecot, "joe@example.org", SPAM)
    assert (maildir / "subscriptions").read_text() == "V\t2\n\nArchive\nJunk\n"
    with _imap(dovecot, "joe@example.org") as imap:
        assert _list(imap) == ["Archive", "INBOX", "Junk"]
        assert _lsub(imap) == ["Archive", "Junk"]
        assert len(_messages(imap, "Junk")) == 2
        assert len(_messages(imap, "INBOX")) == 1
        # Dovecot rewrites the file from what it parsed: Junk survives.
        assert imap.unsubscribe("Archive")[0] == "OK"
    assert (maildir / "subscriptions").read_text() == "V\t2\n\nJunk\n"


def test_per_domain_and_per_user_switch(dovecot: Dovecot) -> None:
    """``domains/D/.junkfolder`` turns the folder off for a domain, and
    ``HOME/.junkfolder`` back on for one of its users."""
    for address in ("joe@on.example", "ann@off.example", "bob@off.example"):
        _user(dovecot, address)
    (domain_dir(dovecot.mail_root, "off.example") / ".junkfolder").write_text("0\n")
    bob = vpopmail_mailbox(dovecot.mail_root, "bob@off.example")
    assert bob is not None
    (bob.home / ".junkfolder").write_text("1\n")
    for address in ("joe@on.example", "ann@off.example", "bob@off.example"):
        _deliver(dovecot, address, SPAM)

    for address, folders, spam_in in (
        ("joe@on.example", ["INBOX", "Junk"], "Junk"),
        ("ann@off.example", ["INBOX"], "INBOX"),
        ("bob@off.example", ["INBOX", "Junk"], "Junk"),
    ):
        with _imap(dovecot, address) as imap:
            assert _list(imap) == folders, address
            assert _lsub(imap) == [f for f in folders if f == "Junk"], address
            for folder in folders:
                want = [_as_delivered(address, SPAM)] if folder == spam_in else []
                assert _messages(imap, folder) == want, (address, folder)
    ann = vpopmail_mailbox(dovecot.mail_root, "ann@off.example")
    assert ann is not None
    assert not (ann.home / "Maildir" / "courierimapsubscribed").exists()
    assert not (ann.home / "Maildir" / ".Junk").exists()
