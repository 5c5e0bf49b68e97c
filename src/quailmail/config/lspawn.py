"""Who takes mail for a local address: qmail-lspawn's lookup, done once.

Both the RCPT check (`config/recipients.py`) and local delivery
(`deliver/scheduler.py`) call `assignment()`, so what the receiver accepts
is what the scheduler delivers to.

qmail-send first turns a recipient into qmail-lspawn's local part: the
local part itself for a `locals` domain, `PREFIX-local` for a
`virtualdomains` one (prefix `sample.com` → `sample.com-joe`).  Then, in
qmail-lspawn's order:

1. `users/assign` (`config/assign.py`): an exact line, else the longest
   wildcard.
2. For a virtual domain without one, quailmail's own layout:
   `ROOT/domains/PREFIX`, when that directory exists (what `quail user`
   manages; as if `+PREFIX-` pointed there).
3. qmail-getpw: the system user named by the longest prefix of the local
   part that ends before a `-` (the whole local part first), lowercased,
   at most 31 characters, whose uid is not 0 and whose home exists and is
   owned by that uid; the rest after the dash is the extension.
4. The alias user, `ROOT/alias`, with the whole local part as extension.

A home that is a virtual domain's directory (step 2, or the `+PREFIX-`
line vadddomain writes) holds vpopmail's users: `domain_dir` is set and
the extension names the vpasswd user (vdelivermail's job, done here).

uid and gid are those qmail-local would run as: None for `ROOT/alias` and
`ROOT/domains` (whoever quailmail runs as, as before), the numbers of the
assign line or the password entry otherwise.
"""

from __future__ import annotations

import errno
import os
import pwd
import time
from dataclasses import dataclass
from pathlib import Path

from quailmail.config.assign import home_of, read_assign
from quailmail.config.control import Control
from quailmail.core.files import is_file_name

GETPW_USERLEN = 32  # qmail-getpw: user names shorter than this are tried
ALIAS = "alias"  # qmail's alias user, our ROOT/alias

# qmail's error_temp: a stat that failed for one of these is a temporary
# failure of the lookup ("NFS failure in qmail-local"), not "no such user".
_TEMPORARY = frozenset(
    {
        errno.EINTR, errno.ENOMEM, errno.ETXTBSY, errno.EIO, errno.ETIMEDOUT,
        errno.EAGAIN, errno.ENFILE, errno.EMFILE, errno.ESTALE, errno.EBUSY,
    }
)  # fmt: skip


class LookupFailure(Exception):
    """qmail-lspawn would stop here with a temporary failure (its reason)."""


@dataclass(frozen=True, slots=True)
class Assignment:
    """qmail-local's arguments: user, uid, gid, home, dash, extension."""

    user: str
    home: Path
    dash: str
    ext: str
    uid: int | None = None  # None: the user quailmail runs as
    gid: int | None = None
    source: str = ""  # for the log: users/assign, system user, domains, alias
    domain_dir: Path | None = None  # a virtual domain's directory (vpasswd inside)

    @property
    def is_alias(self) -> bool:
        return self.source == ALIAS


def qmail_local(control: Control, local: str, domain: str) -> tuple[str, str | None]:
    """qmail-send's rewrite: the local part qmail-lspawn sees, and the
    virtualdomains prefix (None for a `locals` domain)."""
    if control.is_local(domain):
        return local, None
    prefix = control.virtualdomain(local, domain)
    if not prefix:
        return local, None
    return f"{prefix}-{local}", prefix


def assignment(control: Control, local: str, domain: str) -> Assignment:
    """Who gets `local@domain`, a domain of ours (`locals` or
    `virtualdomains`), in qmail-lspawn's order (module docstring).

    Raises LookupFailure (temporary) where qmail-lspawn would defer:
    an assign line with uid 0, a home that cannot be stat'ed for a
    temporary reason.
    """
    qlocal, prefix = qmail_local(control, local, domain)
    root = control.root
    assign = read_assign(root)
    found = assign.lookup(qlocal)
    if found is not None:
        entry, ext = found
        if entry.uid == 0:
            # qmail-lspawn: "Not allowed to perform deliveries as root."
            raise LookupFailure("users/assign gives uid 0: not allowed to deliver as root (#4.3.0)")
        home = home_of(root, entry)
        vdomain = prefix is not None and assign.domain_entry(prefix) is entry
        return Assignment(entry.user, home, entry.dash, ext, entry.uid, entry.gid,
                          "users/assign", home if vdomain else None)  # fmt: skip
    if prefix is not None and is_file_name(prefix):
        ddir = root / "domains" / prefix
        if os.path.isdir(ddir):
            return Assignment(domain.lower(), ddir, "-", local, source="domains", domain_dir=ddir)
    return getpw(qlocal) or Assignment(ALIAS, root / "alias", "-", qlocal, source=ALIAS)


