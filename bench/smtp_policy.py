"""SMTP accept rate with the inbound policy on: quailmail with DNSBL,
greylisting (already passed), SPF, DKIM verification, DMARC and
Authentication-Results, beside quailmail with no policy and Postfix with an
OpenDKIM verifying milter, on the same load.

    bench/smtp_policy.sh [--messages 3000] [--concurrency 50] [--size 4096]
        [--rounds 3] [--json FILE] [--workdir DIR] [--keep]

The load: Postfix's `smtp-source -F FILE` (`--concurrency` sessions, one
message per connection: HELO, MAIL, RCPT, DATA, QUIT) sending one
pre-formatted message of about `--size` bytes, From: sender@bench.test,
signed once by quailmail's signer (`sign_dkim`, rsa-sha256, relaxed/relaxed,
a fresh RSA-2048 key, d=bench.test s=bench).

DNS: a `ZoneServer` (quailmail's authoritative server on loopback) holds the
test data: bench.test's SPF record (`v=spf1 ip4:127.0.0.0/8 -all`), the DKIM
key record bench._domainkey.bench.test, `_dmarc.bench.test` (p=none), and
an empty blocklist zone dnsbl.bench.test (every lookup NXDOMAIN, as for a
client listed nowhere); any other name is NXDOMAIN too, so nothing leaves
the machine.  In front of it Debian's `unbound` as the caching resolver
(its own configuration: a stub zone "." on the ZoneServer, the iterator
module only so no DNSSEC validation, on 127.0.0.1 and a free port).  Both
servers ask unbound:

- quailmail: `control/dnsservers` = unbound's 127.0.0.1:PORT.
- OpenDKIM: NOT through unbound.  Its resolver is libunbound, which cannot
  be pointed at a resolver on loopback port other than 53 safely: with
  `ResolverConfiguration` (an unbound configuration forwarding "." to
  127.0.0.1@PORT, `do-not-query-localhost: no`) the probe passes, but under
  50 concurrent sessions OpenDKIM 2.11 re-reads the file from several
  threads at once and libunbound's (non-reentrant) parser fails ("fatal
  flex scanner internal error", "unknown keyword 'rver'"), so messages get
  tempfailed; `Nameservers 127.0.0.1@PORT` is refused by libunbound's
  do-not-query-localhost (key not found).  So OpenDKIM reads the key record
  from `TestDNSData` (a file data set: the same TXT text as in the zone).
  That spares OpenDKIM its DNS round trips: it favours Postfix.

Modes, all on loopback, queueing to disk with an fsync before each 250:

- `quailmail`: `quail init` (loopback rules `RELAYCLIENT="",RBLSMTPD=""`:
  no DNSBL, SPF, DKIM, DMARC, greylisting), `quail serve --receive-only`.
- `quailmail+policy`: the same server, rules recompiled to
  `127.0.0.1:allow,DKVERIFY="DEGIJKfh,CGHIJMQRkl",JGREYLIST_HOLDTIME="120"`
  (not a relay client, so every check runs; the recipient
  postmaster@bench.test is local), `control/rbls` = `-r dnsbl.bench.test`,
  `control/spfbehavior` = 3, `control/greylistdir` with 127.0.0.0/24's
  entry aged an hour (past the hold time).  Verification refuses nothing:
  the signature is good.
- `quailmail outside` (for information, not a goal): rules
  `127.0.0.1:allow,RBLSMTPD="",JGREYLIST="",SPFBEHAVIOR="0"`: an outside
  client with no DNSBL, greylisting, SPF enforcement or DKVERIFY.  DMARC
  is reported for all outside mail, so its own DKIM and SPF checks run.
- `Postfix+OpenDKIM`: bench/smtp_accept.py's Postfix (hold queue, no
  delivery) with `smtpd_milters` = OpenDKIM (bench/postfix_relay_anchor.py's
  runner) in `Mode v`, `milter_default_action = tempfail`.

Before measuring, one probe message per policy mode must come out of the
queue with `Authentication-Results:` saying `dkim=pass` (and for quailmail
`spf=pass`).  Then a warm-up of 2 x concurrency messages; rounds alternate
the modes (the order reversed every other round).  Each round: accepted
msgs/s = messages acknowledged (smtp-source's own counter; it stops at any
non-2xx) / smtp-source's run time, checked against the queue; and the CPU
the server's processes used a message (/proc: quailmail's processes, or
Postfix's master with its daemons plus OpenDKIM).  The table shows
medians; the JSON keeps every sample and the load average at the start and
end.

Goals (issue): quailmail+policy >= 2x Postfix+OpenDKIM, and >= 0.75 of
quailmail with no policy (the `quailmail` mode).

Runs as root (Postfix's master must); needs postfix, opendkim and unbound
(`make peers`).  Every process it starts is stopped on exit, failure or
signal.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import postfix_relay_anchor as anchor
from postfix_relay_anchor import (
    OpenDkim,
    arguments,
    bench_main,
    load_average,
    program,
    stop_process,
    work_directory,
)
from quailmail.auth import keys
from quailmail.auth.dkim import sign_dkim
from quailmail.auth.message import parse_message
from quailmail.dns.zone import Zone
from quailmail.dns.zoneserver import ZoneServer
from smtp_accept import BenchError, Postfix, Quail, cpu_seconds, free_port, master_pid, tail

NAME = "smtp_policy"
DOMAIN = "bench.test"
SENDER = f"sender@{DOMAIN}"
RECIPIENT = f"postmaster@{DOMAIN}"
SELECTOR = "bench"
DNSBL = f"dnsbl.{DOMAIN}"
GOAL_VS_POSTFIX = 2.0
GOAL_VS_PLAIN = 0.75
RUN_TIMEOUT = 120.0
POLICY_RULES = '127.0.0.1:allow,DKVERIFY="DEGIJKfh,CGHIJMQRkl",JGREYLIST_HOLDTIME="120"\n:allow\n'
# For information: an outside client with every knob off.  DMARC is still
# reported (always, for outside mail), so its DKIM and SPF checks still run.
OUTSIDE_RULES = '127.0.0.1:allow,RBLSMTPD="",JGREYLIST="",SPFBEHAVIOR="0"\n:allow\n'

UNBOUND_CONF = """\
server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    chroot: ""
    username: ""
    do-daemonize: no
    use-syslog: no
    logfile: "{dir}/unbound.log"
    pidfile: "{dir}/unbound.pid"
    directory: "{dir}"
    module-config: "iterator"
    domain-insecure: "."
    # unbound answers the RFC 6761 names (test., invalid., ...) itself by
    # default: let test. go to the stub like any other name.
    local-zone: "test." nodefault
    num-threads: 1
