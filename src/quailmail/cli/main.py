"""`quail`: the command line.  Subcommands live in their own modules."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from quailmail import __version__
from quailmail.cli import (
    checkdns,
    dknewkey,
    dkverify,
    greylist,
    init,
    inject,
    learn,
    qmailqueue,
    queue,
    serve,
    sign,
    spf,
    tcprules,
    user,
    verify,
)
from quailmail.cli.common import handle


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quail", description="quailmail: a qmail-style mail server."
    )
    parser.add_argument("--version", action="version", version=f"quail {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in (
        init,
        serve,
        inject,
        qmailqueue,
        dknewkey,
        sign,
        verify,
        dkverify,
        spf,
        checkdns,
        tcprules,
        user,
        queue,
        greylist,
        learn,
    ):
        module.register(sub)
    return parser


# sendmail options that mean nothing here (delivery mode, error mode, the
# old "-oi" spelling is inject's own); accepted and ignored, as qmail's
# sendmail wrapper does.
_SENDMAIL_IGNORED = ("-o", "-B", "-b", "-v", "-U", "-O")
DEFAULT_SENDMAIL_ROOT = "/var/qmail"


def sendmail_argv(argv: Sequence[str]) -> list[str]:
    """`sendmail [-t] [-i] [-f SENDER] [-F NAME] [RCPT...]` as `quail inject`
    arguments: flags of sendmail's that do not apply are dropped."""
    out = ["inject"]
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--":
            out += ["--", *args]
            break
        if arg in ("-oi", "-i", "-t"):
            out.append(arg)
        elif arg in ("-f", "-F", "-r"):
            if args:
                out += ["-f" if arg == "-r" else arg, args.pop(0)]
        elif arg[:2] in ("-f", "-F", "-r") and len(arg) > 2:
            out += ["-f" if arg[:2] == "-r" else arg[:2], arg[2:]]
        elif arg.startswith(_SENDMAIL_IGNORED):
            continue
        else:
            out.append(arg)
    if not os.environ.get("QUAIL_ROOT"):
        out += ["--root", DEFAULT_SENDMAIL_ROOT]
    return out


def sendmail() -> int:
    """The `sendmail` command web applications call (`/usr/sbin/sendmail -t
    -i`): `quail inject` on $QUAIL_ROOT, else /var/qmail."""
    return main(sendmail_argv(sys.argv[1:]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return handle(args)


if __name__ == "__main__":
    sys.exit(main())
