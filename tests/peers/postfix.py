"""A private Postfix on loopback, as a peer that receives and relays mail.

    with start_postfix(tmp_path / "postfix", relay={"mx.test": quail.smtp}, tls=True) as pf:
        pf.send("a@example.com", ["user@dest.test"], message)   # SMTP to its smtpd
        delivered = pf.wait_delivered("user")                   # bytes, as Postfix wrote them
        pf.wait_log(r"Anonymous TLS connection established from")

Each instance is independent of the system's /etc/postfix: its own
config_directory, queue_directory, data_directory and log file in one
directory of its own, smtpd on a free port of 127.0.0.1 (and ::1 when the
machine has it), no DNS anywhere (`smtp_dns_support_level = disabled`, no
reverse lookup of clients, next hops written as `[address]:port`).

- Mail for `domain` (default `dest.test`) is delivered by virtual(8) to
  `maildir(user)` for each of `users`; any other user there gets Postfix's
  550 5.1.1.  `recipient_access` adds `check_recipient_access` entries
  (`{"defer@dest.test": "450 4.2.0 try later"}`) for 4xx and 5xx on demand.
- Mail for each key of `relay` (a domain, or a full address) goes out by
  Postfix's smtp(8) to the value: a port on 127.0.0.1, or a next hop such as
  `"[::1]:2525"` — quailmail's listener, typically.  The client uses
  STARTTLS when offered (`smtp_tls_security_level = may`).
- `tls=True` gives smtpd a fresh self-signed certificate and
  `smtpd_tls_security_level = may`; both sides log their TLS handshakes
  (`*_tls_loglevel = 1`).

Postfix's master must run as root (it binds, then each daemon drops to
`mail_owner`; virtual(8) writes as `nobody`), so `start_postfix` raises
`PeerMissing` (a skip, with the reason) when not root or not installed.
The Maildir sits in a directory every user can traverse (virtual(8) opens it
by absolute path as `nobody`, and pytest's temporary directories are private
to root), so the instance lives in the system's temporary directory; at stop
its log and configuration are copied to `keep` for the test's
post-mortem, and the instance directory is removed.

Every instance is stopped on exit from the `with` block (or `stop()`):
`postfix stop`, then SIGKILL to the master's process group if it lingers.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from peers._base import PeerError, PeerMissing, to_crlf

POSTFIX = "/usr/sbin/postfix"
WAIT = 30.0  # seconds a wait for Postfix (start, delivery, a log line) may take
VMAIL_USER = "nobody"  # virtual(8) refuses uid 0 (virtual_minimum_uid >= 1)

MAIN_CF = """\
compatibility_level = 3.6
config_directory = {conf}
queue_directory = {spool}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = {hostname}
mydomain = {hostname}
myorigin = {hostname}
mydestination =
inet_interfaces = loopback-only
inet_protocols = {protocols}
mynetworks = 127.0.0.0/8 [::1]/128
biff = no
append_dot_mydomain = no
smtpd_banner = $myhostname ESMTP Postfix

# No DNS anywhere: clients are not looked up, next hops are literals.
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtp_host_lookup = native

# Messages pass as they came: no header rewriting or added headers for
# clients on loopback (the default treats our own interfaces as local).
local_header_rewrite_clients =
always_add_missing_headers = no

# No local(8) users or aliases; the test domain is virtual.
local_recipient_maps =
alias_maps =
alias_database =
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {mail}
virtual_mailbox_maps = texthash:{conf}/vmailbox
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1

# Relay: loopback clients may relay; transport_maps routes relayed domains.
# Nothing else leaves: no mail from a test reaches out beyond loopback.
relay_domains = {relay_domains}
transport_maps = texthash:{conf}/transport
default_transport = error:5.7.1 a test instance sends only where transport_maps says
relay_transport = $default_transport
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = {recipient_restrictions}
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
address_verify_map =

# Retries come quickly, so a test that waits for one does not wait long.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
delay_warning_time = 0
in_flow_delay = 0

smtpd_tls_security_level = {tls_level}
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_loglevel = 1
smtpd_tls_session_cache_database =
smtp_tls_security_level = may
smtp_tls_loglevel = 1
smtp_tls_session_cache_database =

maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
"""

# Debian's master.cf.proto without chroot (it would need /etc copied into
# the spool) and without the services nobody here uses.
MASTER_CF = """\
{listeners}
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

