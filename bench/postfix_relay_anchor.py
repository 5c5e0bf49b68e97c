"""Postfix relaying on loopback, with and without an OpenDKIM signing milter:
the anchor for bench/relay.sh.

    bench/postfix_relay_anchor.sh [--messages 5000] [--concurrency 50]
        [--size 4096] [--rounds 3] [--no-milter] [--json FILE]

smtp-source (`--concurrency` sessions, one message per connection) hands
`--messages` messages to a private Postfix, which relays them all to
smtp-sink, everything on 127.0.0.1:

- Postfix: its own config, queue and data directories under the work
  directory (`postfix -c DIR start`), smtpd on a free port, and the full
  path a relayed message takes: smtpd, cleanup (which fsyncs the queue file
  before smtpd answers 250), qmgr, smtp.  Postfix's defaults everywhere else
  (smtp destination concurrency 5 rising to 20, `in_flow_delay = 1s`,
  connection caching), except what keeps it off the network: no DNS
  (`smtp_dns_support_level = disabled`, no reverse lookups), transport_maps
  sending the sink's domain to `[127.0.0.1]:PORT`, anything else to error.
- smtp-sink: answers 250 to everything and counts (`-c`); it keeps nothing.
- With the milter: OpenDKIM (`opendkim -f`, `Mode s`, a fresh RSA 2048 key,
  relaxed/simple, rsa-sha256) on `inet:PORT@127.0.0.1`, in Postfix's
  `smtpd_milters` with `milter_default_action = tempfail`, so a milter that
  fails shows up as refused messages, never as unsigned ones.

Before each mode's rounds, one probe message goes to a second smtp-sink that
dumps what it gets: it must carry a DKIM-Signature exactly when the milter
is on.  Then a warm-up of 2 x concurrency messages.  Each round: time from
smtp-source's start to its end (accepted msgs/s, every 250 counted by
smtp-source's own counter) and to the sink's count reaching `--messages`
(relayed msgs/s).  The table shows the median of the rounds; the JSON keeps
every sample.  The queue must be empty at the end (nothing deferred).

Runs as root (Postfix's master must; smtp-sink drops to nobody); needs
postfix (smtp-source, smtp-sink) and opendkim (`make peers`).  Every process
it starts is stopped on exit, failure or signal.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from smtp_accept import BenchError, free_port, raise_fd_limit, tail, wait_greeting

BENCH = Path(__file__).resolve().parent
SENDER = "sender@bench.test"  # OpenDKIM signs From: bench.test (smtp-source writes From: -f)
SINK_DOMAIN = "sink.bench.test"
PROBE_DOMAIN = "probe.bench.test"
SELECTOR = "bench"
WAIT = 120.0  # seconds a round may take before it counts as stuck

MAIN_CF = """\
compatibility_level = 3.6
config_directory = {dir}/conf
queue_directory = {dir}/spool
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.bench.test
mydomain = bench.test
myorigin = bench.test
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
# No DNS: no reverse lookup of clients, next hops are literals.
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtp_host_lookup = native
local_recipient_maps =
alias_maps =
alias_database =
relay_domains = {sink_domain}, {probe_domain}
transport_maps = texthash:{dir}/conf/transport
default_transport = error:5.7.1 the benchmark relays only to its sinks
relay_transport = $default_transport
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_milters = {milters}
milter_default_action = tempfail
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
"""

# No chroot (it would need /etc copied into the spool); no local delivery,
# pickup or TLS cache: nothing here uses them.
MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
cleanup   unix  n  -  n  -    0  cleanup
qmgr      unix  n  -  n  300  1  qmgr
rewrite   unix  -  -  n  -    -  trivial-rewrite
bounce    unix  -  -  n  -    0  bounce
defer     unix  -  -  n  -    0  bounce
trace     unix  -  -  n  -    0  bounce
verify    unix  -  -  n  -    1  verify
proxymap  unix  -  -  n  -    -  proxymap
smtp      unix  -  -  n  -    -  smtp
relay     unix  -  -  n  -    -  smtp
error     unix  -  -  n  -    -  error
retry     unix  -  -  n  -    -  error
anvil     unix  -  -  n  -    1  anvil
scache    unix  -  -  n  -    1  scache
postlog   unix-dgram n - n - 1 postlogd
"""

