"""Debian's real spamd on loopback (package `spamd`, installed by `make peers`).

`start_spamd(allow_tell=...)` starts one on a free 127.0.0.1 port and a unix
socket, with the rules Debian ships in /usr/share/spamassassin (no
sa-update), local tests only (-L: no DNS blocklists, no network), no user
configuration (-x), its Bayes database in a fresh directory.  GTUBE scores
1000 whatever else is configured.  As root spamd must be given a user to
run as (it refuses to scan as root): `nobody`, owning the directory.

`spamd` (module scope, with --allow-tell) is the fixture most tests use.
"""

from __future__ import annotations

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

import pytest

from serverfixtures import free_port

SPAMD = shutil.which("spamd") or "/usr/sbin/spamd"
SA_LEARN = shutil.which("sa-learn") or "/usr/bin/sa-learn"

# The SpamAssassin test string (GTUBE): every spamd scores it 1000.
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


@dataclass
class Spamd:
    port: int
    socket_path: Path
    home: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def spec(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def bayes_path(self) -> Path:
        return self.home / "bayes"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def nspam(self) -> int:
        """How many spams the Bayes database has learnt (sa-learn --dump magic)."""
        done = subprocess.run(
            [SA_LEARN, "--dbpath", str(self.bayes_path), "--dump", "magic"],
            capture_output=True,
            check=False,
        )
        for line in done.stdout.decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[-1] == "nspam":
                return int(parts[2])
        return 0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.home, ignore_errors=True)


def _ping(spamd: Spamd) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", spamd.port), timeout=5) as sock:
            sock.sendall(b"PING SPAMC/1.5\r\n\r\n")
            sock.shutdown(socket.SHUT_WR)
            return sock.recv(100).startswith(b"SPAMD/1.5 0 PONG")
    except OSError:
        return False


def start_spamd(*, allow_tell: bool = True) -> Spamd:
    if not os.path.exists(SPAMD):
        pytest.skip("spamd is not installed (make peers installs Debian's)")
    # Not under pytest's tmp_path: its parents are 0700, and spamd's
    # children run as nobody.
    home = Path(tempfile.mkdtemp(prefix="quail-spamd-"))
    home.chmod(0o755)
    port = free_port()
    sock = home / "spamd.sock"
    args = [
        SPAMD,
        f"--listen=127.0.0.1:{port}",
        f"--listen={sock}",
        "--allowed-ips=127.0.0.1",
        "--nouser-config",
        "--local",
        "--max-children=2",
        f"--helper-home-dir={home}",
        f"--pidfile={home / 'spamd.pid'}",
        "--syslog=stderr",
        f"--cf=bayes_path {home / 'bayes'}",
        "--cf=bayes_auto_learn 0",
    ]
    if allow_tell:
        args.append("--allow-tell")
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(home, nobody.pw_uid, nobody.pw_gid)
        args += ["--username=nobody"]
    log_path = home / "spamd.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    spamd = Spamd(port, sock, home, process, log_path)
    deadline = time.monotonic() + 90  # rules load in 1-3 s; a busy machine is slower
    while not _ping(spamd):
        if process.poll() is not None or time.monotonic() > deadline:
            text = spamd.log()
            spamd.stop()
            raise RuntimeError(f"spamd did not start:\n{text}")
        time.sleep(0.1)
    return spamd


@pytest.fixture(scope="module")
def spamd() -> Iterator[Spamd]:
    running = start_spamd(allow_tell=True)
    yield running
    running.stop()
