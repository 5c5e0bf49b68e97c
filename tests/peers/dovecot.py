"""A private Dovecot IMAP server (Debian dovecot-imapd) on loopback, for one test.

`running_dovecot()` writes a config of its own into a fresh directory, starts
`dovecot -F -c CONF` (the master in the foreground: its process is ours to
stop), and yields once the IMAP port answers.  Plain IMAP on 127.0.0.1 at a
free port, no TLS, clear-text login allowed (only loopback ever sees it);
users come from a `passwd-file` the test fills with `add_user(address, home)`,
each with its mail in `HOME/Maildir` (`mail_location = maildir:~/Maildir`, so
Dovecot's default Maildir++ layout: a folder is `.NAME`, and `subscriptions`
sits in the Maildir, as junk.py writes them).

Who reads the mail: Dovecot never opens a mailbox as root (restrict_access:
"Mail access not allowed for root"), just as a vpopmail setup keeps the mail
of its virtual users under the one vpopmail uid.  So as root the mail is read
as `nobody`: the test builds its mail tree under `mail_root` (beside the
config, in a directory under /tmp that `nobody` may enter: pytest's own
tmp_path is 0700 root) and calls `hand_over()` once delivery is done.  As
another user, everything runs as that user and `hand_over()` does nothing.

The directory is short on purpose: Dovecot's UNIX sockets live in base_dir,
and sun_path holds 108 bytes, which a pytest tmp_path may already exceed.
"""

from __future__ import annotations

import contextlib
import grp
import imaplib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from peers._base import PeerError, PeerMissing, need

PEER = "Dovecot"
PASSWORD = "quail-test-pw"  # one static password for every user of the instance
START_TIMEOUT = 20.0  # seconds until the port must answer
IMAP_BINARY = "/usr/lib/dovecot/imap"  # Debian's place for it

_CONF = """\
# written by tests/peers/dovecot.py for one test
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
# Dovecot 2.3's name (2.4 calls it auth_allow_cleartext): login without TLS.
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
mail_location = maildir:~/Maildir
first_valid_uid = {uid}
first_valid_gid = {gid}
{identity}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {dir}/users
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
{login_chroot}}}
"""

# As root: Dovecot's own unprivileged users (the package creates them) for
# its internal and login processes, and nobody for the mail.
_ROOT_IDENTITY = """\
default_internal_user = dovecot
default_login_user = dovenull
mail_uid = {uid}
mail_gid = {gid}"""
# As anyone else: every process is that user, and none can chroot.
_USER_IDENTITY = """\
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}
service anvil {{
  chroot =
}}"""


def _free_port() -> int:
    # IPv4 only: the instance listens on 127.0.0.1 alone.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Dovecot:
    dir: Path
    port: int
    uid: int  # who reads the mail
    gid: int
    process: subprocess.Popen[bytes]

    @property
    def mail_root(self) -> Path:
        """Where the test builds the mail tree Dovecot reads."""
        return self.dir / "mail"

    @property
    def log_path(self) -> Path:
        return self.dir / "dovecot.log"

    def add_user(self, address: str, home: Path) -> None:
        """A passwd-file line: ADDRESS logs in with PASSWORD, mail in HOME/Maildir."""
        users = self.dir / "users"
        old = users.read_text() if users.exists() else ""
        # user:password:uid:gid:gecos:home:shell; uid and gid are left empty:
        # mail_uid/mail_gid (as root) or the process's own ids say who reads.
        tmp = users.with_suffix(".tmp")
        tmp.write_text(f"{old}{address}:{{PLAIN}}{PASSWORD}:::{address}:{home}::\n")
        # Dovecot rereads it when its mtime or size changes: a line more
        # always changes the size.
        tmp.replace(users)

    def hand_over(self, path: Path) -> None:
        """Give PATH (recursively) to the user Dovecot reads mail as."""
        if os.geteuid() != 0:
            return
        for dirpath, _dirs, names in os.walk(path):
            os.chown(dirpath, self.uid, self.gid)
            for name in names:
                os.chown(os.path.join(dirpath, name), self.uid, self.gid)

    def login(self, address: str) -> imaplib.IMAP4:
        imap = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        imap.login(address, PASSWORD)
        return imap

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _identity() -> tuple[str, int, int]:
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        uid, gid = nobody.pw_uid, nobody.pw_gid
        return _ROOT_IDENTITY.format(uid=uid, gid=gid), uid, gid
    me = pwd.getpwuid(os.geteuid())
    group = grp.getgrgid(me.pw_gid).gr_name
    return _USER_IDENTITY.format(user=me.pw_name, group=group), me.pw_uid, me.pw_gid


def _wait_ready(dc: Dovecot) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if dc.process.poll() is not None:
            raise PeerError(f"dovecot exited at start:\n{_stderr(dc)}{dc.log()}")
        try:
            with socket.create_connection(("127.0.0.1", dc.port), timeout=1) as s:
                s.settimeout(5)
                if s.recv(200).startswith(b"* OK"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise PeerError(f"dovecot did not answer on port {dc.port}:\n{dc.log()}")


def _stderr(dc: Dovecot) -> str:
    return (dc.dir / "stderr").read_text(errors="replace")


def require() -> str:
    """The dovecot binary, or PeerMissing (for pytest.skip) naming the package."""
    binary = need("dovecot", "dovecot-imapd")
    if not Path(IMAP_BINARY).exists():  # dovecot-core alone has no IMAP
        raise PeerMissing(f"{IMAP_BINARY} not found (Debian package dovecot-imapd)")
    return binary


@contextlib.contextmanager
def running_dovecot() -> Iterator[Dovecot]:
    """Start a private Dovecot, stop it and remove its directory at the end."""
    binary = require()
    top = Path(tempfile.mkdtemp(prefix="quail-dc-"))
    try:
        top.chmod(0o755)  # the auth (dovecot) and mail (nobody) processes enter it
        for sub in ("run", "state", "mail"):
            (top / sub).mkdir()
        identity, uid, gid = _identity()
        port = _free_port()
        conf = top / "dovecot.conf"
        conf.write_text(
            _CONF.format(
                dir=top,
                port=port,
                uid=uid,
                gid=gid,
                identity=identity,
                login_chroot="" if os.geteuid() == 0 else "  chroot =\n",
            )
        )
        (top / "users").write_text("")
        with (top / "stderr").open("wb") as err:
            process = subprocess.Popen(
                [binary, "-F", "-c", str(conf)], stdout=err, stderr=err, stdin=subprocess.DEVNULL
            )
        dc = Dovecot(top, port, uid, gid, process)
        try:
            _wait_ready(dc)
            yield dc
        finally:
            dc.stop()
    finally:
        shutil.rmtree(top, ignore_errors=True)