_QUEUED_AS = re.compile(r"queued as ([0-9A-Za-z]+)")


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def free_port(ipv6: bool) -> int:
    """A port free on 127.0.0.1 (and on ::1 when `ipv6`)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s4:
            s4.bind(("127.0.0.1", 0))
            port = int(s4.getsockname()[1])
            if not ipv6:
                return port
            try:
                with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s6:
                    s6.bind(("::1", port))
            except OSError:
                continue
            return port
    raise PeerError("postfix: no free port on loopback")


def postfix_version() -> str:
    """`mail_version` of the installed Postfix, or PeerMissing."""
    if not Path(POSTFIX).exists():
        raise PeerMissing("postfix is not installed (Debian package postfix)")
    done = subprocess.run(
        ["/usr/sbin/postconf", "-d", "-h", "mail_version"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return done.stdout.strip()


def self_signed(cert: Path, key: Path, hostname: str) -> None:
    """A throw-away RSA certificate for `hostname` (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(private, hashes.SHA256())
    )
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def _nexthop(target: int | str) -> str:
    return f"[127.0.0.1]:{target}" if isinstance(target, int) else target


class Postfix:
    """One running instance; made by `start_postfix`."""

    def __init__(
        self,
        keep: Path,
        *,
        domain: str,
        users: Sequence[str],
        relay: Mapping[str, int | str],
        recipient_access: Mapping[str, str],
        tls: bool,
        ipv6: bool,
        hostname: str,
    ) -> None:
        self.keep = keep
        self.domain = domain
        self.users = tuple(users)
        self.relay = dict(relay)
        self.recipient_access = dict(recipient_access)
        self.tls = tls
        self.ipv6 = ipv6
        self.hostname = hostname
        self.port = free_port(ipv6)
        self.dir = Path(tempfile.mkdtemp(prefix="quail-postfix-"))
        self.conf = self.dir / "conf"
        self.spool = self.dir / "spool"
        self.mail = self.dir / "mail"
        self.maillog = self.dir / "maillog"
        self.version = ""
        self.started = False

    # -- life cycle ---------------------------------------------------------

    def _configure(self) -> None:
        # virtual(8) runs as nobody and opens the Maildir by absolute path.
        self.dir.chmod(0o711)
        for sub in (self.conf, self.spool, self.dir / "data"):
            sub.mkdir()
        shutil.chown(self.dir / "data", "postfix")
        vmail = pwd.getpwnam(VMAIL_USER)
        self.mail.mkdir()
        os.chown(self.mail, vmail.pw_uid, vmail.pw_gid)
        cert, key = self.conf / "cert.pem", self.conf / "key.pem"
        if self.tls:
            self_signed(cert, key, self.hostname)
        (self.conf / "vmailbox").write_text(
            "".join(f"{user}@{self.domain} {self.domain}/{user}/\n" for user in self.users)
        )
        (self.conf / "transport").write_text(
            "".join(f"{key} smtp:{_nexthop(hop)}\n" for key, hop in self.relay.items())
        )
        restrictions = ""
        if self.recipient_access:
            (self.conf / "recipient_access").write_text(
                "".join(f"{key} {action}\n" for key, action in self.recipient_access.items())
            )
            restrictions = f"check_recipient_access texthash:{self.conf}/recipient_access"
        relay_domains = sorted({key.rpartition("@")[2] for key in self.relay})
        (self.conf / "main.cf").write_text(
            MAIN_CF.format(
                conf=self.conf,
                spool=self.spool,
                data=self.dir / "data",
                dir=self.dir,
                mail=self.mail,
                hostname=self.hostname,
                domain=self.domain,
                protocols="all" if self.ipv6 else "ipv4",
                uid=vmail.pw_uid,
                gid=vmail.pw_gid,
                relay_domains=", ".join(relay_domains),
                recipient_restrictions=restrictions,
                tls_level="may" if self.tls else "none",
                cert=cert if self.tls else "",
                key=key if self.tls else "",
            )
        )
        hosts = ["127.0.0.1", "[::1]"] if self.ipv6 else ["127.0.0.1"]
        listeners = "\n".join(f"{host}:{self.port} inet n - n - - smtpd" for host in hosts)
        (self.conf / "master.cf").write_text(MASTER_CF.format(listeners=listeners))

    def postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [POSTFIX, "-c", str(self.conf), *args],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    def start(self) -> Postfix:
        self._configure()
        done = self.postfix("start")
        self.started = True  # even a failed start may have left a master behind
        if done.returncode != 0:
            raise PeerError(f"postfix start: {(done.stderr or done.stdout).strip()}\n{self.log()}")
        self._wait_greeting()
        self.version = postfix_version()
        return self

    def _wait_greeting(self) -> None:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                    if sock.recv(512).startswith(b"220"):
                        sock.sendall(b"QUIT\r\n")
                        sock.recv(512)
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise PeerError(f"postfix: no greeting on 127.0.0.1:{self.port}\n{self.log()}")
            time.sleep(0.05)

    def _master_pid(self) -> int | None:
        try:
            return int((self.spool / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Stop the instance, copy its log and config to `keep`, remove it."""
        if self.started:
            self.started = False
            pid = self._master_pid()
            self.postfix("stop")
            deadline = time.monotonic() + 10
            while pid is not None and time.monotonic() < deadline:
                try:  # `postfix stop` returns before the master has exited
                    os.kill(pid, 0)
                except OSError:
                    break
                time.sleep(0.05)
            else:
                if pid is not None:
                    # The master runs in a session of its own (setsid): its
                    # process group is its children too.
                    with contextlib.suppress(OSError):
                        os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.keep.mkdir(parents=True, exist_ok=True)
            for name in ("maillog", "conf/main.cf", "conf/master.cf"):
                if (self.dir / name).exists():
                    shutil.copy(self.dir / name, self.keep / Path(name).name)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Postfix:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- mail in ------------------------------------------------------------

    def send(
        self,
        sender: str,
        recipients: Sequence[str],
        data: bytes,
        *,
        host: str = "127.0.0.1",
        helo: str = "client.test",
    ) -> str:
        """Submit over SMTP to smtpd; Postfix's queue id.  PeerError, with
        Postfix's reply, when a command is refused (recipients accepted
        before it still get the message)."""
        with smtplib.SMTP(host, self.port, local_hostname=helo, timeout=WAIT) as client:
            client.ehlo()
            replies = [client.mail(sender), *(client.rcpt(r) for r in recipients)]
            replies.append(client.data(to_crlf(data)))
        for code, text in replies:
            if not 200 <= code < 400:
                raise PeerError(f"postfix refused: {code} {text.decode(errors='replace')}")
        queued = _QUEUED_AS.search(replies[-1][1].decode(errors="replace"))
        if queued is None:
            raise PeerError(f"postfix: no queue id in {replies[-1]!r}")
        return queued.group(1)

    # -- mail out -----------------------------------------------------------

    def maildir(self, user: str) -> Path:
        return self.mail / self.domain / user

    def delivered(self, user: str) -> list[bytes]:
        """The messages in `user`'s Maildir (new/), oldest first."""
        new = self.maildir(user) / "new"
        if not new.is_dir():
            return []
        files = sorted(new.iterdir(), key=lambda p: (p.stat().st_mtime, p.name))
        return [p.read_bytes() for p in files]

    def wait_delivered(self, user: str, count: int = 1) -> list[bytes]:
        """Wait until `user` has `count` messages; them, oldest first."""
        deadline = time.monotonic() + WAIT
        while True:
            got = self.delivered(user)
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise PeerError(f"postfix: {len(got)} of {count} delivered\n{self.log()}")
            time.sleep(0.05)

    # -- the log ------------------------------------------------------------

    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except OSError:
            return ""

    def wait_log(self, pattern: str) -> re.Match[str]:
        """The first log line matching `pattern`, waiting for postlogd."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + WAIT
        while True:
            for line in self.log().splitlines():
                found = regex.search(line)
                if found is not None:
                    return found
            if time.monotonic() > deadline:
                raise PeerError(f"postfix: no log line like {pattern!r}\n{self.log()}")
            time.sleep(0.05)

    def status(self, queue_id: str, recipient: str) -> str:
        """Wait for the final word on one recipient (`sent`, `bounced`,
        `deferred`); its log line."""
        found = self.wait_log(
            rf"{queue_id}: to=<{re.escape(recipient)}>.*status=(sent|bounced|deferred)"
        )
        return found.string


def start_postfix(
    keep: Path,
    *,
    domain: str = "dest.test",
    users: Sequence[str] = ("user",),
    relay: Mapping[str, int | str] | None = None,
    recipient_access: Mapping[str, str] | None = None,
    tls: bool = False,
    ipv6: bool | None = None,
    hostname: str = "postfix.test",
) -> Postfix:
    """A started private Postfix; use it in `with` (or call `stop()`).
    At stop its log, main.cf and master.cf are copied to `keep` (made if
    missing), e.g. `tmp_path / "postfix"`.

    `relay` maps domains (or addresses) to where Postfix sends them: a port
    on 127.0.0.1 or a next hop `"[::1]:PORT"`.  `ipv6=None` listens on ::1
    too when the machine has it."""
    if os.geteuid() != 0:
        raise PeerMissing("Postfix's master must run as root")
    postfix_version()
    instance = Postfix(
        keep,
        domain=domain,
        users=users,
        relay=relay or {},
        recipient_access=recipient_access or {},
        tls=tls,
        ipv6=has_ipv6_loopback() if ipv6 is None else ipv6,
        hostname=hostname,
    )
    try:
        return instance.start()
    except BaseException:
        instance.stop()
        raise
