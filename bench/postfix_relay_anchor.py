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
is on (a=rsa-sha256, c=relaxed/simple, d=bench.test, and quailmail's
verifier passes it, the key published by a DNS server of its own on
loopback).  Then a warm-up of 2 x concurrency messages.  Each round: time
from smtp-source's start to its end (accepted msgs/s, every 250 counted by
smtp-source's own counter) and to the sink's count reaching `--messages`
(relayed msgs/s).  The table shows the median of the rounds; the JSON keeps
every sample.  The queue must be empty at the end (nothing deferred) and the
sink must have counted exactly what was sent.

bench/relay.py runs the same modes beside quailmail's with the pieces below
(`PostfixRig`, `check_probe`, `warm_up`, `measure`, `check_done`).

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from smtp_accept import (
    BenchError,
    cpu_seconds,
    free_port,
    master_pid,
    raise_fd_limit,
    stop_postfix,
    tail,
    wait_greeting,
)
from smtp_accept import smtp_source as accept_source

BENCH = Path(__file__).resolve().parent
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
relay_domains = {relay_domains}
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


def wait_count(
    received: Callable[[], int], count: int, deadline: float, poll: float, what: str
) -> float:
    """Poll `received()` until it reaches `count`; the moment it was seen."""
    while True:
        if received() >= count:
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise BenchError(f"{what} got {received()} of {count} messages")
        time.sleep(poll)


class Sink:
    """smtp-sink counting (`-c`, to a file), or dumping each message to a
    directory (the probe)."""

    arrived = "relayed"

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
        return wait_count(self.received, count, deadline, 0.002, "smtp-sink")

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

    def clear(self) -> None:
        pass  # smtp-sink keeps nothing

    def stop(self) -> None:
        stop_process(self.proc)


# -- OpenDKIM ----------------------------------------------------------------------


