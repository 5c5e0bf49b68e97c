"""`quail dkverify` (also `quail-dkverify`): s/qmail's qmail-dkverify, a
`QMAILQUEUE` program that checks DKIM signatures (../shared/seeds/004_*).

It speaks the qmail-queue protocol: the message on descriptor 0, the
envelope on descriptor 1, qmail-queue's exit codes.  When the message
carries a DKIM signature it puts on top

    X-Authentication-Results: SENDER dkim=pass MTA
    X-Authentication-Results: SENDER dkim=fail (REASON) MTA

(SENDER the envelope sender, `<>` for bounces; MTA `control/me`), and hands
message and envelope to the next queue program.  The seed's man page has
qmail-dkverify call qmail-queue at the end; which one is `$DKQUEUE` when set
(qmail-dk's variable for the same step, set in the seeds' tcp.smtp lines),
else `quail-qmail-queue`, so the chain ends in quailmail's queue.  From a
real qmail, set `DKQUEUE=/var/qmail/bin/qmail-queue`.  The next program is
exec'd with the message and envelope in unlinked temporary files, so its
exit code is the caller's answer; every other descriptor stays as it came,
so fd 4 of the "qmail-queue-custom-error" patch (`queue/qmailqueue.py`)
reaches it, and a simscan behind us still gives its own `554` text.

`DKIM="+"` in the environment refuses what fails: exit 31 (qmail-smtpd:
`554 mail server permanently rejected message`), with
`Reject::DKIM::Signature` on stderr, which qmail-smtpd and `quail serve`
put in their log; a key lookup that failed temporarily exits 71 (`451`),
so the sender tries again.  A signature that fails under a testing key
(`t=y`) counts as unsigned (RFC 6376 §3.6.1) and is never refused.
Without `DKIM="+"` nothing is refused: the field only tells.

DNS: `--dns`, else `control/dnsservers` of the root, else the system's.
The root is `--root`, else `$QUAIL_ROOT` (set by `quail serve`), else the
working directory when it has a `control/` (qmail runs queue programs
from /var/qmail).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from quailmail.auth.authres import x_authentication_results
from quailmail.auth.dkim import DkimResult, DkimStatus, verify_dkim
from quailmail.auth.message import parse_message
from quailmail.auth.results import Result
from quailmail.cli.common import CliError, add_dns_options, control_value, standalone
from quailmail.cli.qmailqueue import read_input
from quailmail.dns.resolver import make_resolver
from quailmail.queue.qmailqueue import (
    EXIT_CONFIG,
    EXIT_EXEC,
    EXIT_REFUSED,
    EXIT_TEMP_REFUSED,
    EXIT_WRITE,
    encode_envelope,
)

NEXT_DEFAULT = "quail-qmail-queue"


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "dkverify",
        help="a QMAILQUEUE filter: add X-Authentication-Results for DKIM, then queue",
        description="s/qmail's qmail-dkverify: read a message (fd 0) and envelope (fd 1) "
        "as qmail-queue does, add `X-Authentication-Results: SENDER dkim=pass|fail "
        '(reason) MTA` when it is DKIM-signed, refuse failures when DKIM="+", then exec '
        "$DKQUEUE (default quail-qmail-queue) with the message.",
    )
    add_dns_options(p)
    p.set_defaults(handler=run)


def find_root(given: Path | None) -> Path | None:
    if given is not None:
        return given
    here = Path.cwd()
    return here if (here / "control").is_dir() else None


def next_program(env: Mapping[str, str]) -> str:
    """`$DKQUEUE`, else `quail-qmail-queue` (on PATH, else beside us)."""
    name = env.get("DKQUEUE") or NEXT_DEFAULT
    if "/" in name:
        return name
    beside = str(Path(sys.executable).parent)
    found = shutil.which(name) or shutil.which(name, path=beside)
    return found or name


def line_ending(data: bytes) -> bytes:
    """The message's own line ending (qmail hands messages on with LF)."""
    first = data.find(b"\n")
    return b"\r\n" if first > 0 and data[first - 1 : first] == b"\r" else b"\n"


def header(result: DkimResult, sender: str, mta: str) -> str | None:
    """The field, or None for a message without a DKIM signature."""
    if not result.signatures:
        return None
    return x_authentication_results(sender or "<>", result.result, result.reason, mta)


def refusal(result: DkimResult) -> int | None:
    """DKIM="+": the exit code that refuses this result, or None."""
    if not result.signatures or result.result is Result.PASS:
        return None
    if result.status is DkimStatus.SIG_BAD_TESTING:
        return None  # RFC 6376 §3.6.1: a testing key's failure is "unsigned"
    if result.result is Result.TEMPERROR:
        return EXIT_TEMP_REFUSED
    return EXIT_REFUSED


def run(args: argparse.Namespace) -> int:
    root = find_root(args.root)
    try:
        resolver = make_resolver(args.dns, root)
    except ValueError as exc:
        raise CliError(str(exc), code=EXIT_CONFIG) from None
    mta = control_value(root, "me") or socket.getfqdn()
    data, sender, recipients = read_input()

    result = asyncio.run(verify_dkim(parse_message(data), resolver))
    field = header(result, sender, mta)
    if os.environ.get("DKIM") == "+":
        code = refusal(result)
        if code is not None:
            print(f"quail dkverify: Reject::DKIM::Signature F:<{sender}> '{result.reason}'",
                  file=sys.stderr)  # fmt: skip
            return code
    top = b""
    if field is not None:
        top = field.encode("utf-8", "surrogateescape") + line_ending(data)
    return hand_on(next_program(os.environ), top + data, encode_envelope(sender, recipients))


def hand_on(program: str, message: bytes, envelope: bytes) -> int:
    """Exec `program` with `message` on fd 0 and `envelope` on fd 1; returns
    only when it cannot be run."""
    try:
        with tempfile.TemporaryFile() as mfile, tempfile.TemporaryFile() as efile:
            for file, content in ((mfile, message), (efile, envelope)):
                file.write(content)
                file.flush()
                file.seek(0)
            sys.stderr.flush()
            os.dup2(mfile.fileno(), 0)
            os.dup2(efile.fileno(), 1)
    except OSError as exc:
        raise CliError(f"cannot keep the message: {exc.strerror or exc}", code=EXIT_WRITE) from None
    try:
        os.execv(program, [program])  # noqa: S606 (the next queue program, by path, no shell)
    except OSError as exc:
        raise CliError(f"cannot run {program}: {exc.strerror or exc}", code=EXIT_EXEC) from None
    return EXIT_EXEC  # not reached


def main(argv: Sequence[str] | None = None) -> int:
    """The `quail-dkverify` command, for `QMAILQUEUE="…/quail-dkverify"`."""
    return standalone("quail-dkverify", "dkverify", register, argv)