stub-zone:
    name: "."
    stub-addr: 127.0.0.1@{zone_port}
remote-control:
    control-enable: no
"""

# postfix_relay_anchor.OpenDkim formats its module's OPENDKIM_CONF with
# selector, key, port and dir: this one verifies instead of signing.
# InternalHosts names no loopback address, so the client is external.
OPENDKIM_VERIFY_CONF = """\
Syslog no
RequireSafeKeys no
Mode v
Socket inet:{port}@127.0.0.1
InternalHosts 192.0.2.1
AuthservID opendkim.bench.test
TestDNSData file:RESOLVER
UserID opendkim
PidFile {dir}/opendkim.pid
"""


# -- DNS -----------------------------------------------------------------------------


class Dns:
    """The ZoneServer with the test data and unbound in front of it."""

    def __init__(self, work: Path, key: keys.PrivateKey) -> None:
        self.dir = work / "unbound"
        self.port = free_port()
        zone = Zone()
        zone.add_txt(DOMAIN, "v=spf1 ip4:127.0.0.0/8 -all")
        self.key_record = keys.record_value(key)
        zone.add_txt(f"{SELECTOR}._domainkey.{DOMAIN}", keys.split_strings(self.key_record))
        zone.add_txt(f"_dmarc.{DOMAIN}", "v=DMARC1; p=none")
        self.zone = ZoneServer(zone)
        self.proc: subprocess.Popen[bytes] | None = None
        self.version = ""

    @property
    def spec(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.zone.start()
        self.dir.mkdir()
        conf = self.dir / "unbound.conf"
        conf.write_text(UNBOUND_CONF.format(port=self.port, dir=self.dir, zone_port=self.zone.port))
        binary = program("unbound")
        checked = subprocess.run(
            [program("unbound-checkconf"), str(conf)], capture_output=True, text=True, check=False
        )
        if checked.returncode != 0:
            raise BenchError(
                f"unbound-checkconf: {checked.stdout.strip()} {checked.stderr.strip()}"
            )
        self.proc = subprocess.Popen(
            [binary, "-d", "-c", str(conf)], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while "v=spf1" not in (self.query(DOMAIN, "TXT") or ""):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"unbound did not answer:\n{tail(self.dir / 'unbound.log')}")
            time.sleep(0.1)
        got = subprocess.run([binary, "-V"], capture_output=True, text=True, check=False)
        found = re.search(r"Version (\S+)", got.stdout)
        self.version = found.group(1) if found else ""

    def query(self, name: str, rdtype: str) -> str | None:
        import dns.exception
        import dns.message
        import dns.query

        try:
            answer = dns.query.udp(
                dns.message.make_query(name, rdtype), "127.0.0.1", timeout=1, port=self.port
            )
        except (dns.exception.DNSException, OSError):
            return None
        return answer.to_text()

    def stop(self) -> None:
        stop_process(self.proc)
        self.zone.stop()


# -- the message ---------------------------------------------------------------------


def signed_message(key: keys.PrivateKey, size: int) -> bytes:
    """About `size` bytes, CRLF line ends, a DKIM-Signature on top."""
    header = (
        f"From: Bench Sender <{SENDER}>\r\nTo: <{RECIPIENT}>\r\n"
        f"Subject: policy benchmark\r\nDate: Sun, 22 Nov 2026 00:00:00 +0000\r\n"
        f"Message-ID: <policy-bench@{DOMAIN}>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog; policy benchmark line.\r\n"
    body = line * max(1, (size - len(header)) // len(line))
    message = header + body
    return sign_dkim(parse_message(message, crlf=True), key, selector=SELECTOR) + message


def send(port: int, concurrency: int, count: int, message_file: Path) -> tuple[float, int]:
    """smtp-source -F: (seconds, messages acknowledged)."""
    argv = [
        program("smtp-source"), "-s", str(concurrency), "-m", str(count), "-c",
        "-F", str(message_file), "-M", "client.bench.test", "-f", SENDER, "-t", RECIPIENT,
        f"127.0.0.1:{port}",
    ]  # fmt: skip
    start = time.perf_counter()
    try:
        done = subprocess.run(argv, capture_output=True, timeout=RUN_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"smtp-source -m {count} took over {RUN_TIMEOUT:.0f} s") from None
    elapsed = time.perf_counter() - start
    counters = re.findall(rb"\d+", done.stdout)
    acknowledged = int(counters[-1]) if counters else 0
    if done.returncode != 0 or acknowledged != count:
        said = done.stderr.decode(errors="replace").strip()
        raise BenchError(f"smtp-source: {acknowledged} of {count} acknowledged: {said}")
    return elapsed, acknowledged


# -- the modes ----------------------------------------------------------------------


@dataclass
class Sample:
    messages: int
    seconds: float
    queued: int
    cpu: float  # seconds of CPU the server's processes used in the round

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def cpu_ms(self) -> float:
        """The server's CPU a message, in milliseconds."""
        return 1000 * self.cpu / self.messages