def getpw(local: str) -> Assignment | None:
    """qmail-getpw's `userext`: the system user for `local`, or None.

    Candidates are the whole local part, then each prefix ending before a
    `-`, longest first, lowercased; a candidate is taken when its uid is
    not 0, `stat(home)` succeeds and the home belongs to that uid.  The
    extension is what follows the candidate and its dash ("" and no dash
    for the whole local part).
    """
    for n in range(min(len(local), GETPW_USERLEN - 1), 0, -1):
        if n < len(local) and local[n] != "-":
            continue
        pw = _getpwnam(local[:n].lower())
        if pw is None or pw.pw_uid == 0:
            continue
        try:
            st = os.stat(pw.pw_dir)
        except OSError as err:
            if err.errno in _TEMPORARY:
                reason = f"NFS failure in qmail-local: {pw.pw_dir}: {err.strerror}"
                raise LookupFailure(reason) from err
            continue
        if st.st_uid != pw.pw_uid:
            continue
        dash, ext = ("-", local[n + 1 :]) if n < len(local) else ("", "")
        return Assignment(pw.pw_name, Path(pw.pw_dir), dash, ext, pw.pw_uid, pw.pw_gid,
                          "system user")  # fmt: skip
    return None


_PWD_TTL = 60.0  # seconds a password entry is kept (nss "files" parses /etc/passwd per call)
_pwd_cache: dict[str, tuple[float, pwd.struct_passwd | None]] = {}


def _getpwnam(name: str) -> pwd.struct_passwd | None:
    """getpwnam, kept a minute: RCPT is the per-message path.  The home's
    stat is never kept (qmail-getpw looks at it for every delivery)."""
    now = time.monotonic()
    hit = _pwd_cache.get(name)
    if hit is not None and now - hit[0] < _PWD_TTL:
        return hit[1]
    try:
        found: pwd.struct_passwd | None = pwd.getpwnam(name)
    except KeyError:
        found = None
    if len(_pwd_cache) > 4096:
        _pwd_cache.clear()
    _pwd_cache[name] = (now, found)
    return found


def forget_passwords() -> None:
    """Drop the kept password entries (a test that adds a user calls it)."""
    _pwd_cache.clear()


# -- qmail-local's search for the .qmail file ---------------------------------


@dataclass(frozen=True, slots=True)
class Found:
    path: Path | None  # None: no .qmail at all (follow the default delivery)
    default: str  # DEFAULT: what "default" stood for ("" if not a -default file)

    @property
    def is_default(self) -> bool:
        return self.path is not None and self.path.name.endswith("default")


def _exists(path: Path) -> bool:
    """qmail-local's `qmeexists`: missing is no; any other error propagates
    (qmail-local defers on it rather than fall through to the next name)."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def qmesearch(home: Path, dash: str, ext: str) -> Found | None:
    """The `.qmail` file qmail-local reads for DASH and EXT in HOME.

    qmail-local's `qmesearch`: `.qmail` + dash + ext (lowercased, `.`
    written `:`); with a dash, then each `.qmail-PREFIX-default` for the
    dashes of ext from the right, then `.qmail-default`.  None when a dash
    was given and nothing matched ("Sorry, no mailbox here by that name.");
    Found(None, "") when there is no dash and no file (the default
    delivery).  DEFAULT is the part of EXT that `default` stood for.
    """
    safe = ext.replace(".", ":").lower()
    exact = home / f".qmail{dash}{safe}"
    if _exists(exact):
        return Found(exact, ext[len(safe) - 7 :] if safe.endswith("default") else "")
    if not dash:
        return Found(None, "")
    for i in range(len(safe), -1, -1):
        if i == 0 or safe[i - 1] == "-":
            candidate = home / f".qmail{dash}{safe[:i]}default"
            if _exists(candidate):
                return Found(candidate, ext[i:])
    return None
