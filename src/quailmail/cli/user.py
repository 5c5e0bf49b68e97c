"""`quail user add|del|passwd|list`: the root's virtual users (vpopmail layout).

    quail user add joe@example.com            # prompts twice for the password
    quail user add joe@example.com --password-stdin < pw
    quail user passwd joe@example.com
    quail user del joe@example.com            # the vpasswd line and the mail
    quail user list [example.com]             # address and home, one a line

A user in a new domain makes it hosted (rcpthosts, virtualdomains), as
vpopmail's vadddomain does.  Exit 0 on success, 1 when the user exists or
does not, 2 on bad arguments or an unwritable root.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from quailmail.cli.common import CliError, add_root_option
from quailmail.config import users
from quailmail.config.control import control_for


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "user",
        help="add, delete, list virtual users and set their passwords",
        description="Manage the root's virtual users, stored as vpopmail stores them "
        "(ROOT/domains/DOMAIN/vpasswd, ROOT/domains/DOMAIN/USER/Maildir).",
    )
    p.add_argument("action", choices=("add", "del", "passwd", "list"))
    p.add_argument("address", nargs="?", help="user@domain (list: an optional domain)")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input (for scripts)",
    )
    p.add_argument("--gecos", default="", metavar="NAME", help="full name (add)")
    add_root_option(p)
    p.set_defaults(handler=run)


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
    else:
        if not sys.stdin.isatty():
            # getpass would fall back to reading stdin with a warning.
            raise CliError("no terminal to ask for the password: use --password-stdin")
        try:
            password = getpass.getpass("New password: ")
            again = getpass.getpass("Again: ")
        except EOFError:
            raise CliError("no password given") from None
        if password != again:
            raise CliError("the passwords differ")
    if not password:
        raise CliError("empty password")
    return password


def run(args: argparse.Namespace) -> int:
    if args.root is None:
        raise CliError("--root DIR or $QUAIL_ROOT is required")
    root: Path = args.root
    if args.action != "list" and not args.address:
        raise CliError(f"{args.action} needs an address (user@domain)")
    try:
        if args.action == "list":
            for address, entry in users.list_users(root, args.address):
                print(f"{address}\t{entry.dir}")
            return 0
        if args.action == "add":
            users.split_address(args.address)  # refuse a bad address before prompting
            entry = users.add_user(root, args.address, _read_password(args), gecos=args.gecos)
            domain = users.split_address(args.address)[1]
            print(f"{entry.name}@{domain}\t{entry.dir}")
            if control_for(root).is_local(domain):
                # qmail-send looks at locals before virtualdomains.
                print(f"quail user: warning: {domain} is in control/locals, which wins over "
                      f"virtualdomains: remove it there for {entry.name}@{domain} to get mail",
                      file=sys.stderr)  # fmt: skip
        elif args.action == "passwd":
            if not users.user_exists(root, args.address):
                users.split_address(args.address)
                raise users.UserError(f"{args.address}: no such user")
            users.set_password(root, args.address, _read_password(args))
        else:
            users.delete_user(root, args.address)
    except users.AddressError as exc:
        raise CliError(str(exc)) from None
    except users.UserError as exc:
        raise CliError(str(exc), code=1) from None
    except OSError as exc:
        raise CliError(f"{exc.filename or root}: {exc.strerror or exc}") from None
    return 0
