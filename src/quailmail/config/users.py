"""Virtual users, stored as vpopmail stores them, so its tools and scripts still work.

Layout under a root (vpopmail's `~vpopmail/domains`):

    ROOT/domains/DOMAIN/vpasswd              one line per user (format below)
    ROOT/domains/DOMAIN/USER/Maildir/{cur,new,tmp}   made as maildirmake does (0700)
    ROOT/domains/DOMAIN/USER/.qmail          optional per-user delivery lines
    ROOT/domains/DOMAIN/.qmail-NAME          aliases and forwards (qmail-local rules)

A `vpasswd` line is vpopmail's (vpopmail's `vcdb.c` writes it; fields as in
`struct vqpasswd`):

    name:passwd:uid:gid:gecos:dir:quota[:clear]

`uid` is vpopmail's POP/APOP marker (1 = POP), `gid` its flag bits (0 = no
restriction), `dir` the user's home (what `vuserinfo -d` prints, and where
scripts find `Maildir`), `quota` `NOQUOTA` or a size.  vpopmail built with
`--enable-clear-passwd` adds the clear password as an eighth field; we keep
other users' fields as they are, and drop it from a user whose password we
set.  We write no `vpasswd.cdb` (vpopmail's compiled copy): quailmail reads the
text file.

The domain's directory is `ROOT/domains/PREFIX`, where PREFIX is the
domain's `virtualdomains` value (vadddomain writes `domain:domain`; an alias
domain made by vaddaliasdomain maps to the real one), else the domain itself;
or, on a box moved from vpopmail, the home of the domain's `+PREFIX-` line
in `users/assign` (`/home/vpopmail/domains/DOMAIN`).

Adding a user to a domain without a directory makes the domain hosted, as
vpopmail's `vadddomain` does: the domain is added to `control/rcpthosts`
and `control/virtualdomains` (`domain:domain`).  No `.qmail-default` is
written: vpopmail writes `| vdelivermail '' bounce-no-mailbox`, a program
quailmail does not have; without the file, mail to unknown users of the
domain is refused, which is what that line does.

New passwords are argon2id hashes (argon2-cffi's defaults, RFC 9106).  The
crypt hashes vpopmail leaves (`$6$`, `$5$`, `$1$`, DES) are verified with the
standard library's `crypt` while Python has it (removed in 3.13; after that
those users must be given a new password with `quail user passwd`).

Every file is rewritten whole: temporary file, fsync, rename, fsync of the
directory, under an exclusive lock, so a reader sees the old file or the new
one and a crash leaves one of the two.  In a domain that `users/assign`
gives to a uid (vpopmail's), what we write (vpasswd, a user's directory and
Maildir) is given to that uid and gid when we run as root, so vpopmail's own
programs and delivery as that uid can still read and write it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import hmac
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType

import argon2

from quailmail.config.assign import home_of, read_assign
from quailmail.config.control import CACHE, control_for
from quailmail.core import files

DIR_MODE = 0o700  # vpopmail's domain and user directories; maildirmake's Maildir
FILE_MODE = 0o600  # vpasswd holds password hashes
QUOTA_NONE = "NOQUOTA"

# vpopmail lowercases user names; ':' '/' and control characters would break
# the file or the path.  Kept to the characters of the local part that are
# safe in a path and unquoted in an address (RFC 5321 atext, less '/').
_USER_RE = re.compile(r"[a-z0-9!#$%&'*+=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+=?^_`{|}~-]+)*")
_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
MAX_USER = 64  # RFC 5321 §4.5.3.1.1, the local part

_hasher = argon2.PasswordHasher()  # argon2id, t=3, m=64 MiB, p=4 (RFC 9106 §4 second choice)


class UserError(ValueError):
    """A request that cannot be done: no such user, user exists."""


class AddressError(UserError):
    """Not a `user@domain` we can store."""


@dataclass(frozen=True, slots=True)
class VUser:
    """One `vpasswd` line."""

    name: str
    passwd: str
    uid: str
    gid: str
    gecos: str
    dir: str
    quota: str
    extra: tuple[str, ...] = ()  # vpopmail's clear password, when built with it

    def line(self) -> str:
        fields = [self.name, self.passwd, self.uid, self.gid, self.gecos, self.dir, self.quota]
        return ":".join([*fields, *self.extra])


def parse_vpasswd(data: bytes) -> dict[str, VUser]:
    """vpasswd lines by user name; short or blank lines are skipped."""
    users: dict[str, VUser] = {}
    for raw in data.decode("utf-8", errors="replace").split("\n"):
        line = raw.rstrip("\r")
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) < 7:
            continue
        n, pw, uid, gid, gecos, home, quota = fields[:7]
        user = VUser(n, pw, uid, gid, gecos, home, quota, tuple(fields[7:]))
        users.setdefault(user.name.lower(), user)
    return users


# -- addresses and paths ---------------------------------------------------


def split_address(address: str) -> tuple[str, str]:
    """`user@domain` (or vpopmail's `user%domain`) → lowercased, checked parts."""
    text = address.strip()
    if "@" in text:
        user, _, domain = text.rpartition("@")
    elif "%" in text:
        user, _, domain = text.rpartition("%")
    else:
        raise AddressError(f"{address!r}: not user@domain")
    user, domain = user.lower(), domain.lower().rstrip(".")
    if len(user) > MAX_USER or not _USER_RE.fullmatch(user):
        raise AddressError(f"{address!r}: user name not allowed")
    labels = domain.split(".")
    if len(domain) > 253 or len(labels) < 2 or not all(_LABEL_RE.fullmatch(x) for x in labels):
        raise AddressError(f"{address!r}: not a domain name")
    return user, domain


def domain_dir(root: Path, domain: str) -> Path:
    """The directory of a virtual domain's users.

    The home of `users/assign`'s `+PREFIX-` line when there is one (what
    vpopmail's vadddomain writes: `/home/vpopmail/domains/DOMAIN` on a
    migrated box), else `ROOT/domains/PREFIX`; PREFIX is the domain's
    virtualdomains prefix, else the domain itself.
    """
    name = _domain_name(root, domain)
    entry = read_assign(root).domain_entry(name)
    if entry is not None:
        return home_of(root, entry)
    return Path(root) / "domains" / name


def _domain_name(root: Path, domain: str) -> str:
    """The domain's virtualdomains prefix when it names a directory, else
    the domain itself (lowercased)."""
    domain = domain.lower()
    prefix = control_for(root).mapping("virtualdomains").get(domain)
    return prefix if prefix and files.is_file_name(prefix) else domain


def read_vpasswd(ddir: Path) -> dict[str, VUser]:
    """The domain's users (cached by the file's stat; empty when none)."""
    return CACHE.get(ddir / "vpasswd", parse_vpasswd, {})


def lookup_user(root: Path, address: str) -> VUser | None:
    user, domain = split_address(address)
    return read_vpasswd(domain_dir(root, domain)).get(user)


def user_exists(root: Path, address: str) -> bool:
    try:
        return lookup_user(root, address) is not None
    except UserError:
        return False


# -- hashing ---------------------------------------------------------------


def hash_password(password: str) -> str:
    if not password:
        raise UserError("empty password")
    if any(ch in password for ch in "\0\n"):
        raise UserError("password contains a NUL or newline")
    return _hasher.hash(password)


def _crypt_module() -> ModuleType | None:
    """The standard library's `crypt`, while it exists (deprecated 3.11, gone 3.13)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt  # noqa: PLC0415
        except ImportError:
            return None
    return crypt


def check_hash(stored: str, password: str) -> bool:
    """`password` against a stored hash: argon2 (ours) or crypt(3) (vpopmail's).

    Blocking (argon2 takes tens of milliseconds): call from a thread.
    """
    if stored.startswith("$argon2"):
        try:
            return _hasher.verify(stored, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False
    if not stored or stored.startswith(("!", "*")):
        return False  # a locked or empty password never matches
    crypt = _crypt_module()
    if crypt is None:
        return False
    try:
        computed = crypt.crypt(password, stored)
    except (OSError, ValueError):
        return False
    return computed is not None and hmac.compare_digest(computed, stored)


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the user does not exist, so an unknown name costs
    as long as a wrong password (no user enumeration by timing)."""
    return _hasher.hash("quailmail: no such user")


def check_user_password(root: Path, username: str, password: str) -> bool:
    """Blocking form of `verify_password`.  OSError propagates (a temporary failure)."""
    try:
        user = lookup_user(root, username)
    except UserError:
        user = None
    if user is None:
        check_hash(_dummy_hash(), password)
        return False
    return check_hash(user.passwd, password)


async def verify_password(root: Path, username: str, password: str) -> bool:
    """Does `username` (`user@domain`) have `password` in the root's vpasswd files?

    argon2 runs in a thread: the event loop is not blocked.  An unreadable
    vpasswd counts as a failure here; `config.auth.authenticate` tells it apart.
    """
    try:
        return await asyncio.to_thread(check_user_password, Path(root), username, password)
    except OSError:
        return False


# -- writing ---------------------------------------------------------------


@contextlib.contextmanager
def _locked(lockfile: Path) -> Iterator[None]:
    """An exclusive flock on `lockfile` (vpopmail also keeps a `vpasswd.lock`)."""
    fd = os.open(lockfile, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _mkdir(path: Path, owner: tuple[int, int] | None = None) -> None:
    path.mkdir(mode=DIR_MODE, exist_ok=True)
    os.chmod(path, DIR_MODE)  # mkdir's mode is masked by the umask
    if owner is not None:
        os.chown(path, *owner)


def make_maildir(path: Path, owner: tuple[int, int] | None = None) -> None:
    """maildirmake: `path` and its tmp, new, cur, all 0700 (and `owner`'s)."""
    _mkdir(path, owner)
    for sub in ("tmp", "new", "cur"):
        _mkdir(path / sub, owner)


def domain_owner(root: Path, domain: str) -> tuple[int, int] | None:
    """The (uid, gid) a domain's files belong to: those of its `+PREFIX-`
    line in users/assign (vpopmail's 89:89 on QmailToaster), when we run as
    root and may give them away; else None (ours, as before)."""
    if os.geteuid() != 0:
        return None
    entry = read_assign(root).domain_entry(_domain_name(root, domain))
    return None if entry is None else (entry.uid, entry.gid)


def _rewrite_vpasswd(
    ddir: Path, change: Callable[[dict[str, VUser]], None], owner: tuple[int, int] | None = None
) -> None:
    with _locked(ddir / "vpasswd.lock"):
        try:
            data = (ddir / "vpasswd").read_bytes()
        except FileNotFoundError:
            data = b""
        users = parse_vpasswd(data)
        change(users)
        text = "".join(u.line() + "\n" for u in users.values())
        files.write_atomic(ddir / "vpasswd", text.encode("utf-8"), mode=FILE_MODE, owner=owner)


def _add_list_line(path: Path, line: str, present: Callable[[str], bool]) -> None:
    """Append `line` to a control file unless a line satisfies `present` (atomic rewrite)."""
    try:
        old = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        old = ""
    if any(present(x.strip().lower()) for x in old.splitlines()):
        return
    if old and not old.endswith("\n"):
        old += "\n"
    files.write_atomic(path, (old + line + "\n").encode("utf-8"))


def add_domain(root: Path, domain: str) -> Path:
    """vadddomain: `ROOT/domains/DOMAIN/`, and the domain in rcpthosts and virtualdomains."""
    root = Path(root)
    domain = domain.lower()
    control = root / "control"
    control.mkdir(parents=True, exist_ok=True)
    domains = root / "domains"
    _mkdir(domains)
    with _locked(domains / ".lock"):
        _add_list_line(control / "rcpthosts", domain, lambda x: x == domain)
        _add_list_line(
            control / "virtualdomains",
            f"{domain}:{domain}",
            lambda x: x.partition(":")[0].strip() == domain,
        )
        ddir = domain_dir(root, domain)
        _mkdir(ddir)
    return ddir


def add_user(root: Path, address: str, password: str, *, gecos: str = "") -> VUser:
    """vadduser: a vpasswd line and `DIR/Maildir`; the domain is added when new."""
    root = Path(root)
    user, domain = split_address(address)
    if any(ch in gecos for ch in ":\n\0"):
        raise UserError("the full name may not contain ':' or a newline")
    passwd = hash_password(password)
    ddir = domain_dir(root, domain)
    if not (ddir / "vpasswd").exists() and not ddir.is_dir():
        ddir = add_domain(root, domain)
    home = ddir / user
    entry = VUser(user, passwd, "1", "0", gecos or user, str(home.absolute()), QUOTA_NONE)
    owner = domain_owner(root, domain)

    def change(users: dict[str, VUser]) -> None:
        if user in users:
            raise UserError(f"{user}@{domain} exists")
        # The mailbox first: a vpasswd line never points at a missing Maildir.
        _mkdir(home, owner)
        make_maildir(home / "Maildir", owner)
        users[user] = entry

    _rewrite_vpasswd(ddir, change, owner)
    return entry


def set_password(root: Path, address: str, password: str) -> None:
    """vpasswd: a new argon2id hash (and no clear-text copy) for an existing user."""
    user, domain = split_address(address)
    passwd = hash_password(password)
    ddir = domain_dir(Path(root), domain)

    def change(users: dict[str, VUser]) -> None:
        old = users.get(user)
        if old is None:
            raise UserError(f"{user}@{domain}: no such user")
        users[user] = replace(old, passwd=passwd, extra=())

    _rewrite_vpasswd(ddir, change, domain_owner(Path(root), domain))


def delete_user(root: Path, address: str) -> None:
    """vdeluser: the vpasswd line, then the user's directory with its mail."""
    root = Path(root)
    user, domain = split_address(address)
    ddir = domain_dir(root, domain)
    removed: list[VUser] = []

    def change(users: dict[str, VUser]) -> None:
        old = users.pop(user, None)
        if old is None:
            raise UserError(f"{user}@{domain}: no such user")
        removed.append(old)

    if not (ddir / "vpasswd").exists():
        raise UserError(f"{user}@{domain}: no such user")
    _rewrite_vpasswd(ddir, change, domain_owner(root, domain))
    home = Path(removed[0].dir)
    # Only a home inside the domain's directory is removed: a vpasswd edited
    # by hand could point anywhere.
    if home.resolve().parent == ddir.resolve() and home.is_dir():
        shutil.rmtree(home)


def list_users(root: Path, domain: str | None = None) -> list[tuple[str, VUser]]:
    """(address, entry) pairs, sorted, of one domain or of every hosted one."""
    root = Path(root)
    if domain is not None:
        domain = domain.lower()
        return [(f"{u.name}@{domain}", u) for u in _sorted(read_vpasswd(domain_dir(root, domain)))]
    out: list[tuple[str, VUser]] = []
    seen: set[Path] = set()
    # The hosted domains, where their users live (ROOT/domains/PREFIX, or
    # the home users/assign gives a vpopmail tree moved over) ...
    for domain, prefix in sorted(control_for(root).mapping("virtualdomains").items()):
        if not domain or domain.startswith(".") or "@" in domain or not prefix:
            continue
        ddir = domain_dir(root, domain)
        if ddir not in seen and (ddir / "vpasswd").is_file():
            seen.add(ddir)
            out.extend((f"{u.name}@{domain}", u) for u in _sorted(read_vpasswd(ddir)))
    # ... and any other directory under ROOT/domains, named by its domain.
    base = root / "domains"
    if base.is_dir():
        for ddir in sorted(p for p in base.iterdir() if p.is_dir() and p not in seen):
            out.extend((f"{u.name}@{ddir.name}", u) for u in _sorted(read_vpasswd(ddir)))
    return sorted(out, key=_by_domain)


def _by_domain(pair: tuple[str, VUser]) -> tuple[str, str]:
    user, _, domain = pair[0].rpartition("@")
    return domain, user


def _sorted(users: dict[str, VUser]) -> list[VUser]:
    return [users[k] for k in sorted(users)]
