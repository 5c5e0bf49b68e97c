"""`quail init`: lay out a root that serves at once (control files, queue,
mailboxes, a self-signed certificate, example tcprules)."""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path
from typing import Any

from quailmail.cli.common import CliError
from quailmail.config.tcprules import compile_rules
from quailmail.core.files import write_atomic
from quailmail.net.listeners import default_listeners
from quailmail.net.tls import self_signed

# Loopback may relay (qmail's classic tcp.smtp) and is not looked up in DNS
# blocklists (the seeds' RBLSMTPD=""); everyone else may send to our domains
# only.  Submission relays only after AUTH.
TCP_SMTP = """\
# ADDRESS:allow|deny[,VAR="value"]...
# compile: quail tcprules tcp.smtp.cdb tcp.smtp.tmp < tcp.smtp
127.:allow,RELAYCLIENT="",RBLSMTPD=""
::1:allow,RELAYCLIENT="",RBLSMTPD=""
:allow
"""
TCP_SUBMISSION = """\
# submission: relaying needs AUTH (no RELAYCLIENT here)
:allow
"""


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "init",
        help="create a root: control files, queue, mailboxes, TLS certificate",
        description="Lay out ROOT so that `quail serve --root ROOT` runs.",
    )
    p.add_argument("root", metavar="ROOT", type=Path)
    p.add_argument("--hostname", help="this host's name (control/me); default: the FQDN")
    p.add_argument(
        "--ports",
        default="2525,2465,2587",
        metavar="SMTP,SMTPS,SUBMISSION",
        help="ports on 127.0.0.1 and ::1 (default 2525,2465,2587)",
    )
    p.add_argument(
        "--existing",
        action="store_true",
        help="ROOT is a qmail tree moved over (e.g. /var/qmail): add only what is missing "
        "(listeners, servercert.pem, compiled rules, ...), never change a file that is there",
    )
    p.set_defaults(handler=run)


def _write(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    write_atomic(path, data.encode() if isinstance(data, str) else data, mode=mode)


def run(args: argparse.Namespace) -> int:
    root: Path = args.root
    try:
        smtp, smtps, submission = (int(p) for p in args.ports.split(","))
    except ValueError:
        raise CliError("--ports wants three numbers: SMTP,SMTPS,SUBMISSION") from None
    if not all(0 < p < 65536 for p in (smtp, smtps, submission)):
        raise CliError("ports are 1 to 65535")
    hostname = (args.hostname or socket.getfqdn()).strip().lower().rstrip(".")
    control = root / "control"
    if args.existing:
        if not control.is_dir():
            raise CliError(f"{control} is not a directory: --existing wants a qmail tree", code=1)
    elif control.exists():
        raise CliError(
            f"{root} is already a root ({control} exists); --existing adds what is missing",
            code=1,
        )
    added: list[str] = []

    def put(path: Path, data: str | bytes, mode: int = 0o644) -> None:
        if args.existing and (path.exists() or path.is_symlink()):
            return
        _write(path, data, mode)
        added.append(str(path.relative_to(root)))

    try:
        for directory in (control, root / "queue", root / "domains", root / "alias" / "Maildir"):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        for sub in ("cur", "new", "tmp"):
            (root / "alias" / "Maildir" / sub).mkdir(exist_ok=True, mode=0o700)
        files = {
            "me": f"{hostname}\n",
            "rcpthosts": f"{hostname}\nlocalhost\n",
            "locals": f"{hostname}\nlocalhost\n",
            "listeners": default_listeners(smtp, smtps, submission),
            "databytes": "26214400\n",
            "timeoutsmtpd": "1200\n",
            "concurrencyincoming": "2000\n",
            "workers": f"{os.cpu_count() or 1}\n",
            "tcp.smtp": TCP_SMTP,
            "tcp.submission": TCP_SUBMISSION,
        }
        if args.existing:
            # qmail-smtpd takes any size without control/databytes: a tree
            # moved over keeps that, not our new roots' 25 MiB.
            del files["databytes"]
        for name, text in files.items():
            put(control / name, text)
        for name in ("tcp.smtp", "tcp.submission"):
            cdb = control / f"{name}.cdb"
            if not (args.existing and cdb.exists()):
                # the rules text that is there (a moved-over tcp.smtp), compiled
                put(cdb, compile_rules((control / name).read_text()))
        if not args.existing or not (control / "servercert.pem").exists():
            put(control / "servercert.pem", self_signed(hostname), 0o600)
        # qmail's install: mail for postmaster, root and MAILER-DAEMON of the
        # local domains goes to the alias user's Maildir.
        for alias in ("postmaster", "root", "mailer-daemon"):
            put(root / "alias" / f".qmail-{alias}", "./Maildir/\n")
    except OSError as exc:
        raise CliError(f"cannot create {root}: {exc.strerror or exc}", code=1) from None
    except ValueError as exc:  # a moved-over tcp.smtp that does not compile
        raise CliError(f"{control / 'tcp.smtp'}: {exc}", code=1) from None
    if args.existing:
        print(f"quailmail root {root}: added {', '.join(added) or 'nothing'}")
        return 0
    print(f"quailmail root {root} for {hostname}: SMTP {smtp}, SMTPS {smtps}, submission "
          f"{submission} on 127.0.0.1 and ::1")  # fmt: skip
    return 0
