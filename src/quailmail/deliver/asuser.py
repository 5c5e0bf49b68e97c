"""Local delivery as the recipient's uid: qmail-lspawn's `prot_gid`,
`prot_uid`, then qmail-local.

qmail-lspawn forks for every local delivery, sets the group list to the
user's gid alone, then gid and uid (`prot_gid`, `prot_uid`), and execs
qmail-local, which reads the `.qmail` file and writes the Maildir or mbox
as that user.  We do the same: a helper started as root (our interpreter
and modules may live where the user cannot read) has imported what
delivery needs, forks for each delivery (`deliver/lspawn.py`), and the
child becomes the user and runs `deliver_local` (`deliver_request`).

Everything is then done with the user's rights, never ours: a `.qmail`
line naming a file the user may not write (`/etc/passwd` as an mbox, a
Maildir of someone else) fails as it fails under qmail, the Maildir and
mbox files and any folder made (the Junk folder) belong to the user, and
`|program` lines run as the user without our supplementary groups, HOME
and USER set as qmail-command(8) says.  The price is a fork (~8 ms of
CPU) per such delivery, where a delivery as ourselves stays on the event
loop.

Request: a JSON header (the Mailbox, sender, settings), then the message.
Answer: `{"kind", "reason", "forwards", "new_sender", "delivered"}`.
"""

from __future__ import annotations

import asyncio
import json
import os
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quailmail.core.outcome import Outcome

from .lspawn import Lspawn, LspawnError

if TYPE_CHECKING:
    from .local import LocalResult, Mailbox


def _request(mb: Mailbox, sender: str, junk_folder: bool, command_timeout: float) -> bytes:
    fields = {
        "home": str(mb.home),
        "user": mb.user,
        "local": mb.local,
        "host": mb.host,
        "ext": mb.ext,
        "dash": mb.the_dash,
        "default_delivery": [[line.kind.value, line.value] for line in mb.default_delivery],
        "domain_dir": None if mb.domain_dir is None else str(mb.domain_dir),
        "uid": mb.uid,
        "gid": mb.gid,
        "sender": sender,
        "junk_folder": junk_folder,
        "command_timeout": command_timeout,
    }
    return json.dumps(fields).encode()


async def deliver_as_user(
    mb: Mailbox,
    message: bytes,
    *,
    sender: str,
    junk_folder: bool,
    command_timeout: float,
    lspawn: Lspawn | None = None,
) -> LocalResult:
    """`deliver_local(mb, …)` in a child running as mb.uid/mb.gid (we are root).

    `lspawn` is the scheduler's helper; without one, a helper is started
    for this delivery alone (a process start, as before there was one).
    """
    if lspawn is None:
        async with Lspawn() as alone:
            return await deliver_as_user(mb, message, sender=sender, junk_folder=junk_folder,
                                         command_timeout=command_timeout, lspawn=alone)  # fmt: skip
    from .local import LocalResult  # noqa: PLC0415 (local imports this module)

    try:
        answer = await lspawn.run(_request(mb, sender, junk_folder, command_timeout), message)
    except LspawnError as err:
        return LocalResult(Outcome.temporary(str(err)))
    try:
        fields = json.loads(answer)
        kind = fields["kind"]
        if kind not in ("ok", "temporary", "permanent"):
            raise ValueError(kind)
        outcome = Outcome(kind, str(fields["reason"]))
        return LocalResult(outcome, tuple(fields["forwards"]), str(fields["new_sender"]),
                           tuple(fields["delivered"]))  # fmt: skip
    except (ValueError, KeyError, TypeError):
        text = answer[:200].decode(errors="replace")
        return LocalResult(
            Outcome.temporary(f"local delivery as uid {mb.uid}: bad answer {text!r}")
        )


def _answer(
    outcome: Outcome,
    forwards: tuple[str, ...] = (),
    new_sender: str = "",
    delivered: tuple[str, ...] = (),
) -> bytes:
    """A LocalResult's fields as the child's answer."""
    fields = {
        "kind": outcome.kind,
        "reason": outcome.reason,
        "forwards": list(forwards),
        "new_sender": new_sender,
        "delivered": list(delivered),
    }
    return json.dumps(fields).encode()


def _temporary(reason: str) -> bytes:
    return _answer(Outcome.temporary(reason))


# -- the helper's side (deliver/lspawn.py runs these) -------------------------


def preload() -> None:
    """Import what a child needs, while the helper is root: after setuid
    the interpreter's own files may be out of reach (asyncio.to_thread
    imports its executor late)."""
    import concurrent.futures.thread  # noqa: F401, PLC0415

    from . import local  # noqa: F401, PLC0415


def decode_request(header: bytes) -> dict[str, Any]:
    """The request's fields; ValueError unless it names a uid and gid."""
    try:
        fields = json.loads(header)
        if not isinstance(fields, dict):
            raise TypeError("not an object")
        for name in ("uid", "gid"):
            if not isinstance(fields.get(name), int) or fields[name] < 0:
                raise TypeError(f"{name} is not a number")
    except (ValueError, TypeError) as err:
        raise ValueError(str(err)) from None
    return fields


def no_answer(request: dict[str, Any], reason: str) -> bytes:
    """The helper's answer for a delivery that got none (a child that died)."""
    return _temporary(f"local delivery as uid {request.get('uid')} {reason} (#4.3.0)")


def deliver_request(request: dict[str, Any], message: bytes) -> bytes:
    """The forked child's work: become the user, deliver, answer.

    qmail's prot_gid (setgroups to the gid alone, then setgid) and
    prot_uid (setuid): with no saved root uid left, there is no way back.
    """
    from .dotqmail import Kind, Line  # noqa: PLC0415
    from .local import Mailbox, deliver_local  # noqa: PLC0415

    uid, gid = int(request["uid"]), int(request["gid"])
    try:
        os.setgroups([gid])
        os.setgid(gid)
        os.setuid(uid)
    except OSError as err:
        return _temporary(f"unable to become uid {uid}: {err} (#4.3.0)")
    try:
        mb = Mailbox(
            Path(request["home"]), request["user"], request["local"], request["host"],
            request["ext"],
            default_delivery=tuple(Line(Kind(k), v) for k, v in request["default_delivery"]),
            domain_dir=None if request["domain_dir"] is None else Path(request["domain_dir"]),
            dash=request["dash"],
        )  # fmt: skip
        result = asyncio.run(
            deliver_local(
                mb,
                message,
                sender=request["sender"],
                junk_folder=bool(request["junk_folder"]),
                command_timeout=float(request["command_timeout"]),
            )
        )
    except Exception as exc:  # a bug: its last line is the reason, as before
        text = traceback.format_exception_only(exc)[-1].strip()
        return _temporary(f"local delivery as uid {uid} failed: {text}")
    return _answer(result.outcome, result.forwards, result.new_sender, result.delivered)