class OpenDkim:
    def __init__(self, work: Path) -> None:
        self.dir = work / "opendkim"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.version = ""
        self.key_pem = b""

    def start(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.dir.mkdir()
        key = self.dir / f"{SELECTOR}.private"
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        key.write_bytes(self.key_pem)
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
        self.master_pid = 0

    def postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [program("postfix"), "-c", str(self.dir / "conf"), *args],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    def start(
        self,
        routes: Mapping[str, int],
        milter: OpenDkim | None = None,
        *,
        main_cf: str = "",
        master_cf: str = "",
    ) -> None:
        """Relay each domain of `routes` to its port on 127.0.0.1; `main_cf`
        and `master_cf` are added to the files (bench/local_delivery.py's
        virtual(8))."""
        for sub in ("conf", "spool", "data"):
            (self.dir / sub).mkdir(parents=True)
        shutil.chown(self.dir / "data", "postfix")
        milters = f"inet:127.0.0.1:{milter.port}" if milter else ""
        (self.dir / "conf" / "main.cf").write_text(
            MAIN_CF.format(dir=self.dir, relay_domains=", ".join(routes), milters=milters) + main_cf
        )
        (self.dir / "conf" / "master.cf").write_text(MASTER_CF.format(port=self.port) + master_cf)
        (self.dir / "conf" / "transport").write_text(
            "".join(f"{domain} smtp:[127.0.0.1]:{port}\n" for domain, port in routes.items())
        )
        done = self.postfix("start")
        self.started = True  # even a failed start may have left a master behind
        if done.returncode != 0:
            raise BenchError(f"postfix start: {(done.stderr or done.stdout).strip()}")
        try:
            wait_greeting(self.port)
        except BenchError as exc:
            raise BenchError(f"{exc}; maillog:\n{tail(self.dir / 'maillog')}") from None
        self.master_pid = master_pid(self.dir)
        got = subprocess.run(
            [program("postconf"), "-c", str(self.dir / "conf"), "-h", "mail_version"],
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
        stop_postfix(self.postfix, self.dir)


# -- a mode ------------------------------------------------------------------------


@dataclass
class Sample:
    messages: int
    accept_seconds: float
    relay_seconds: float
    cpu_seconds: float  # the server's processes, from the start to the last arrival

    @property
    def cpu_ms(self) -> float:
        """CPU milliseconds a message."""
        return 1000 * self.cpu_seconds / self.messages

    @property
    def accepted_rate(self) -> float:
        return self.messages / self.accept_seconds

    @property
    def relayed_rate(self) -> float:
        return self.messages / self.relay_seconds


@dataclass
class Mode:
    name: str
    signed: bool  # its probe must carry a DKIM-Signature
    samples: list[Sample] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return float(statistics.median(getattr(s, attribute) for s in self.samples))


def smtp_source(port: int, concurrency: int, count: int, size: int, to: str) -> int:
    """Send `count` messages to `to`; all must get their 250."""
    _, acknowledged = accept_source(port, concurrency, count, size, to, timeout=WAIT)
    if acknowledged != count:
        raise BenchError(f"smtp-source: {acknowledged} of {count} messages accepted")
    return acknowledged


class Counter(Protocol):
    """Where the messages arrive: an smtp-sink, a Maildir."""

    arrived: str  # the word for it in the progress lines

    def received(self) -> int: ...

    def wait_received(self, count: int, deadline: float) -> float: ...

    def clear(self) -> None: ...


class Rig(Protocol):
    """One mode's processes: the server under test and what it delivers to."""

    @property
    def mode(self) -> Mode: ...

    @property
    def sink(self) -> Counter: ...

    @property
    def recipient(self) -> str: ...

    @property
    def port(self) -> int: ...

    def start(self) -> None: ...

    def check(self, args: argparse.Namespace) -> None: ...

    def pids(self) -> list[int]:
        """The server's processes: a round counts the CPU of each and its descendants."""
        ...

    def queued(self) -> int: ...

    def versions(self) -> dict[str, str]: ...

    def stop(self) -> None: ...


class PostfixRig:
    """Postfix relaying to a counting sink and a probe sink, OpenDKIM in
    front when the mode signs."""

    def __init__(self, work: Path, mode: Mode) -> None:
        self.mode = mode
        self.sink = Sink(work, f"sink-{mode.name}")
        self.probe = Sink(work, f"probe-{mode.name}", dump=True)
        self.recipient = f"rcpt@{SINK_DOMAIN}"
        self.milter = OpenDkim(work) if mode.signed else None
        self.postfix = Postfix(work, f"postfix-{mode.name}")

    @property
    def port(self) -> int:
        return self.postfix.port

    def start(self) -> None:
        self.sink.start()
        self.probe.start()
        if self.milter is not None:
            self.milter.start()
        self.postfix.start(
            {SINK_DOMAIN: self.sink.port, PROBE_DOMAIN: self.probe.port}, self.milter
        )

    def check(self, args: argparse.Namespace) -> None:
        check_probe(self, self.probe, self.milter.key_pem if self.milter else b"", args.size)

    def pids(self) -> list[int]:
        milter = self.milter.proc if self.milter else None
        return [self.postfix.master_pid, *([milter.pid] if milter else [])]

    def queued(self) -> int:
        return self.postfix.queued()

    def versions(self) -> dict[str, str]:
        return {
            "postfix": self.postfix.version,
            "opendkim": self.milter.version if self.milter else "",
        }

    def stop(self) -> None:
        self.postfix.stop()
        if self.milter is not None:
            self.milter.stop()
        self.probe.stop()
        self.sink.stop()


def verify_probe(message: bytes, key_pem: bytes) -> str:
    """quailmail's DKIM verdict on `message`, with the key of PEM `key_pem`
    published as SELECTOR._domainkey.bench.test by a DNS server of our own on
    loopback: "pass", or why not."""
    import asyncio

    from quailmail.auth.dkim.verify import verify_dkim
    from quailmail.auth.keys import parse_private_key, record_value
    from quailmail.auth.message import parse_message
    from quailmail.dns.resolver import DnsResolver
    from quailmail.dns.zone import Zone
    from quailmail.dns.zoneserver import ZoneServer

    zone = Zone()
    zone.add_txt(f"{SELECTOR}._domainkey.bench.test", record_value(parse_private_key(key_pem)))
    with ZoneServer(zone) as server:
        resolver = DnsResolver(server.addresses, timeout=2.0)
        result = asyncio.run(verify_dkim(parse_message(message), resolver))
    verdicts = [f"{s.result.value} ({s.reason})" for s in result.signatures]
    return (
        "pass" if [s.result.value for s in result.signatures] == ["pass"] else "; ".join(verdicts)
    )


def check_probe(rig: Rig, probe: Sink, key_pem: bytes, size: int) -> None:
    """One message to the dumping sink: it carries one DKIM-Signature exactly
    when the mode signs, made as OpenDKIM is set up here (d=bench.test,
    rsa-sha256, relaxed/simple), and quailmail's verifier passes it."""
    smtp_source(rig.port, 1, 1, size, f"rcpt@{PROBE_DOMAIN}")
    dumped = probe.dumped(time.monotonic() + 30).replace(b"\r\n", b"\n")
    fields = re.findall(rb"^DKIM-Signature:.*(?:\n[ \t].*)*", dumped, re.MULTILINE | re.IGNORECASE)
    problem = ""
    if len(fields) != (1 if rig.mode.signed else 0):
        problem = f"{len(fields)} DKIM-Signature fields"
    elif fields:
        tags = dict(
            (name.strip(), value.strip())
            for name, _, value in (
                tag.partition("=")
                for tag in re.sub(rb"\s+", b"", fields[0][15:]).decode().split(";")
            )
        )
        want = {"a": "rsa-sha256", "c": "relaxed/simple", "d": "bench.test", "s": SELECTOR}
        if any(tags.get(k) != v for k, v in want.items()):
            problem = f"a signature other than {want}"
        elif (verdict := verify_probe(dumped.replace(b"\n", b"\r\n"), key_pem)) != "pass":
            problem = f"a signature that does not verify: {verdict}"
    if problem:
        raise BenchError(
            f"{rig.mode.name}: the probe message has {problem}:\n"
            f"{dumped[:1500].decode(errors='replace')}"
        )


def warm_up(rig: Rig, args: argparse.Namespace) -> None:
    """2 x concurrency messages, waited for."""
    before, warm = rig.sink.received(), 2 * args.concurrency
    smtp_source(rig.port, args.concurrency, warm, args.size, rig.recipient)
    rig.sink.wait_received(before + warm, time.monotonic() + WAIT)


def measure(rig: Rig, args: argparse.Namespace, round_: int) -> Sample:
    """One round: `--messages` sent; the moments smtp-source ends and the last arrives."""
    before = rig.sink.received()
    cpu = sum(cpu_seconds(pid) for pid in rig.pids())
    start = time.perf_counter()
    smtp_source(rig.port, args.concurrency, args.messages, args.size, rig.recipient)
    accepted = time.perf_counter()
    arrived = rig.sink.wait_received(before + args.messages, time.monotonic() + WAIT)
    cpu = sum(cpu_seconds(pid) for pid in rig.pids()) - cpu
    sample = Sample(args.messages, accepted - start, arrived - start, cpu)
    rig.mode.samples.append(sample)
    print(
        f"  {rig.mode.name:16} round {round_ + 1}: {args.messages} msgs accepted in "
        f"{sample.accept_seconds:5.2f} s = {sample.accepted_rate:6.0f}/s, {rig.sink.arrived} in "
        f"{sample.relay_seconds:5.2f} s = {sample.relayed_rate:6.0f}/s, "
        f"CPU {sample.cpu_ms:.2f} ms/msg",
        flush=True,
    )
    return sample


def check_done(rig: Rig, args: argparse.Namespace, timeout: float = 10.0) -> None:
    """The server's queue empties (nothing deferred) within `timeout`, and
    exactly what was sent arrived: the warm-up and every round so far."""
    deadline = time.monotonic() + timeout
    while rig.queued() and time.monotonic() < deadline:
        time.sleep(0.05)
    if left := rig.queued():
        raise BenchError(f"{rig.mode.name}: {left} messages left in the queue")
    sent = 2 * args.concurrency + sum(s.messages for s in rig.mode.samples)
    if (got := rig.sink.received()) != sent:
        raise BenchError(f"{rig.mode.name}: {sent} messages sent, {got} {rig.sink.arrived}")


def run_rigs(rigs: Sequence[Rig], args: argparse.Namespace) -> dict[str, str]:
    """Start every rig, check its probe and warm it up; then the rounds, each
    rig once a round (every other round in reverse order), its queue emptied
    and its count checked before the next one starts.  Every rig is stopped
    at the end, on failure too.  The versions of the servers, by name."""
    versions: dict[str, str] = {}
    try:
        for rig in rigs:
            rig.start()
            rig.check(args)
            warm_up(rig, args)
        for round_ in range(args.rounds):
            for rig in rigs if round_ % 2 == 0 else rigs[::-1]:
                measure(rig, args, round_)
                check_done(rig, args)
                rig.sink.clear()
        for rig in rigs:
            versions |= {name: value for name, value in rig.versions().items() if value}
    finally:
        for rig in rigs:
            rig.stop()
    return versions


@contextlib.contextmanager
def work_directory(args: argparse.Namespace, prefix: str) -> Iterator[Path]:
    """A fresh directory on a disk (not a tmpfs: the queues' fsyncs must be
    real), removed at the end unless `--keep`."""
    if os.geteuid() != 0:
        raise BenchError("run as root: Postfix's master must start as root")
    raise_fd_limit(4 * args.concurrency + 200)
    base = Path(args.workdir) if args.workdir else Path("/var/tmp")
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    work.chmod(0o755)  # Postfix's daemons, OpenDKIM and smtp-sink walk into it
    print(f"work directory {work}; load average {load_average()}", flush=True)
    try:
        yield work
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def write_results(
    args: argparse.Namespace,
    name: str,
    modes: Sequence[Mode],
    lines: list[str],
    *,
    arrived: str = "relayed",
    **meta: Any,
) -> None:
    """Print the table; write it, every sample and `meta` as JSON (`--json`,
    else bench/results/NAME.json).  `arrived` names the second rate."""
    print()
    print("\n".join(lines))
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        **meta,
        "cpus": os.cpu_count(),
        "load_average_at_end": load_average(),
        "messages": args.messages,
        "size": args.size,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "modes": {
            mode.name: {
                "accepted_msgs_per_s": round(mode.median("accepted_rate"), 1),
                f"{arrived}_msgs_per_s": round(mode.median("relayed_rate"), 1),
                "cpu_ms_per_msg": round(mode.median("cpu_ms"), 3),
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
    out = Path(args.json) if args.json else BENCH / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nJSON: {out}")


def arguments(doc: str, name: str) -> argparse.ArgumentParser:
    """The options every relay benchmark takes."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--messages", type=int, default=5000, help="per round (5000)")
    parser.add_argument("--concurrency", type=int, default=50, help="smtp-source sessions (50)")
    parser.add_argument("--size", type=int, default=4096, help="message body bytes (4096)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per mode (3)")
    parser.add_argument("--json", help=f"output (default bench/results/{name}.json)")
    parser.add_argument("--workdir", help="where the queues go (default /var/tmp; not a tmpfs)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser


def bench_main(name: str, parser: argparse.ArgumentParser, run: Callable[[Any], int]) -> int:
    args = parser.parse_args()

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally that stops everything

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    try:
        return run(args)
    except BenchError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1


# -- this benchmark ------------------------------------------------------------------


def table_row(label: str, mode: Mode) -> str:
    """`label`, then the medians: accepted/s, arrived/s, CPU ms a message."""
    return (
        f"{label:<26} {mode.median('accepted_rate'):>10.0f} "
        f"{mode.median('relayed_rate'):>10.0f} {mode.median('cpu_ms'):>10.2f}"
    )


def report(modes: list[Mode], args: argparse.Namespace, versions: dict[str, str]) -> list[str]:
    lines = [
        f"Postfix {versions.get('postfix', '?')} relaying on loopback, msgs/s "
        f"(median of {args.rounds} round(s); {args.messages} messages of {args.size} B, "
        f"smtp-source at {args.concurrency} connections -> Postfix -> smtp-sink)",
        "",
        f"{'mode':<26} {'accepted/s':>10} {'relayed/s':>10} {'CPU ms/msg':>10}",
    ]
    for mode in modes:
        label = mode.name
        if mode.signed and versions.get("opendkim"):
            label += f" {versions['opendkim']}"
        lines.append(table_row(label, mode))
    return lines


def run(args: argparse.Namespace) -> int:
    for name in ("postfix", "smtp-source", "smtp-sink", *(() if args.no_milter else ("opendkim",))):
        program(name)
    modes = [Mode("postfix", signed=False)]
    if not args.no_milter:
        modes.append(Mode("postfix+opendkim", signed=True))
    started, load = time.monotonic(), load_average()
    with work_directory(args, "quail-relay-anchor-") as work:
        versions = run_rigs([PostfixRig(work, mode) for mode in modes], args)
    write_results(
        args,
        "postfix_relay_anchor",
        modes,
        report(modes, args, versions),
        postfix_version=versions.get("postfix", ""),
        opendkim_version=versions.get("opendkim", ""),
        wall_seconds=round(time.monotonic() - started, 1),
        load_average_at_start=load,
    )
    return 0


def main() -> int:
    parser = arguments(__doc__, "postfix_relay_anchor")
    parser.add_argument("--no-milter", action="store_true", help="skip the OpenDKIM mode")
    return bench_main("postfix_relay_anchor", parser, run)


if __name__ == "__main__":
    sys.exit(main())
