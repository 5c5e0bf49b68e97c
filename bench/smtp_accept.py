"""SMTP accept rate, quailmail beside Postfix in one run; memory per idle
connection.

    bench/smtp_accept.sh [--seconds 3.5] [--rounds 2] [--idle 1000] [--json FILE]

Both servers accept into a durable queue (a 250 only after an fsync) with
delivery disabled, on loopback, driven by Postfix's own `smtp-source`
(one connection per message: HELO, MAIL, RCPT, DATA, QUIT) at 1, 10 and 50
concurrent sessions with 4 KiB and 100 KiB bodies:

- quailmail: `quail init ROOT --hostname bench.test`,
  `quail serve --quiet --receive-only`: no scheduler drains the queue.
- Postfix: a private instance (its own config and queue directories under
  the work directory, `postfix -c DIR start`), smtpd on a free port of
  127.0.0.1.  Delivery is disabled twice over: master.cf has no qmgr (nor
  pickup, local, smtp), and `smtpd_data_restrictions = check_client_access
  static:HOLD` sends every message to the hold queue, so cleanup neither
  looks for the missing qmgr nor logs a warning per message.  cleanup still
  fsyncs the queue file before smtpd answers 250 (a held message is only
  renamed into hold/ after that fsync).  `in_flow_delay = 0`: with no qmgr
  handing out tokens, Postfix would otherwise pause a second per message.
  No DNS: `smtpd_peername_lookup = no`, an explicit myhostname, no alias or
  local-recipient tables.

Each point: a short probe (which also warms the server up) sets the count
for about `--seconds`; smtp-source sends it; msgs/s = count / elapsed.  The
acknowledged count (smtp-source aborts on any non-2xx reply) is checked
against the queue: `quail queue stats --json` for quailmail, the files in
hold/ for Postfix.  Points alternate between the servers, and `--rounds`
repeats the whole grid (second round in reverse order); the table shows
the median of the rounds, the JSON keeps every sample.

Memory: a fresh quailmail server, 1,000 clients that read the greeting and
then hold their connection open; the server's VmRSS before and after.

Goal (issue 5): >= 1.5x Postfix at 50 connections and 4 KiB, >= 1x at every
other point, under 50 KiB per idle connection.

Runs as root (Postfix's master must); needs smtp-source and postfix
(`make bench-peers`).  Everything listens on 127.0.0.1 (and ::1 for
quailmail's default listeners) only; every server started is stopped on
exit, failure or signal.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CONCURRENCY = (1, 10, 50)
SIZES = ((4096, "4 KiB"), (102400, "100 KiB"))
# relay modes: OpenDKIM signs From: bench.test (smtp-source writes From: from -f)
SENDER = "sender@bench.test"
RECIPIENT = "postmaster@bench.test"  # quail: alias/.qmail-postmaster; Postfix: mydestination
POINT_TIMEOUT = 10.0  # seconds: an smtp-source run that takes longer is killed
GOAL_50_4K = 1.5
GOAL_OTHER = 1.0
GOAL_KIB_PER_IDLE = 50.0
BENCH = Path(__file__).resolve().parent


class BenchError(Exception):
    """The benchmark cannot go on; one line saying why."""


def free_port() -> int:
    """A port free on both 127.0.0.1 and ::1 (quail's default listeners)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s4:
            s4.bind(("127.0.0.1", 0))
            port = int(s4.getsockname()[1])
            try:
                with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s6:
                    s6.bind(("::1", port))
            except OSError:
                continue
            return port
    raise BenchError("no free port on loopback")


def wait_greeting(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                if sock.recv(512).startswith(b"220"):
                    sock.sendall(b"QUIT\r\n")
                    sock.recv(512)
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"no 220 greeting on 127.0.0.1:{port} after {timeout:.0f} s")
        time.sleep(0.1)


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (the workers of `quail serve`, Postfix's daemons)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *(p for child in children for p in process_tree(int(child)))]


def rss_kib(pid: int) -> int:
    """Resident memory of `pid` and its children (the workers of `quail serve`)."""
    return sum(_own_rss_kib(p) for p in process_tree(pid))


def cpu_seconds(pid: int) -> float:
    """CPU time used by `pid` and its descendants, and by their children
    that have exited and been waited for (Postfix's daemons come and go)."""
    ticks = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile: its parent's cutime counts it once reaped
        ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def _own_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- the two servers ---------------------------------------------------------------


class Quail:
    name = "quailmail"

    def __init__(self, work: Path, tag: str = "quail", *, receive_only: bool = True) -> None:
        self.root = work / tag
        self.log = work / f"{tag}.log"
        self.port = free_port()
        self.receive_only = receive_only
        self.proc: subprocess.Popen[bytes] | None = None

    def quail(
        self, *args: str, timeout: float = 60, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "quailmail", *args],
            input=stdin, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def start(self) -> None:
        self.init()
        self.serve()

    def init(self) -> None:
        """`quail init`: the root, its control files and queue (configure, then serve)."""
        ports = f"{self.port},{free_port()},{free_port()}"
        done = self.quail("init", str(self.root), "--hostname", "bench.test", "--ports", ports)
        if done.returncode != 0:
            raise BenchError(f"quail init: {done.stderr.strip()}")

    def serve(self) -> None:
        argv = [sys.executable, "-m", "quailmail", "serve", "--root", str(self.root), "--quiet"]
        if self.receive_only:
            argv.append("--receive-only")
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            wait_greeting(self.port)
        except BenchError as exc:
            raise BenchError(f"{exc}; quail serve said:\n{tail(self.log)}") from None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def queued(self) -> int:
        """`quail queue stats`'s count, read in process (cheaper when polling)."""
        from quailmail.queue import QueueSet

        return QueueSet(self.root / "queue").stats()["messages"]

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=35)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


MAIN_CF = """\
compatibility_level = 3.6
config_directory = {dir}/conf
queue_directory = {dir}/spool
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.test
mydomain = bench.test
myorigin = bench.test
mydestination = bench.test
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
# No DNS anywhere: no reverse lookup of the client, no alias or user tables.
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
local_recipient_maps =
alias_maps =
alias_database =
# Permissive for loopback; every message goes to the hold queue (delivery
# disabled: master.cf has no qmgr to run it anyway).
smtpd_client_restrictions =
smtpd_helo_restrictions =
smtpd_sender_restrictions =
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions =
smtpd_data_restrictions = check_client_access static:HOLD
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
# Without a qmgr there are no flow-control tokens: do not pause per message.
in_flow_delay = 0
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
"""

# No qmgr, pickup, local or smtp: nothing delivers.  No chroot (the Debian
# default would need /etc files copied into the spool).
MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
cleanup   unix  n  -  n  -  0  cleanup
rewrite   unix  -  -  n  -  -  trivial-rewrite
bounce    unix  -  -  n  -  0  bounce
defer     unix  -  -  n  -  0  bounce
trace     unix  -  -  n  -  0  bounce
verify    unix  -  -  n  -  1  verify
proxymap  unix  -  -  n  -  -  proxymap
anvil     unix  -  -  n  -  1  anvil
scache    unix  -  -  n  -  1  scache
postlog   unix-dgram n - n - 1 postlogd
"""


def master_pid(directory: Path) -> int:
    """The pid of the Postfix master of the instance in `directory`
    (OSError, ValueError or IndexError while it has written none)."""
    return int((directory / "spool" / "pid" / "master.pid").read_text().split()[0])


def stop_postfix(postfix: Callable[..., object], directory: Path) -> None:
    """`postfix stop` for the instance in `directory`, then wait for its
    master to exit (the command returns before it does); after 10 s its
    process group is killed."""
    postfix("stop")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(master_pid(directory), 0)
        except (OSError, ValueError, IndexError):
            return
        time.sleep(0.05)
    with contextlib.suppress(OSError, ValueError, IndexError):
        os.killpg(master_pid(directory), signal.SIGKILL)


class Postfix:
    name = "Postfix"

    def __init__(self, work: Path) -> None:
        self.dir = work / "postfix"
        self.port = free_port()
        self.started = False
        self.version = ""

    def postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, "-c", str(self.dir / "conf"), *args],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    @property
    def binary(self) -> str:
        return shutil.which("postfix") or "/usr/sbin/postfix"

    def start(self) -> None:
        if not Path(self.binary).exists():
            raise BenchError("postfix is not installed (run: make bench-peers)")
        for sub in ("conf", "spool", "data"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        shutil.chown(self.dir / "data", "postfix")
        (self.dir / "conf" / "main.cf").write_text(MAIN_CF.format(dir=self.dir))
        (self.dir / "conf" / "master.cf").write_text(MASTER_CF.format(port=self.port))
        done = self.postfix("start")
        self.started = True  # even a failed start may have left a master behind
        if done.returncode != 0:
            raise BenchError(f"postfix start: {(done.stderr or done.stdout).strip()}")
        try:
            wait_greeting(self.port)
        except BenchError as exc:
            raise BenchError(f"{exc}; maillog:\n{tail(self.dir / 'maillog')}") from None
        got = subprocess.run(
            ["postconf", "-c", str(self.dir / "conf"), "-h", "mail_version"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        self.version = got.stdout.strip()

    def queued(self) -> int:
        return sum(len(files) for _, _, files in os.walk(self.dir / "spool" / "hold"))

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        stop_postfix(self.postfix, self.dir)


# -- one point ----------------------------------------------------------------------


@dataclass
class Sample:
    count: int
    seconds: float
    acknowledged: int
    queued: int  # messages the queue gained during the run

    @property
    def rate(self) -> float:
        return self.acknowledged / self.seconds


@dataclass
class Point:
    size: int
    concurrency: int
    samples: dict[str, list[Sample]] = field(default_factory=dict)

    def rate(self, server: str) -> float:
        runs = self.samples.get(server, [])
        return statistics.median(s.rate for s in runs) if runs else 0.0


def smtp_source(
    port: int,
    concurrency: int,
    count: int,
    size: int,
    to: str = RECIPIENT,
    *,
    timeout: float = POINT_TIMEOUT,
) -> tuple[float, int]:
    """Send `count` messages to `to`; (elapsed seconds, DATA commands acknowledged)."""
    binary = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    argv = [
        binary, "-s", str(concurrency), "-m", str(count), "-l", str(size), "-c",
        "-M", "client.bench.test", "-f", SENDER, "-t", to, f"127.0.0.1:{port}",
    ]  # fmt: skip
    start = time.perf_counter()
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(
            f"smtp-source -s {concurrency} -m {count} -l {size} took over {timeout:.0f} s"
        ) from None
    elapsed = time.perf_counter() - start
    # -c prints a counter, "\r"-separated, each time a DATA gets its 2xx.
    counters = re.findall(rb"\d+", done.stdout)
    acknowledged = int(counters[-1]) if counters else 0
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip()
        raise BenchError(f"smtp-source failed after {acknowledged} of {count} messages: {said}")
    return elapsed, acknowledged


def measure(server: Quail | Postfix, point: Point, seconds: float) -> Sample:
    size, concurrency = point.size, point.concurrency
    before = server.queued()
    probe = max(100, 10 * concurrency) if size < 65536 else max(40, 4 * concurrency)
    elapsed, acknowledged = smtp_source(server.port, concurrency, probe, size)
    rate = acknowledged / elapsed
    count = max(int(rate * seconds) // concurrency * concurrency, 10 * concurrency)
    elapsed, acknowledged = smtp_source(server.port, concurrency, count, size)
    queued = server.queued() - before - probe
    sample = Sample(count, elapsed, acknowledged, queued)
    if acknowledged != count or queued != acknowledged:
        raise BenchError(
            f"{server.name}, {concurrency} x {size} B: {count} sent, {acknowledged} got 250, "
            f"{queued} in the queue"
        )
    return sample


# -- idle connections ------------------------------------------------------------------


def hold_idle(port: int, count: int) -> None:
    """The client side of the memory test (run as a child process): open
    `count` connections, read each greeting, say so, hold until stdin closes."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        socks.append(sock)
    for sock in socks:
        if not sock.recv(512).startswith(b"220"):
            raise SystemExit("no 220 greeting")
    print("ready", flush=True)
    sys.stdin.read()
    for sock in socks:
        sock.close()


def idle_memory(work: Path, count: int) -> dict[str, Any]:
    server = Quail(work, "quail-idle")
    server.start()
    try:
        for _ in range(20):  # warm up: first connections allocate once-only state
            wait_greeting(server.port)
        time.sleep(0.5)
        before = rss_kib(server.pid)
        client = subprocess.Popen(
            [sys.executable, __file__, "--hold-idle", str(count), "--port", str(server.port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert client.stdout is not None and client.stdin is not None
            ready = client.stdout.readline().strip()
            if ready != "ready":
                raise BenchError(f"the idle client could not open {count} connections")
            time.sleep(1.0)
            during = rss_kib(server.pid)
            client.stdin.close()
            client.wait(timeout=30)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
        time.sleep(1.0)
        after = rss_kib(server.pid)
    finally:
        server.stop()
    return {
        "connections": count,
        "rss_before_kib": before,
        "rss_with_idle_kib": during,
        "rss_after_close_kib": after,
        "kib_per_connection": (during - before) / count,
    }


# -- the run -----------------------------------------------------------------------------


def raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard == resource.RLIM_INFINITY else max(soft, min(hard, need))
    if want != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < need:
        raise BenchError(f"open files limit below {need} (ulimit -n)")


def report(points: list[Point], memory: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    lines = [
        f"SMTP accept rate, msgs/s (median of {meta['rounds']} round(s); "
        f"smtp-source, one connection per message, loopback, fsync before 250)",
        "",
        f"{'size':>8} {'conns':>5} {'quailmail':>10} {'Postfix':>9} {'ratio':>6}  goal",
    ]
    for point in points:
        quail, postfix = point.rate("quailmail"), point.rate("Postfix")
        ratio = quail / postfix if postfix else 0.0
        goal = GOAL_50_4K if (point.size, point.concurrency) == (4096, 50) else GOAL_OTHER
        verdict = "met" if ratio >= goal else "MISSED"
        label = dict(SIZES)[point.size]
        lines.append(
            f"{label:>8} {point.concurrency:>5} {quail:>10.0f} {postfix:>9.0f} "
            f"{ratio:>5.2f}x  >= {goal:.1f}x {verdict}"
        )
    if memory:
        per = memory["kib_per_connection"]
        verdict = "met" if per < GOAL_KIB_PER_IDLE else "MISSED"
        lines += [
            "",
            f"quailmail RSS with {memory['connections']} idle connections: "
            f"{memory['rss_before_kib']} KiB -> {memory['rss_with_idle_kib']} KiB "
            f"({per:.1f} KiB per connection; goal < {GOAL_KIB_PER_IDLE:.0f} KiB {verdict}); "
            f"{memory['rss_after_close_kib']} KiB after they closed",
        ]
    return lines


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise BenchError("run as root: Postfix's master must start as root")
    if not (shutil.which("smtp-source") or Path("/usr/sbin/smtp-source").exists()):
        raise BenchError("smtp-source is not installed (run: make bench-peers)")
    raise_fd_limit(args.idle * 2 + 200)
    base = Path(args.workdir) if args.workdir else Path("/var/tmp")  # a disk, not a tmpfs
    work = Path(tempfile.mkdtemp(prefix="quail-bench-", dir=base))
    work.chmod(0o755)  # Postfix's daemons (user postfix) walk into it
    quail, postfix = Quail(work), Postfix(work)
    points = [Point(size, conc) for size, _ in SIZES for conc in CONCURRENCY]
    memory: dict[str, Any] = {}
    started = time.monotonic()
    try:
        quail.start()
        postfix.start()
        print(f"quailmail on 127.0.0.1:{quail.port}, Postfix {postfix.version} on "
              f"127.0.0.1:{postfix.port}; work directory {work}", flush=True)  # fmt: skip
        for round_ in range(args.rounds):
            order = points if round_ % 2 == 0 else points[::-1]
            for point in order:
                servers: list[Quail | Postfix] = [quail, postfix]
                if round_ % 2:
                    servers.reverse()
                for server in servers:
                    sample = measure(server, point, args.seconds)
                    point.samples.setdefault(server.name, []).append(sample)
                    print(
                        f"  round {round_ + 1}: {server.name:9} {point.concurrency:>2} conns "
                        f"{point.size:>6} B: {sample.count:>5} msgs in {sample.seconds:5.2f} s "
                        f"= {sample.rate:6.0f}/s",
                        flush=True,
                    )
        quail.stop()
        postfix.stop()
        if args.idle:
            memory = idle_memory(work, args.idle)
    finally:
        quail.stop()
        postfix.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "postfix_version": postfix.version,
        "cpus": os.cpu_count(),
        "rounds": args.rounds,
        "seconds_per_point": args.seconds,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    lines = report(points, memory, meta)
    print()
    print("\n".join(lines))
    result = {
        **meta,
        "points": [
            {
                "size": p.size,
                "concurrency": p.concurrency,
                "quailmail_msgs_per_s": round(p.rate("quailmail"), 1),
                "postfix_msgs_per_s": round(p.rate("Postfix"), 1),
                "ratio": round(p.rate("quailmail") / p.rate("Postfix"), 3),
                "samples": {
                    name: [vars(s) | {"rate": round(s.rate, 1)} for s in samples]
                    for name, samples in p.samples.items()
                },
            }
            for p in points
        ],
        "idle_memory": memory,
        "table": lines,
    }
    out = Path(args.json) if args.json else BENCH / "results" / "smtp_accept.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nJSON: {out}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.5, help="target per point (3.5)")
    parser.add_argument("--rounds", type=int, default=2, help="repeats of the grid (2)")
    parser.add_argument("--idle", type=int, default=1000, help="idle connections (1000; 0: skip)")
    parser.add_argument("--json", help="output (default bench/results/smtp_accept.json)")
    parser.add_argument("--workdir", help="where the queues go (default /var/tmp; not a tmpfs)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--hold-idle", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hold_idle:
        hold_idle(args.port, args.hold_idle)
        return 0

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally that stops servers

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    try:
        return run(args)
    except BenchError as exc:
        print(f"smtp_accept: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