# RequireSafeKeys off: the work directory is in /var/tmp, which others may
# write (OpenDKIM then refuses even to read its configuration); the key is a
# throw-away made for this run.
OPENDKIM_CONF = """\
Syslog no
RequireSafeKeys no
Mode s
Domain bench.test
Selector {selector}
KeyFile {key}
Socket inet:{port}@127.0.0.1
Canonicalization relaxed/simple
SignatureAlgorithm rsa-sha256
InternalHosts 127.0.0.1
UserID opendkim
PidFile {dir}/opendkim.pid
"""


def program(name: str) -> str:
    path = shutil.which(name) or f"/usr/sbin/{name}"
    if not Path(path).exists():
        raise BenchError(f"{name} is not installed (run: make peers)")
    return path


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- the sinks ---------------------------------------------------------------------


class Sink:
    """smtp-sink counting (`-c`, to a file), or dumping each message to a
    directory (the probe)."""

    def __init__(self, work: Path, name: str, *, dump: bool = False) -> None:
        self.port = free_port()
        self.counts = work / f"{name}.counts"
        self.dump = work / f"{name}-dump" if dump else None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [program("smtp-sink"), "-u", "nobody", "-h", "sink.bench.test"]
        if self.dump is not None:
            self.dump.mkdir()
            shutil.chown(self.dump, "nobody")
            argv += ["-d", f"{self.dump}/%H%M%S."]
        else:
            argv.append("-c")
        # The last argument is the listen backlog: room for every sender.
        argv += [f"127.0.0.1:{self.port}", "1024"]
        with self.counts.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        wait_greeting(self.port)

    def received(self) -> int:
        """Messages received so far (`mesg=` of the last counter line)."""
        with self.counts.open("rb") as f:
            f.seek(max(0, self.counts.stat().st_size - 200))
            found = re.findall(rb"mesg=(\d+)", f.read())
        return int(found[-1]) if found else 0

    def wait_received(self, count: int, deadline: float) -> float:
        """Wait for `count` messages; the moment the count was seen."""
        while True:
            if self.received() >= count:
                return time.perf_counter()
            if time.monotonic() > deadline:
                raise BenchError(f"smtp-sink got {self.received()} of {count} messages")
            time.sleep(0.002)

    def dumped(self, deadline: float) -> bytes:
        assert self.dump is not None
        while True:
            files = sorted(self.dump.iterdir())
            if files and files[0].stat().st_size:
                time.sleep(0.1)  # smtp-sink writes the file as the message arrives
                return files[0].read_bytes()
            if time.monotonic() > deadline:
                raise BenchError("the probe message never reached its sink")
            time.sleep(0.01)

    def stop(self) -> None:
        stop_process(self.proc)


# -- OpenDKIM ----------------------------------------------------------------------


class OpenDkim:
    def __init__(self, work: Path) -> None:
        self.dir = work / "opendkim"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.version = ""

    def start(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.dir.mkdir()
        key = self.dir / f"{SELECTOR}.private"
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key.write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        key.chmod(0o600)
        shutil.chown(key, "opendkim")
        conf = self.dir / "opendkim.conf"
        conf.write_text(
            OPENDKIM_CONF.format(selector=SELECTOR, key=key, port=self.port, dir=self.dir)
        )
        binary = program("opendkim")
        log = self.dir / "opendkim.log"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [binary, "-f", "-x", str(conf)], stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        deadline = time.monotonic() + 15
        while not self._listening():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"opendkim did not start:\n{tail(log)}")
            time.sleep(0.05)
        got = subprocess.run([binary, "-V"], capture_output=True, text=True, check=False)
        self.version = got.stdout.split()[3].lstrip("v") if got.stdout.count(" ") >= 3 else ""

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.proc)


# -- Postfix -----------------------------------------------------------------------