@dataclass
class Mode:
    name: str
    samples: list[Sample] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return statistics.median(s.rate for s in self.samples) if self.samples else 0.0

    @property
    def cpu_ms(self) -> float:
        return statistics.median(s.cpu_ms for s in self.samples) if self.samples else 0.0


def newest_file(top: Path) -> bytes:
    files = [p for p in top.rglob("*") if p.is_file()]
    if not files:
        raise BenchError(f"nothing under {top}")
    return max(files, key=lambda p: p.stat().st_mtime_ns).read_bytes()


class QuailModes:
    """One quail server; the rules file decides policy or none."""

    def __init__(self, work: Path, dns: Dns) -> None:
        self.server = Quail(work, "quail")
        self.dns = dns
        self.rules: dict[str, str] = {}

    def start(self) -> None:
        self.server.init()
        control = self.server.root / "control"
        self.rules["quailmail"] = (control / "tcp.smtp").read_text()
        self.rules["quailmail+policy"] = POLICY_RULES
        self.rules["quailmail outside"] = OUTSIDE_RULES
        (control / "dnsservers").write_text(self.dns.spec + "\n")
        (control / "rbls").write_text(f"-r {DNSBL}\n")
        (control / "spfbehavior").write_text("3\n")
        greylist = self.server.root / "greylist"
        (control / "greylistdir").write_text("greylist\n")
        entry = greylist / "ip4" / "127" / "000" / "000"  # jgreylist's layout, per /24
        entry.parent.mkdir(parents=True)
        entry.touch()
        aged = time.time() - 3600
        os.utime(entry, (time.time(), aged))
        self.server.serve()

    def use(self, mode: str) -> None:
        control = self.server.root / "control"
        done = self.server.quail(
            "tcprules", str(control / "tcp.smtp.cdb"), str(control / "tcp.smtp.tmp"),
            stdin=self.rules[mode],
        )  # fmt: skip
        if done.returncode != 0:
            raise BenchError(f"quail tcprules: {done.stderr.strip()}")

    def probe(self, message_file: Path) -> str:
        self.use("quailmail+policy")
        send(self.server.port, 1, 1, message_file)
        queued = newest_file(self.server.root / "queue")
        fields = re.findall(rb"Authentication-Results:.*?\n(?=\S)", queued, re.S)
        text = b" ".join(fields).decode(errors="replace")
        for want in ("spf=pass", "dkim=pass", "dmarc=pass"):
            if want not in text:
                raise BenchError(f"quailmail's probe lacks {want}: {text or queued[:600]!r}")
        return " ".join(text.split())

    def stop(self) -> None:
        self.server.stop()


