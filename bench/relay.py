"""Relaying on loopback, quailmail beside Postfix in one run, with and
without DKIM signing.

    bench/relay.sh [--messages 5000] [--concurrency 50] [--size 4096]
        [--rounds 3] [--no-dkim] [--json FILE]

smtp-source (`--concurrency` sessions, one message per connection) hands
`--messages` messages of `--size` bytes to the server, which relays them all
to smtp-sink, everything on 127.0.0.1.  Four modes, each with its own server,
counting sink and probe sink:

- postfix, postfix+opendkim: bench/postfix_relay_anchor.py's private
  Postfix with its defaults, OpenDKIM (RSA 2048, rsa-sha256, relaxed/simple)
  as a milter in the signed mode.
- quailmail, quailmail+dkim: `quail init ROOT --hostname bench.test`, as it
  sets a root up (one worker per CPU), then `quail serve --quiet`, which
  queues (fsync before 250) and delivers.  `control/smtproutes` sends the
  sinks' domains to their ports.  The signed mode signs as OpenDKIM does
  here: `control/dkim/signconf.xml` with one `<types id="dkim"/>`, a fresh
  RSA 2048 key in `control/keys/bench.test/bench`, relaxed/simple, d= the
  From: domain (smtp-source writes the envelope sender there).

Every mode: a probe message to the dumping sink must carry one
DKIM-Signature exactly when the mode signs (a=rsa-sha256, c=relaxed/simple,
d=bench.test, and it verifies), then a warm-up of 2 x concurrency messages.
Then `--rounds` rounds, the modes in turn (postfix, quailmail,
postfix+opendkim, quailmail+dkim; every other round in reverse), so that a
change in the machine's load falls on both servers alike.  A round: time
from smtp-source's start to its end (accepted msgs/s) and to the sink's
count reaching `--messages` (relayed msgs/s); then the server's queue must
empty (nothing deferred) and the sink must have counted exactly what was
sent.  The table shows the median of the rounds and the ratios the goal
names, on relayed msgs/s; the JSON keeps every sample.

Goal: quailmail >= 1.5x Postfix unsigned, quailmail+dkim >= 2x
Postfix+OpenDKIM.

Runs as root (Postfix's master must); needs postfix (smtp-source,
smtp-sink) and opendkim (`make peers`).  Every process it starts is stopped
on exit, failure or signal.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import quailmail
from postfix_relay_anchor import (
    PROBE_DOMAIN,
    SELECTOR,
    SINK_DOMAIN,
    Mode,
    PostfixRig,
    Rig,
    Sink,
    arguments,
    bench_main,
    check_probe,
    load_average,
    program,
    run_rigs,
    table_row,
    work_directory,
    write_results,
)
from quailmail.auth.keys import generate, private_key_pem
from smtp_accept import Quail

GOAL_UNSIGNED = 1.5  # quailmail / Postfix
GOAL_SIGNED = 2.0  # quailmail+dkim / Postfix+OpenDKIM

# OpenDKIM's setup in postfix_relay_anchor.py, in qmail-dkim's terms: the
# From: domain's key (d= the domain the key was found for), one DKIM
# signature, no DomainKeys.  Relative paths are under control/.
SIGNCONF = f"""\
<dkimsign>
  <global domain="%" keyfile="keys/%/{SELECTOR}" selector="{SELECTOR}" method="relaxed/simple">
    <types id="dkim"/>
  </global>