class Postfix:
    def __init__(self, work: Path, name: str) -> None:
        self.dir = work / name
        self.port = free_port()
        self.started = False
        self.version = ""

    def postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [program("postfix"), "-c", str(self.dir / "conf"), *args],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    def start(self, sink: Sink, probe: Sink, milter: OpenDkim | None) -> None:
        for sub in ("conf", "spool", "data"):
            (self.dir / sub).mkdir(parents=True)
        shutil.chown(self.dir / "data", "postfix")
        milters = f"inet:127.0.0.1:{milter.port}" if milter else ""
        (self.dir / "conf" / "main.cf").write_text(
            MAIN_CF.format(
                dir=self.dir, sink_domain=SINK_DOMAIN, probe_domain=PROBE_DOMAIN, milters=milters
            )
        )
        (self.dir / "conf" / "master.cf").write_text(MASTER_CF.format(port=self.port))
        (self.dir / "conf" / "transport").write_text(
            f"{SINK_DOMAIN} smtp:[127.0.0.1]:{sink.port}\n"
            f"{PROBE_DOMAIN} smtp:[127.0.0.1]:{probe.port}\n"
        )
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
        """Messages still in Postfix's queue (any of its queues)."""
        total = 0
        for name in ("incoming", "active", "deferred", "hold", "maildrop"):
            total += sum(len(files) for _, _, files in os.walk(self.dir / "spool" / name))
        return total

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        pid_file = self.dir / "spool" / "pid" / "master.pid"
        self.postfix("stop")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # `postfix stop` returns before master exits
            try:
                os.kill(int(pid_file.read_text().split()[0]), 0)
            except (OSError, ValueError, IndexError):
                return
            time.sleep(0.05)
        with contextlib.suppress(OSError, ValueError, IndexError):
            os.killpg(int(pid_file.read_text().split()[0]), signal.SIGKILL)


# -- a mode ------------------------------------------------------------------------


@dataclass
class Sample:
    messages: int
    accept_seconds: float
    relay_seconds: float

    @property
    def accepted_rate(self) -> float:
        return self.messages / self.accept_seconds

    @property
    def relayed_rate(self) -> float:
        return self.messages / self.relay_seconds


@dataclass
class Mode:
    name: str
    milter: bool
    samples: list[Sample] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(s, attribute) for s in self.samples)


