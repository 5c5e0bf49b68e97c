"""DKIM sign and verify throughput, quailmail beside its peers, in one run.

    .venv/bin/python bench/dkim.py [--seconds 1.0] [--json PATH]    (or: make bench)

Rows: sign and verify, a 4 KiB and a 100 KiB message, RSA-2048 and Ed25519
(c=relaxed/relaxed).  Columns, in messages per second on one core:

- quailmail: sign_dkim(parse_message(msg, crlf=True), parse_private_key(pem))
  and verify_dkim() with a warm in-memory resolver (DNS is not measured), in
  process, verify awaited in one event loop.  crlf=True is how the receiver
  and the queue hand messages over (SMTP refuses bare LF), as libopendkim is
  handed CRLF by its MTA; files of unknown line endings cost two counts more;
- dkimpy: DKIM(msg).sign(...) / DKIM(msg).verify(dnsfunc=dict lookup), in process;
- Mail::DKIM: bench/mail_dkim_bench.pl, timed inside perl (key loaded once,
  key record from memory; Debian's 1.20230212 has no Ed25519);
- libopendkim: bench/opendkim_bench.c, compiled here into bench/bin/ against
  libopendkim (Debian libopendkim-dev), timed in C (PEM parsed per message as
  libopendkim does for each signing handle; key record from memory through
  dkim_set_key_lookup);
- raw: the `cryptography` primitive alone on a 32-byte digest (RSA PKCS#1
  v1.5 with Prehashed SHA-256, or Ed25519): the ceiling for that row.

Every verifier is timed on the same message, signed by quailmail, and must
pass it (checked before timing).  Each cell runs for --seconds of wall time
after one warm-up message.  Ratios: quail/libopendkim and quail/raw.  The
results also go to bench/results/dkim-latest.json (git-ignored).

Goals (issue: DKIM throughput): sign at least 2x libopendkim and 75% of the
raw RSA-2048 rate; verify at least 1.5x libopendkim.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from quailmail.auth import keys
from quailmail.auth.dkim import sign_dkim, verify_dkim
from quailmail.auth.message import parse_message
from quailmail.core.dns import DnsResult, DnsStatus, MxRecord

HERE = Path(__file__).resolve().parent
BIN = HERE / "bin"
RESULTS = HERE / "results" / "dkim-latest.json"
SELECTOR = "bench"
DOMAIN = "example.com"
SIZES = {"4KiB": 4 * 1024, "100KiB": 100 * 1024}
KEYS = ("rsa-2048", "ed25519")
IMPLS = ("quail", "dkimpy", "mail_dkim", "libopendkim", "raw")
TITLES = {
    "quail": "quailmail",
    "dkimpy": "dkimpy",
    "mail_dkim": "Mail::DKIM",
    "libopendkim": "libopendkim",
    "raw": "raw crypto",
}
GOALS = {"sign/libopendkim": 2.0, "sign/raw": 0.75, "verify/libopendkim": 1.5}


class Unavailable(Exception):
    """This implementation cannot run this cell here; the text says why."""


# --- inputs ----------------------------------------------------------------------

WORDS = [
    "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "mail", "server",
    "queue", "delivery", "message", "signature", "domain", "selector", "header", "body",
    "relaxed", "simple", "canonical", "hash", "key", "record", "please", "find", "attached",
    "report", "meeting", "tomorrow", "thanks", "regards", "invoice", "order",
]  # fmt: skip


def make_message(size: int) -> bytes:
    """A plain-text message of about `size` bytes, CRLF, deterministic: the
    usual header fields (three Received: that are not signed) and lines of
    words, some ending in a space, as mail does."""
    rng = random.Random(size)
    head = (
        b"Received: from mx.example.net (mx.example.net [192.0.2.1])\r\n"
        b"\tby mail.example.com with ESMTPS id 4XyZ; Fri, 11 Jul 2003 21:00:39 -0700\r\n"
        b"Received: from client (unknown [198.51.100.7]) by mx.example.net; "
        b"Fri, 11 Jul 2003 21:00:38 -0700\r\n"
        b"Received: by client; Fri, 11 Jul 2003 21:00:37 -0700\r\n"
        b"From: Joe SixPack <joe@example.com>\r\n"
        b"To: Suzie Q <suzie@example.net>\r\n"
        b"Cc: team@example.net\r\n"
        b"Subject: Quarterly report and the meeting tomorrow\r\n"
        b"Date: Fri, 11 Jul 2003 21:00:37 -0700\r\n"
        b"Message-ID: <20030712040037.46341.5F8J@example.com>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n"
        b"\r\n"
    )
    lines = []
    total = len(head)
    while total < size:
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < rng.randint(40, 72):
            words.append(rng.choice(WORDS))
        line = " ".join(words) + (" " if rng.random() < 0.1 else "")
        if rng.random() < 0.08:
            line = ""
        encoded = line.encode() + b"\r\n"
        lines.append(encoded)
        total += len(encoded)
    return head + b"".join(lines)


@dataclass
class Key:
    name: str
    key: keys.PrivateKey
    pem: bytes
    path: Path
    record: str
    algorithm: str


def make_keys(tmp: Path) -> dict[str, Key]:
    out = {}
    for name, (kind, bits, alg) in {
        "rsa-2048": ("rsa", 2048, "rsa-sha256"),
        "ed25519": ("ed25519", 256, "ed25519-sha256"),
    }.items():
        key = keys.generate(kind, bits)  # type: ignore[arg-type]
        pem = keys.private_key_pem(key)
        path = tmp / f"{name}.pem"
        path.write_bytes(pem)
        out[name] = Key(name, key, pem, path, keys.record_value(key), alg)
    return out


# --- timing ------------------------------------------------------------------------


def rate(fn: Callable[[], object], seconds: float) -> float:
    fn()  # warm-up, not counted
    n = 0
    start = time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed


class TableResolver:
    """Warm in-memory resolver: the key record from a dict, no DNS."""

    def __init__(self, table: dict[str, str]) -> None:
        self.table = {name: (value.encode(),) for name, value in table.items()}

    async def txt(self, name: str) -> DnsResult[bytes]:
        records = self.table.get(name.lower().rstrip("."))
        if records is None:
            return DnsResult(DnsStatus.NXDOMAIN)
        return DnsResult(DnsStatus.ANSWER, records)

    # The rest of the Resolver protocol; DKIM asks only for TXT.
    async def a(self, name: str) -> DnsResult[str]:
        return DnsResult(DnsStatus.NXDOMAIN)

    async def aaaa(self, name: str) -> DnsResult[str]:
        return DnsResult(DnsStatus.NXDOMAIN)

    async def mx(self, name: str) -> DnsResult[MxRecord]:
        return DnsResult(DnsStatus.NXDOMAIN)

    async def ptr(self, address: str) -> DnsResult[str]:
        return DnsResult(DnsStatus.NXDOMAIN)


# --- implementations ------------------------------------------------------------------


def quail_sign(message: bytes, key: Key, seconds: float) -> float:
    def once() -> bytes:
        return sign_dkim(
            parse_message(message, crlf=True),
            keys.parse_private_key(key.pem),
            selector=SELECTOR,
            domain=DOMAIN,
        )

    return rate(once, seconds)


def quail_verify(signed: bytes, key: Key, seconds: float) -> float:
    resolver = TableResolver({f"{SELECTOR}._domainkey.{DOMAIN}": key.record})

    async def loop() -> float:
        first = await verify_dkim(parse_message(signed, crlf=True), resolver)  # warm-up
        if first.code != "A":
            raise Unavailable(f"quailmail does not pass it: {first.reason}")
        n = 0
        start = time.perf_counter()
        while True:
            await verify_dkim(parse_message(signed, crlf=True), resolver)
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return n / elapsed

    return asyncio.run(loop())


def _dkimpy() -> Any:
    # This file is bench/dkim.py: keep its folder off sys.path while dkimpy's
    # `dkim` package is imported, or `import dkim` finds this script.
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    try:
        import dkim
    except ImportError as exc:
        raise Unavailable("dkimpy not installed") from exc
    finally:
        sys.path[:] = saved
    return dkim


def _dkimpy_key(key: Key) -> bytes:
    if key.key.type == "rsa":
        return key.pem
    assert isinstance(key.key.key, ed25519.Ed25519PrivateKey)
    from cryptography.hazmat.primitives import serialization

    raw = key.key.key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(raw)


def dkimpy_sign(message: bytes, key: Key, seconds: float) -> float:
    dkim = _dkimpy()
    private = _dkimpy_key(key)

    def once() -> bytes:
        return dkim.DKIM(message).sign(  # type: ignore[no-any-return]
            SELECTOR.encode(),
            DOMAIN.encode(),
            private,
            signature_algorithm=key.algorithm.encode(),
            canonicalize=(b"relaxed", b"relaxed"),
        )

    try:
        once()
    except Exception as exc:
        raise Unavailable(f"dkimpy: {type(exc).__name__}: {exc}") from exc
    return rate(once, seconds)


def dkimpy_verify(signed: bytes, key: Key, seconds: float) -> float:
    dkim = _dkimpy()
    record = key.record.encode()

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes:
        return record

    def once() -> bool:
        return bool(dkim.DKIM(signed).verify(dnsfunc=dnsfunc))

    try:
        ok = once()
    except Exception as exc:
        raise Unavailable(f"dkimpy: {type(exc).__name__}: {exc}") from exc
    if not ok:
        raise Unavailable("dkimpy does not pass it")
    return rate(once, seconds)


_RATE = re.compile(r"ops (\d+) seconds ([\d.]+) rate ([\d.]+) failures (\d+)")


def _external(argv: list[str], what: str) -> float:
    done = subprocess.run(argv, capture_output=True, check=False, timeout=120)
    out = done.stdout.decode(errors="replace")
    match = _RATE.search(out)
    if match is None:
        raise Unavailable(f"{what}: {done.stderr.decode(errors='replace').strip() or out}")
    if int(match.group(4)):
        raise Unavailable(f"{what}: {match.group(4)} of {match.group(1)} operations failed")
    return float(match.group(3))


def _perl() -> str:
    perl = shutil.which("perl")
    if perl is None:
        raise Unavailable("perl not found")
    probe = subprocess.run(
        [perl, "-MMail::DKIM", "-MNet::DNS", "-e", "1"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        raise Unavailable("Mail::DKIM not installed (libmail-dkim-perl)")
    return perl


def mail_dkim(op: str, message_path: Path, key: Key, seconds: float) -> float:
    if key.key.type != "rsa":
        raise Unavailable("no Ed25519 in Debian's Mail::DKIM")
    arg = str(key.path) if op == "sign" else key.record
    argv = [_perl(), str(HERE / "mail_dkim_bench.pl"), op, arg, SELECTOR, DOMAIN]
    return _external([*argv, str(message_path), str(seconds)], "Mail::DKIM")


def build_opendkim_bench() -> Path:
    """Compile bench/opendkim_bench.c into bench/bin/ (once per source version)."""
    source = HERE / "opendkim_bench.c"
    if not Path("/usr/include/opendkim/dkim.h").exists():
        raise Unavailable("libopendkim headers not found (Debian libopendkim-dev)")
    if shutil.which("gcc") is None:
        raise Unavailable("gcc not found")
    tag = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    program = BIN / f"opendkim_bench-{tag}"
    if program.exists():
        return program
    BIN.mkdir(exist_ok=True)
    tmp = program.with_suffix(".tmp")
    done = subprocess.run(
        ["gcc", "-O2", "-Wall", "-o", str(tmp), str(source), "-lopendkim"],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        raise Unavailable(f"cannot build opendkim_bench: {done.stderr.decode(errors='replace')}")
    tmp.rename(program)
    return program


def libopendkim(op: str, message_path: Path, key: Key, seconds: float) -> float:
    program = build_opendkim_bench()
    arg = str(key.path) if op == "sign" else key.record
    argv = [str(program), op, arg, SELECTOR, DOMAIN, key.algorithm, str(message_path)]
    return _external([*argv, str(seconds)], "libopendkim")


def raw(op: str, key: Key, seconds: float) -> float:
    digest = hashlib.sha256(b"32 bytes of a header hash").digest()
    private = key.key.key
    if isinstance(private, ed25519.Ed25519PrivateKey):
        ed_signature = private.sign(digest)
        ed_public = private.public_key()
        if op == "sign":
            return rate(lambda: private.sign(digest), seconds)
        return rate(lambda: ed_public.verify(ed_signature, digest), seconds)
    pkcs1 = padding.PKCS1v15()
    prehashed = Prehashed(hashes.SHA256())
    signature = private.sign(digest, pkcs1, prehashed)
    public = private.public_key()
    if op == "sign":
        return rate(lambda: private.sign(digest, pkcs1, prehashed), seconds)
    return rate(lambda: public.verify(signature, digest, pkcs1, prehashed), seconds)


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Row:
    op: str
    size: str
    key: str
    rates: dict[str, float | None] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def ratio(self, a: str, b: str) -> float | None:
        x, y = self.rates.get(a), self.rates.get(b)
        return x / y if x and y else None


def measure(
    impl: str, op: str, *, message: bytes, signed: bytes, path: Path, key: Key, secs: float
) -> float:
    if impl == "quail":
        return quail_sign(message, key, secs) if op == "sign" else quail_verify(signed, key, secs)
    if impl == "dkimpy":
        return dkimpy_sign(message, key, secs) if op == "sign" else dkimpy_verify(signed, key, secs)
    if impl == "mail_dkim":
        return mail_dkim(op, path, key, secs)
    if impl == "libopendkim":
        return libopendkim(op, path, key, secs)
    return raw(op, key, secs)


def run(seconds: float, impls: tuple[str, ...]) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="quail-bench-") as name:
        tmp = Path(name)
        all_keys = make_keys(tmp)
        for op in ("sign", "verify"):
            for size_name, size in SIZES.items():
                message = make_message(size)
                for key_name in KEYS:
                    key = all_keys[key_name]
                    signed = (
                        sign_dkim(parse_message(message), key.key, selector=SELECTOR, domain=DOMAIN)
                        + message
                    )
                    path = tmp / f"{op}-{size_name}-{key_name}.eml"
                    path.write_bytes(message if op == "sign" else signed)
                    row = Row(op, size_name, key_name)
                    for impl in impls:
                        try:
                            row.rates[impl] = measure(
                                impl,
                                op,
                                message=message,
                                signed=signed,
                                path=path,
                                key=key,
                                secs=seconds,
                            )
                        except Unavailable as exc:
                            row.rates[impl] = None
                            row.notes[impl] = str(exc)
                    rows.append(row)
                    print(f"  {op:6} {size_name:6} {key_name:8} " + _cells(row), file=sys.stderr)
    return rows


def _fmt(value: float | None, ratio: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}×" if ratio else f"{value:,.0f}"


def _cells(row: Row) -> str:
    return " ".join(f"{TITLES[i]}={_fmt(row.rates.get(i))}" for i in row.rates)


def table(rows: list[Row], impls: tuple[str, ...]) -> str:
    head = ["operation", "size", "key", *(TITLES[i] for i in impls)]
    head += ["quail/libopendkim", "quail/raw"]
    lines = [head]
    for row in rows:
        cells = [row.op, row.size, row.key, *(_fmt(row.rates.get(i)) for i in impls)]
        cells.append(_fmt(row.ratio("quail", "libopendkim"), ratio=True))
        cells.append(_fmt(row.ratio("quail", "raw"), ratio=True))
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for n, line in enumerate(lines):
        out.append(
            "  ".join(
                cell.ljust(widths[i]) if i < 3 else cell.rjust(widths[i])
                for i, cell in enumerate(line)
            )
        )
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def goals(rows: list[Row]) -> list[dict[str, Any]]:
    """The issue's goals on the RSA-2048 rows (the raw ceiling is RSA's)."""
    verdicts = []
    for row in rows:
        if row.key != "rsa-2048":
            continue
        for name, floor in GOALS.items():
            op, _, other = name.partition("/")
            if op != row.op:
                continue
            ratio = row.ratio("quail", other)
            verdicts.append(
                {
                    "row": f"{row.op} {row.size} {row.key}",
                    "goal": f"quail ≥ {floor:g}× {other}",
                    "ratio": ratio,
                    "met": ratio is not None and ratio >= floor,
                }
            )
    return verdicts


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _dpkg(package: str) -> str | None:
    if shutil.which("dpkg-query") is None:
        return None
    done = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, check=False
    )
    return done.stdout.decode().strip() or None


def machine() -> dict[str, Any]:
    cpu = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M)
        cpu = found.group(1) if found else ""
    return {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {
            "quailmail": _version("quailmail"),
            "cryptography": _version("cryptography"),
            "dkimpy": _version("dkimpy"),
            "pynacl": _version("pynacl"),
            "libmail-dkim-perl": _dpkg("libmail-dkim-perl"),
            "libopendkim": _dpkg("libopendkim11"),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per cell (default 1)")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"results file ({RESULTS})")
    parser.add_argument(
        "--only", nargs="+", choices=IMPLS, default=list(IMPLS), help="implementations to run"
    )
    args = parser.parse_args(argv)
    impls = tuple(i for i in IMPLS if i in args.only)
    started = time.time()
    print(f"DKIM throughput, {args.seconds:g} s per cell, msgs/s on one core", file=sys.stderr)
    rows = run(args.seconds, impls)
    print()
    print(table(rows, impls))
    notes = sorted({f"{TITLES[i]}: {text}" for row in rows for i, text in row.notes.items()})
    if notes:
        print("\n— " + "\n— ".join(notes))
    verdicts = goals(rows)
    print("\nGoals (RSA-2048):")
    for v in verdicts:
        mark = "met" if v["met"] else "MISSED"
        print(f"  {v['row']:24} {v['goal']:26} {_fmt(v['ratio'], ratio=True):>7}  {mark}")
    result = {
        "bench": "dkim",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds_per_cell": args.seconds,
        "wall_seconds": round(time.time() - started, 1),
        "machine": machine(),
        "unit": "messages per second, one core",
        "rows": [
            {
                "op": row.op,
                "size": row.size,
                "key": row.key,
                **{i: row.rates.get(i) for i in impls},
                "quail/libopendkim": row.ratio("quail", "libopendkim"),
                "quail/raw": row.ratio("quail", "raw"),
                "notes": row.notes,
            }
            for row in rows
        ],
        "goals": verdicts,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", "utf-8")
    print(f"\nwritten to {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