</dkimsign>
"""


class QuailRig:
    """quailmail relaying to a counting sink and a probe sink, signing with
    control/dkim/signconf.xml when the mode signs."""

    def __init__(self, work: Path, mode: Mode) -> None:
        self.mode = mode
        self.sink = Sink(work, f"sink-{mode.name}")
        self.probe = Sink(work, f"probe-{mode.name}", dump=True)
        self.recipient = f"rcpt@{SINK_DOMAIN}"
        self.quail = Quail(work, mode.name.replace("+", "-"), receive_only=False)
        self.key_pem = b""

    @property
    def port(self) -> int:
        return self.quail.port

    def start(self) -> None:
        self.sink.start()
        self.probe.start()
        self.quail.init()
        control = self.quail.root / "control"
        (control / "smtproutes").write_text(
            f"{SINK_DOMAIN}:127.0.0.1:{self.sink.port}\n{PROBE_DOMAIN}:127.0.0.1:{self.probe.port}\n"
        )
        if self.mode.signed:
            self.key_pem = private_key_pem(generate("rsa", 2048))
            key = control / "keys" / "bench.test" / SELECTOR
            key.parent.mkdir(parents=True)
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(self.key_pem)
            (control / "dkim").mkdir(exist_ok=True)
            (control / "dkim" / "signconf.xml").write_text(SIGNCONF)
        self.quail.serve()

    def check(self, args: argparse.Namespace) -> None:
        check_probe(self, self.probe, self.key_pem, args.size)

    def pids(self) -> list[int]:
        return [self.quail.pid]

    def queued(self) -> int:
        return self.quail.queued()

    def versions(self) -> dict[str, str]:
        return {"quailmail": quailmail.__version__}

    def stop(self) -> None:
        self.quail.stop()
        self.probe.stop()
        self.sink.stop()


def report(modes: dict[str, Mode], args: argparse.Namespace, versions: dict[str, str]) -> list[str]:
    labels = {
        "postfix": f"Postfix {versions.get('postfix', '')}",
        "postfix+opendkim": f"Postfix+OpenDKIM {versions.get('opendkim', '')}",
        "quailmail": f"quailmail {versions.get('quailmail', '')}",
        "quailmail+dkim": "quailmail+DKIM",
    }
    lines = [
        f"Relaying on loopback, msgs/s (median of {args.rounds} round(s); {args.messages} "
        f"messages of {args.size} B, smtp-source at {args.concurrency} connections -> "
        f"server -> smtp-sink)",
        "",
        f"{'mode':<26} {'accepted/s':>10} {'relayed/s':>10} {'CPU ms/msg':>10}",
    ]
    lines += [table_row(labels[mode.name], mode) for mode in modes.values()]
    lines.append("")
    pairs = [("quailmail", "postfix", "unsigned", GOAL_UNSIGNED)]
    if "quailmail+dkim" in modes:
        pairs.append(("quailmail+dkim", "postfix+opendkim", "signed", GOAL_SIGNED))
    for ours, theirs, kind, goal in pairs:
        relayed = modes[ours].median("relayed_rate") / modes[theirs].median("relayed_rate")
        accepted = modes[ours].median("accepted_rate") / modes[theirs].median("accepted_rate")
        verdict = "met" if relayed >= goal else "MISSED"
        lines.append(
            f"{kind + ':':<9} {labels[ours]} / {labels[theirs]} relayed {relayed:.2f}x "
            f"(goal >= {goal:.1f}x {verdict}), accepted {accepted:.2f}x"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    for name in ("postfix", "smtp-source", "smtp-sink", *(() if args.no_dkim else ("opendkim",))):
        program(name)
    names = ["postfix", "quailmail"] + (
        [] if args.no_dkim else ["postfix+opendkim", "quailmail+dkim"]
    )
    modes = {name: Mode(name, signed=name.endswith("dkim")) for name in names}
    started, load = time.monotonic(), load_average()
    with work_directory(args, "quail-relay-") as work:
        rigs: list[Rig] = [
            (QuailRig if name.startswith("quailmail") else PostfixRig)(work, mode)
            for name, mode in modes.items()
        ]
        versions = run_rigs(rigs, args)
    write_results(
        args,
        "relay",
        list(modes.values()),
        report(modes, args, versions),
        quailmail_version=versions.get("quailmail", ""),
        postfix_version=versions.get("postfix", ""),
        opendkim_version=versions.get("opendkim", ""),
        wall_seconds=round(time.monotonic() - started, 1),
        load_average_at_start=load,
    )
    return 0


def main() -> int:
    parser = arguments(__doc__, "relay")
    parser.add_argument("--no-dkim", action="store_true", help="skip the signing modes")
    return bench_main("relay", parser, run)


if __name__ == "__main__":
    sys.exit(main())
