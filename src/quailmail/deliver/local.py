"""qmail-local(8) as a library: deliver one message to one local recipient.

In order: refuse a loop (the message already carries our Delivered-To line),
find the ``.qmail`` file (dotqmail), then carry out its lines one by one;
the first failure ends the delivery (a temporary one means the whole
delivery is retried later, which may repeat the lines that succeeded: qmail
does the same).  Forward lines are collected and returned, for the caller
to queue once at the end, as qmail-local hands them to qmail-queue after
the other lines succeed.

Who the recipient is comes from `config.lspawn.assignment` (qmail-lspawn's
lookup, shared with the RCPT check); `mailbox_for` turns it into a Mailbox.
A Mailbox with a uid other than ours is delivered by a child process that
becomes that user first (`deliver/asuser.py`), forked by the scheduler's
root helper (`deliver/lspawn.py`) as qmail-lspawn runs qmail-local: every
file is then opened, created and owned by the user.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path

from quailmail.config.control import Control, control_for
from quailmail.config.lspawn import Assignment, Found, LookupFailure, assignment
from quailmail.config.users import UserError, read_vpasswd, split_address
from quailmail.core.outcome import Outcome

from . import junk
from .asuser import deliver_as_user
from .command import CommandEnv, run_command
from .dotqmail import (
    DotQmailError,
    Kind,
    Line,
    check_home,
    find_dotqmail,
    parse_dotqmail,
    read_dotqmail,
)
from .lspawn import Lspawn
from .maildir import deliver_maildir, dtline
from .mbox import deliver_mbox

LOOPING = "This message is looping: it already has my Delivered-To line. (#5.4.6)"
DEFAULT_DELIVERY: tuple[Line, ...] = (Line(Kind.MAILDIR, "./Maildir/"),)


@dataclass(frozen=True, slots=True)
class Mailbox:
    """Where and for whom: qmail-local's arguments (user, home, local, dash
    ext, domain, defaultdelivery)."""

    home: Path
    user: str
    local: str  # the whole local part of the recipient
    host: str
    ext: str = ""  # LOCAL after USER and a dash ("" when none)
    default_delivery: tuple[Line, ...] = DEFAULT_DELIVERY
    domain_dir: Path | None = None  # vpopmail: the domain's directory (junkfolder)
    dash: str | None = None  # None: "-" when there is an extension, else ""
    uid: int | None = None  # who qmail-local runs as; None: whoever we are
    gid: int | None = None

    @property
    def recipient(self) -> str:
        return f"{self.local}@{self.host}"

    @property
    def the_dash(self) -> str:
        return ("-" if self.ext else "") if self.dash is None else self.dash

    @property
    def other_user(self) -> bool:
        """Delivered as a uid that is not ours (by a child that becomes it)."""
        return self.uid is not None and self.uid != os.geteuid()


@dataclass(frozen=True, slots=True)
class LocalResult:
    outcome: Outcome
    forwards: tuple[str, ...] = ()  # addresses to queue, from NEWSENDER
    new_sender: str = ""
    delivered: tuple[str, ...] = field(default=())  # files written, programs run


def _parse_default_delivery(data: bytes) -> tuple[Line, ...] | None:
    try:
        lines = parse_dotqmail(data.decode("utf-8", errors="surrogateescape"))
    except DotQmailError:
        return None
    return tuple(lines) or None


def default_delivery(control: Control) -> tuple[Line, ...]:
    """`control/defaultdelivery` (netqmail's `/var/qmail/rc` passes it to
    qmail-start as qmail-local's default delivery): what a user's own
    address without a `.qmail` file gets, in dot-qmail(5) lines; missing,
    empty or unreadable as dot-qmail: `./Maildir/`."""
    return control.parsed("defaultdelivery", _parse_default_delivery, None) or DEFAULT_DELIVERY


def mailbox_for(
    root: Path,
    found: Assignment,
    local: str,
    host: str,
    *,
    default_delivery: tuple[Line, ...] = DEFAULT_DELIVERY,
) -> Mailbox:
    """The Mailbox of what qmail-lspawn's lookup found for `local@host`.

    A virtual domain's directory: the vpasswd user the extension names
    (vdelivermail's job; `USER-EXT` reaches USER, the longest name before
    a dash), else the domain's own `.qmail-NAME` and `.qmail-default`.
    The alias user has no default delivery (qmail-local bounces an
    extension without a `.qmail` file); a user's own address without a
    `.qmail` gets `default_delivery` (`control/defaultdelivery`).
    """
    if found.domain_dir is not None:
        ddir = found.domain_dir
        name = found.ext.lower()
        users = read_vpasswd(ddir)
        candidates = [name] + [name[:i] for i in range(len(name) - 1, 0, -1) if name[i] == "-"]
        for candidate in candidates:
            user = users.get(candidate)
            if user is not None:
                home = Path(user.dir) if Path(user.dir).is_absolute() else Path(root) / user.dir
                return Mailbox(home, candidate, local.lower(), host, name[len(candidate) + 1 :],
                               domain_dir=ddir, uid=found.uid, gid=found.gid)  # fmt: skip
        # vpopmail's domain directory holds the domain's aliases (.qmail-NAME)
        # and its catch-all (.qmail-default).
        return Mailbox(ddir, found.user, local, host, found.ext, default_delivery=(),
                       domain_dir=ddir, dash="-", uid=found.uid, gid=found.gid)  # fmt: skip
    return Mailbox(found.home, found.user, local, host, found.ext,
                   default_delivery=() if found.is_alias else default_delivery,
                   dash=found.dash, uid=found.uid, gid=found.gid)  # fmt: skip


def vpopmail_mailbox(root: Path, address: str) -> Mailbox | None:
    """The Mailbox of a vpopmail-style virtual user: ``USER@D`` or
    ``USER-EXT@D`` (USER the longest vpasswd name before a dash), home the
    user's directory; None if no such user."""
    try:
        local, domain = split_address(address)
    except UserError:
        return None
    try:
        found = assignment(control_for(root), local, domain)
    except LookupFailure:
        return None
    if found.domain_dir is None:
        return None
    mb = mailbox_for(root, found, local, domain)
    return mb if mb.home != found.domain_dir else None


def is_looping(message: bytes, recipient: str) -> bool:
    """qmail-local(8): "it already has my Delivered-To line" (#5.4.6);
    compared without regard to case, header lines only."""
    mine = dtline(recipient).rstrip(b"\n").lower()
    header = junk.header_of(message)
    return any(line.rstrip(b"\r").lower() == mine for line in header.splitlines())


def _new_sender(mb: Mailbox, sender: str) -> str:
    # qmail-local(8): with a non-null sender and a .qmail-EXT-owner file,
    # forwarded mail gets the sender LOCAL-owner@HOST (bounces go to the
    # list owner).  The VERP form (-owner-default) is not done.
    if sender:
        owner = ".qmail-owner" if not mb.ext else f".qmail-{mb.ext.lower()}-owner"
        if (mb.home / owner).exists():
            return f"{mb.local}-owner@{mb.host}"
    return sender


async def deliver_local(
    mb: Mailbox,
    message: bytes,
    *,
    sender: str,
    junk_folder: bool = True,
    command_timeout: float = 3600.0,
    lspawn: Lspawn | None = None,
) -> LocalResult:
    """Deliver MESSAGE (LF line ends, no Return-Path/Delivered-To yet) to MB.

    ``junk_folder``: a message tagged ``X-Spam-Status: Yes`` goes to the
    ``.Junk`` folder of each top-level Maildir line.  It is the server's
    setting (``control/junkfolder``, which the caller reads); the domain's
    and the user's ``.junkfolder`` files override it (junk.junk_enabled).

    ``lspawn``: the scheduler's qmail-lspawn helper, which delivers to
    another uid; without one, such a delivery starts a helper of its own.

    The event loop reads the home and the .qmail file itself (a few stats
    and a small read: cheaper than a thread hop); Maildir lines write and
    fsync through the syncer's threads, mbox lines and programs elsewhere.
    """
    recipient = mb.recipient
    if is_looping(message, recipient):
        return LocalResult(Outcome.permanent(LOOPING))
    if mb.other_user:
        if os.geteuid() != 0:
            # qmail-lspawn cannot become the user either (it runs as root).
            return LocalResult(Outcome.temporary(
                f"cannot deliver as uid {mb.uid}: quailmail is not running as root (#4.3.0)"
            ))  # fmt: skip
        return await deliver_as_user(mb, message, sender=sender, junk_folder=junk_folder,
                                     command_timeout=command_timeout, lspawn=lspawn)  # fmt: skip
    plan = _plan(mb, message, sender, junk_folder)
    if isinstance(plan, LocalResult):
        return plan
    env = CommandEnv(
        sender=sender,
        new_sender=plan.new_sender,
        recipient=recipient,
        user=mb.user,
        home=mb.home,
        local=mb.local,
        host=mb.host,
        ext=mb.ext,
        default=plan.found.default if plan.found.is_default else None,
    )
    forwards: list[str] = []
    delivered: list[str] = []
    for line in plan.lines:
        if line.kind is Kind.FORWARD:
            forwards.append(line.value)
            continue
        stop = False
        if line.kind is Kind.PROGRAM:
            result = await run_command(line.value, message, env, timeout=command_timeout)
            outcome, stop, done = result.outcome, result.stop, f"|{line.value}"
        elif line.kind is Kind.MAILDIR:
            path = mb.home / line.value
            outcome = await _maildir(path, message, recipient, sender, plan.spam)
            done = outcome.reason  # the file delivered to
        else:
            outcome = await asyncio.to_thread(
                deliver_mbox, mb.home / line.value, message,
                delivered_to=recipient, return_path=sender,
            )  # fmt: skip
            done = outcome.reason
        if not outcome.is_ok:
            return LocalResult(outcome, (), plan.new_sender, tuple(delivered))
        delivered.append(done)
        if stop:
            break
    return LocalResult(Outcome.ok("delivered"), tuple(forwards), plan.new_sender, tuple(delivered))


@dataclass(frozen=True, slots=True)
class _Plan:
    lines: tuple[Line, ...]
    found: Found
    spam: bool
    new_sender: str


def _plan(mb: Mailbox, message: bytes, sender: str, junk_folder: bool) -> _Plan | LocalResult:
    """What qmail-local would do for MB."""
    try:
        check_home(mb.home)
        found = find_dotqmail(mb.home, mb.ext, mb.the_dash)
        if found is None:
            return LocalResult(Outcome.permanent("Sorry, no mailbox here by that name. (#5.1.1)"))
        lines = None if found.path is None else read_dotqmail(found.path)
    except DotQmailError as err:
        return LocalResult(Outcome.temporary(str(err)))
    except OSError as err:
        return LocalResult(Outcome.temporary(f"unable to read .qmail: {err.strerror} (#4.3.0)"))
    if lines is None:
        lines = list(mb.default_delivery)
    elif found.is_default and any(
        line.kind is Kind.PROGRAM and "bounce-no-mailbox" in line.value for line in lines
    ):
        # vpopmail's catch-all that is none: vdelivermail bounces unknown users.
        return LocalResult(Outcome.permanent("Sorry, no mailbox here by that name. (#5.1.1)"))
    if not lines:
        # qmail-local: a .qmail of only comments delivers nowhere; we defer
        # rather than lose the message.
        return LocalResult(Outcome.temporary("no delivery instructions in .qmail (#4.2.1)"))
    spam = junk.is_spam(message) and junk.junk_enabled(
        control_dir=None, domain_dir=mb.domain_dir, home=mb.home, default=junk_folder
    )
    hands_on = any(line.kind in (Kind.FORWARD, Kind.PROGRAM) for line in lines)
    new_sender = _new_sender(mb, sender) if hands_on else sender
    return _Plan(tuple(lines), found, spam, new_sender)


async def _maildir(path: Path, message: bytes, recipient: str, sender: str, spam: bool) -> Outcome:
    if spam and (path / "new").is_dir() and not junk.is_folder(path):
        try:
            path = await asyncio.to_thread(junk.ensure_junk_folder, path)
        except OSError as err:
            return Outcome.temporary(f"unable to create Junk folder in {path}: {err.strerror}")
    return await deliver_maildir(path, [message], delivered_to=recipient, return_path=sender)