def smtp_source(port: int, concurrency: int, count: int, size: int, domain: str) -> int:
    """Send `count` messages; how many got their 250 (smtp-source's counter)."""
    argv = [
        program("smtp-source"), "-s", str(concurrency), "-m", str(count), "-l", str(size),
        "-c", "-M", "client.bench.test", "-f", SENDER, "-t", f"rcpt@{domain}",
        f"127.0.0.1:{port}",
    ]  # fmt: skip
    try:
        done = subprocess.run(argv, capture_output=True, timeout=WAIT, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(
            f"smtp-source -s {concurrency} -m {count} took over {WAIT:.0f} s"
        ) from None
    counters = re.findall(rb"\d+", done.stdout)
    acknowledged = int(counters[-1]) if counters else 0
    if done.returncode != 0 or acknowledged != count:
        said = done.stderr.decode(errors="replace").strip()
        raise BenchError(f"smtp-source: {acknowledged} of {count} messages accepted: {said}")
    return acknowledged


def run_mode(work: Path, mode: Mode, args: argparse.Namespace) -> dict[str, str]:
    sink, probe = Sink(work, f"sink-{mode.name}"), Sink(work, f"probe-{mode.name}", dump=True)
    milter = OpenDkim(work) if mode.milter else None
    postfix = Postfix(work, f"postfix-{mode.name}")
    try:
        sink.start()
        probe.start()
        if milter is not None:
            milter.start()
        postfix.start(sink, probe, milter)
        smtp_source(postfix.port, 1, 1, args.size, PROBE_DOMAIN)
        dumped = probe.dumped(time.monotonic() + 30)
        signed = b"\nDKIM-Signature:" in dumped.replace(b"\r\n", b"\n")
        if signed != mode.milter:
            raise BenchError(
                f"{mode.name}: the probe message {'lacks' if mode.milter else 'has'} "
                f"a DKIM-Signature:\n{dumped[:1500].decode(errors='replace')}"
            )
        warm = 2 * args.concurrency
        smtp_source(postfix.port, args.concurrency, warm, args.size, SINK_DOMAIN)
        sink.wait_received(warm, time.monotonic() + WAIT)
        for round_ in range(args.rounds):
            before = sink.received()
            start = time.perf_counter()
            smtp_source(postfix.port, args.concurrency, args.messages, args.size, SINK_DOMAIN)
            accepted = time.perf_counter()
            relayed = sink.wait_received(before + args.messages, time.monotonic() + WAIT)
            sample = Sample(args.messages, accepted - start, relayed - start)
            mode.samples.append(sample)
            print(
                f"  {mode.name:15} round {round_ + 1}: {args.messages} msgs accepted in "
                f"{sample.accept_seconds:5.2f} s = {sample.accepted_rate:6.0f}/s, relayed in "
                f"{sample.relay_seconds:5.2f} s = {sample.relayed_rate:6.0f}/s",
                flush=True,
            )
        deadline = time.monotonic() + 10
        while postfix.queued() and time.monotonic() < deadline:
            time.sleep(0.05)
        if postfix.queued():
            raise BenchError(f"{mode.name}: {postfix.queued()} messages left in Postfix's queue")
        return {"postfix": postfix.version, "opendkim": milter.version if milter else ""}
    finally:
        postfix.stop()
        if milter is not None:
            milter.stop()
        probe.stop()
        sink.stop()


def report(modes: list[Mode], args: argparse.Namespace, versions: dict[str, str]) -> list[str]:
    lines = [
        f"Postfix {versions.get('postfix', '?')} relaying on loopback, msgs/s "
        f"(median of {args.rounds} round(s); {args.messages} messages of {args.size} B, "
        f"smtp-source at {args.concurrency} connections -> Postfix -> smtp-sink)",
        "",
        f"{'mode':<26} {'accepted/s':>10} {'relayed/s':>10}",
    ]
    for mode in modes:
        label = mode.name
        if mode.milter and versions.get("opendkim"):
            label += f" {versions['opendkim']}"
        lines.append(
            f"{label:<26} {mode.median('accepted_rate'):>10.0f} "
            f"{mode.median('relayed_rate'):>10.0f}"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise BenchError("run as root: Postfix's master must start as root")
    for name in ("postfix", "smtp-source", "smtp-sink", *(() if args.no_milter else ("opendkim",))):
        program(name)
    raise_fd_limit(4 * args.concurrency + 200)
    base = Path(args.workdir) if args.workdir else Path("/var/tmp")  # a disk, not a tmpfs
    work = Path(tempfile.mkdtemp(prefix="quail-relay-anchor-", dir=base))
    work.chmod(0o755)  # Postfix's daemons, OpenDKIM and smtp-sink walk into it
    modes = [Mode("postfix", milter=False)]
    if not args.no_milter:
        modes.append(Mode("postfix+opendkim", milter=True))
    versions: dict[str, str] = {}
    started = time.monotonic()
    print(f"work directory {work}", flush=True)
    try:
        for mode in modes:
            for key, value in run_mode(work, mode, args).items():
                versions[key] = versions.get(key) or value
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    lines = report(modes, args, versions)
    print()
    print("\n".join(lines))
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "postfix_version": versions.get("postfix", ""),
        "opendkim_version": versions.get("opendkim", ""),
        "cpus": os.cpu_count(),
        "messages": args.messages,
        "size": args.size,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "wall_seconds": round(time.monotonic() - started, 1),
        "modes": {
            mode.name: {
                "accepted_msgs_per_s": round(mode.median("accepted_rate"), 1),
                "relayed_msgs_per_s": round(mode.median("relayed_rate"), 1),
                "samples": [
                    vars(s)
                    | {
                        "accepted_rate": round(s.accepted_rate, 1),
                        "relayed_rate": round(s.relayed_rate, 1),
                    }
                    for s in mode.samples
                ],
            }
            for mode in modes
        },
        "table": lines,
    }
    out = Path(args.json) if args.json else BENCH / "results" / "postfix_relay_anchor.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nJSON: {out}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000, help="per round (5000)")
    parser.add_argument("--concurrency", type=int, default=50, help="smtp-source sessions (50)")
    parser.add_argument("--size", type=int, default=4096, help="message body bytes (4096)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per mode (3)")
    parser.add_argument("--no-milter", action="store_true", help="skip the OpenDKIM mode")
    parser.add_argument("--json", help="output (default bench/results/postfix_relay_anchor.json)")
    parser.add_argument("--workdir", help="where the queues go (default /var/tmp; not a tmpfs)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally that stops everything

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    try:
        return run(args)
    except BenchError as exc:
        print(f"postfix_relay_anchor: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