class PostfixOpenDkim:
    def __init__(self, work: Path, dns: Dns) -> None:
        self.postfix = Postfix(work)
        self.milter = OpenDkim(work)
        self.dns = dns

    def start(self) -> None:
        # OpenDKIM's key from a file, not DNS: see the module's docstring.
        resolver = self.dns.dir / "opendkim-keys"
        resolver.write_text(f"{SELECTOR}._domainkey.{DOMAIN} {self.dns.key_record}\n")
        resolver.chmod(0o644)
        # OpenDkim.start formats its module's template: this one verifies.
        anchor.OPENDKIM_CONF = OPENDKIM_VERIFY_CONF.replace("RESOLVER", str(resolver))
        self.milter.start()
        self.postfix.start()
        conf = str(self.postfix.dir / "conf")
        for setting in (
            f"smtpd_milters = inet:127.0.0.1:{self.milter.port}",
            "milter_default_action = tempfail",
        ):
            subprocess.run([program("postconf"), "-c", conf, "-e", setting], check=True)
        self.postfix.postfix("reload")
        time.sleep(1.0)

    def probe(self, message_file: Path) -> str:
        send(self.postfix.port, 1, 1, message_file)
        queued = newest_file(self.postfix.dir / "spool" / "hold")
        # The hold file is Postfix's record format: keep the printable run.
        found = re.search(rb"Authentication-Results: [^;]*;", queued)
        result = re.search(rb"dkim=\w+[^;]*", queued)
        text = b" ".join(m.group(0) for m in (found, result) if m).decode()
        if "dkim=pass" not in text:
            raise BenchError(
                f"Postfix's probe lacks dkim=pass: {text or 'no Authentication-Results'}; "
                f"opendkim said:\n{tail(self.milter.dir / 'opendkim.log')}"
            )
        return " ".join(text.split())

    def pids(self) -> list[int]:
        """Postfix's master (its daemons are its descendants) and OpenDKIM."""
        assert self.milter.proc is not None
        return [master_pid(self.postfix.dir), self.milter.proc.pid]

    def stop(self) -> None:
        self.postfix.stop()
        self.milter.stop()


# -- the run -------------------------------------------------------------------------


def report(modes: dict[str, Mode], args: argparse.Namespace, start_load: str) -> list[str]:
    plain, policy = modes["quailmail"].rate, modes["quailmail+policy"].rate
    postfix = modes["Postfix+OpenDKIM"].rate
    vs_postfix = policy / postfix if postfix else 0.0
    vs_plain = policy / plain if plain else 0.0
    outside = modes["quailmail outside"].rate
    vs_outside = policy / outside if outside else 0.0
    lines = [
        f"SMTP accept rate with inbound policy, msgs/s (median of {args.rounds} rounds; "
        f"smtp-source -F, {args.concurrency} connections, one message each, "
        f"{args.size} B signed message, {args.messages} per round, fsync before 250)",
        "",
        f"{'':>18} {'msgs/s':>8} {'server CPU a message':>22}",
        *(f"{name:>18} {mode.rate:8.0f} {mode.cpu_ms:19.2f} ms" for name, mode in modes.items()),
        "",
        f"policy / Postfix+OpenDKIM: {vs_postfix:.2f}x (goal >= {GOAL_VS_POSTFIX:.1f}x "
        f"{'met' if vs_postfix >= GOAL_VS_POSTFIX else 'MISSED'})",
        f"policy / no policy:        {vs_plain:.2f} (goal >= {GOAL_VS_PLAIN:.2f} "
        f"{'met' if vs_plain >= GOAL_VS_PLAIN else 'MISSED'})",
        f"policy / outside, no knobs: {vs_outside:.2f} (information: an outside client "
        "with no DNSBL, greylisting, SPF or DKVERIFY; DMARC still checks DKIM and SPF)",
        f"load average: {start_load} at start, {load_average()} at end ({os.cpu_count()} CPUs)",
    ]
    return lines


