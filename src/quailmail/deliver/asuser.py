"""Local delivery as the recipient's uid: qmail-lspawn's `prot_gid`,
`prot_uid`, then qmail-local.

qmail-lspawn forks for every local delivery, sets the group list to the
user's gid alone, then gid and uid (`prot_gid`, `prot_uid`), and execs
qmail-local, which reads the `.qmail` file and writes the Maildir or mbox
as that user.  We do the same with a child process: it starts as root
(our interpreter and modules may live where the user cannot read),
imports what it needs, reads the request on stdin, becomes the user and
runs `deliver_local`; its answer is one JSON line on stdout.

Everything is then done with the user's rights, never ours: a `.qmail`
line naming a file the user may not write (`/etc/passwd` as an mbox, a
Maildir of someone else) fails as it fails under qmail, the Maildir and
mbox files and any folder made (the Junk folder) belong to the user, and
`|program` lines run as the user without our supplementary groups, HOME
and USER set as qmail-command(8) says.  The price is one process start
(about 0.1 s of CPU) per such delivery, where qmail pays a fork and exec.

Request: a JSON line (the Mailbox, sender, settings), then the message.
Answer: `{"kind", "reason", "forwards", "new_sender", "delivered"}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quailmail.core.outcome import Outcome

if TYPE_CHECKING:
    from .local import LocalResult, Mailbox

_ERROR_LIMIT = 500  # bytes of a crashed child's stderr kept for the reason


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
    return json.dumps(fields).encode() + b"\n"


async def deliver_as_user(
    mb: Mailbox, message: bytes, *, sender: str, junk_folder: bool, command_timeout: float
) -> LocalResult:
    """`deliver_local(mb, …)` in a child running as mb.uid/mb.gid (we are root)."""
    from .local import LocalResult  # noqa: PLC0415 (local imports this module)

    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "quailmail.deliver.asuser",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd="/", start_new_session=True,
        )  # fmt: skip
    except OSError as exc:
        return LocalResult(Outcome.temporary(f"unable to start local delivery: {exc} (#4.3.0)"))
    request = _request(mb, sender, junk_folder, command_timeout)
    try:
        out, err = await proc.communicate(request + message)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise
    try:
        answer = json.loads(out.decode())
        kind = answer["kind"]
        if kind not in ("ok", "temporary", "permanent"):
            raise ValueError(kind)
        outcome = Outcome(kind, str(answer["reason"]))
        return LocalResult(outcome, tuple(answer["forwards"]), str(answer["new_sender"]),
                           tuple(answer["delivered"]))  # fmt: skip
    except (ValueError, KeyError, TypeError):
        # A traceback's last line says what went wrong.
        lines = err[-_ERROR_LIMIT:].decode(errors="replace").strip().splitlines()
        text = lines[-1] if lines else f"exit {proc.returncode}"
        return LocalResult(Outcome.temporary(f"local delivery as uid {mb.uid} failed: {text}"))


def _answer(result: LocalResult) -> None:
    fields = {
        "kind": result.outcome.kind,
        "reason": result.outcome.reason,
        "forwards": list(result.forwards),
        "new_sender": result.new_sender,
        "delivered": list(result.delivered),
    }
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def main() -> int:
    """The child: read the request, become the user, deliver, answer."""
    # Imported while we are still root: after setuid the interpreter's own
    # files may be out of reach (asyncio.to_thread imports its executor late).
    import concurrent.futures.thread  # noqa: F401, PLC0415

    from .dotqmail import Kind, Line  # noqa: PLC0415
    from .local import LocalResult, Mailbox, deliver_local  # noqa: PLC0415

    request: dict[str, Any] = json.loads(sys.stdin.buffer.readline())
    message = sys.stdin.buffer.read()
    uid, gid = int(request["uid"]), int(request["gid"])
    try:
        # qmail's prot_gid: setgroups(1, &gid), then setgid; prot_uid: setuid.
        os.setgroups([gid])
        os.setgid(gid)
        os.setuid(uid)
    except OSError as err:
        _answer(LocalResult(Outcome.temporary(f"unable to become uid {uid}: {err} (#4.3.0)")))
        return 0
    mb = Mailbox(
        Path(request["home"]), request["user"], request["local"], request["host"], request["ext"],
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
    _answer(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