def run(args: argparse.Namespace) -> int:
    key = keys.generate("rsa", 2048)
    started = time.monotonic()
    start_load = load_average()
    with work_directory(args, "quail-policy-bench-") as work:
        message_file = work / "message.eml"
        message_file.write_bytes(signed_message(key, args.size).replace(b"\r\n", b"\n"))
        message_file.chmod(0o644)
        dns = Dns(work, key)
        quail = QuailModes(work, dns)
        postfix = PostfixOpenDkim(work, dns)
        names = ("quailmail", "quailmail+policy", "Postfix+OpenDKIM", "quailmail outside")
        modes = {name: Mode(name) for name in names}
        probes: dict[str, str] = {}
        try:
            dns.start()
            quail.start()
            postfix.start()
            probes["quailmail+policy"] = quail.probe(message_file)
            probes["Postfix+OpenDKIM"] = postfix.probe(message_file)
            for name, text in probes.items():
                print(f"probe {name}: {text}", flush=True)
            order = list(modes)
            for round_ in range(args.rounds + 1):  # round 0: the warm-up
                for name in order if round_ % 2 else order[::-1]:
                    if name.startswith("quailmail"):
                        quail.use(name)
                        port, queued = quail.server.port, quail.server.queued
                        pids = [quail.server.pid]
                    else:
                        port, queued = postfix.postfix.port, postfix.postfix.queued
                        pids = postfix.pids()
                    count = 2 * args.concurrency if round_ == 0 else args.messages
                    before = queued()
                    cpu_before = sum(cpu_seconds(pid) for pid in pids)
                    seconds, acknowledged = send(port, args.concurrency, count, message_file)
                    cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
                    sample = Sample(acknowledged, seconds, queued() - before, cpu)
                    if sample.queued != acknowledged:
                        raise BenchError(
                            f"{name}: {acknowledged} acknowledged, {sample.queued} queued"
                        )
                    if round_:
                        modes[name].samples.append(sample)
                        print(
                            f"  round {round_}: {name:18} {count} msgs in {seconds:6.2f} s "
                            f"= {sample.rate:6.0f}/s, CPU {sample.cpu_ms:.2f} ms a message "
                            f"(load {load_average()})",
                            flush=True,
                        )
        finally:
            quail.stop()
            postfix.stop()
            dns.stop()
    lines = report(modes, args, start_load)
    print()
    print("\n".join(lines))
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {
            "postfix": postfix.postfix.version,
            "opendkim": postfix.milter.version,
            "unbound": dns.version,
        },
        "cpus": os.cpu_count(),
        "load_average_at_start": start_load,
        "load_average_at_end": load_average(),
        "messages": args.messages,
        "size": args.size,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "wall_seconds": round(time.monotonic() - started, 1),
        "probes": probes,
        "modes": {
            name: {
                "accepted_msgs_per_s": round(mode.rate, 1),
                "server_cpu_ms_per_msg": round(mode.cpu_ms, 3),
                "samples": [
                    vars(s) | {"rate": round(s.rate, 1), "cpu_ms": round(s.cpu_ms, 3)}
                    for s in mode.samples
                ],
            }
            for name, mode in modes.items()
        },
        "table": lines,
    }
    out = Path(args.json) if args.json else anchor.BENCH / "results" / f"{NAME}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nJSON: {out}")
    return 0


def main() -> int:
    parser = arguments(__doc__ or "", NAME)
    parser.set_defaults(messages=3000)
    return bench_main(NAME, parser, run)


if __name__ == "__main__":
    sys.exit(main())
