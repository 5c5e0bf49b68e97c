"""Alt-N libdkim 1.0.21 (Debian libdkim-dev): the oracle for the seeds' letters.

The seeds' qmail-smtpd verified with libdkim and named each status by the
letter 'A' minus libdkim's DKIM_* code (DKIM_SUCCESS 0 → A, DKIM_FAIL -1 → B,
… DKIM_BODY_HASH_MISMATCH -15 → P).  tests/peers/libdkim_verify.c prints
those codes; it is compiled on first use into tests/peers/bin/ (or
$PEERS_BIN), once per source version:

    objcopy --weaken-symbol=_ZN13SignatureInfoC1ERKS_ \\
            --weaken-symbol=_ZN13SignatureInfoC2ERKS_ /usr/lib/libdkim.a libdkim-fixed.a
    gcc -O2 -c libdkim_verify.c;  g++ -O2 -c libdkim_fix.cpp
    g++ -o libdkim_verify libdkim_verify.o libdkim_fix.o libdkim-fixed.a -lcrypto

(libdkim.a is C++ and needs libstdc++, hence g++ for the link, and OpenSSL's
libcrypto; its own DNS code wants res_query, which glibc ≥ 2.34 has in libc.)
The weakened symbol and libdkim_fix.cpp replace the copy constructor that
Debian's openssl1.1.patch got wrong: without it every well-formed signature
loses d= and s= in a copy and ends as DKIM_SELECTOR_DNS_PERM_FAILURE (L).

Keys come from a key-table file through DKIMVerifyOptions.pfnSelectorCallback
(no DNS): "~~…~~" answers DNSRESP_TEMP_FAIL (1 → K), "NXDOMAIN" or a missing
name DNSRESP_PERM_FAIL (2 → L).  Options: nHonorBodyLengthTag=1,
nCheckPractices=0 (no ADSP), nSubjectRequired=1 (dkim.h: "0 = subject is
required"; RFC 6376 does not require it), nAllowUnsignedFromHeaders=0.

Known limits of libdkim 1.0.21: rsa-sha1 and rsa-sha256 only (an
ed25519-sha256 signature is DKIM_BAD_SYNTAX, C, at parse time); a key record
must have v= first when present; TXT data is read into a 1024-byte buffer;
x= is checked against the real clock; at most 10 signatures.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from peers._base import (
    BIN_DIR,
    HERE,
    KeyTable,
    PeerError,
    PeerMissing,
    PeerRefused,
    PeerUnsupported,
    prepend_field,
    run,
    to_crlf,
    workdir,
    write_keytable,
)

PEER = "libdkim"
LIBDKIM_A = Path("/usr/lib/libdkim.a")
DKIM_H = Path("/usr/include/dkim.h")
LIBDKIM_PC = Path("/usr/lib/pkgconfig/libdkim.pc")
FIXED_VERSION = "1.0.21"  # the release whose Debian build libdkim_fix.cpp mirrors
_WEAKEN = ("_ZN13SignatureInfoC1ERKS_", "_ZN13SignatureInfoC2ERKS_")
SOURCES = ("libdkim_verify.c", "libdkim_sign.c", "libdkim_fix.cpp")
CFLAGS = ("-O2", "-Wall", "-Wextra")

# dkim.h's names, for messages and reports.
CODES = {
    0: "DKIM_SUCCESS",
    -1: "DKIM_FAIL",
    -2: "DKIM_BAD_SYNTAX",
    -3: "DKIM_SIGNATURE_BAD",
    -4: "DKIM_SIGNATURE_BAD_BUT_TESTING",
    -5: "DKIM_SIGNATURE_EXPIRED",
    -6: "DKIM_SELECTOR_INVALID",
    -7: "DKIM_SELECTOR_GRANULARITY_MISMATCH",
    -8: "DKIM_SELECTOR_KEY_REVOKED",
    -9: "DKIM_SELECTOR_DOMAIN_NAME_TOO_LONG",
    -10: "DKIM_SELECTOR_DNS_TEMP_FAILURE",
    -11: "DKIM_SELECTOR_DNS_PERM_FAILURE",
    -12: "DKIM_SELECTOR_PUBLIC_KEY_INVALID",
    -13: "DKIM_NO_SIGNATURES",
    -14: "DKIM_NO_VALID_SIGNATURES",
    -15: "DKIM_BODY_HASH_MISMATCH",
    -16: "DKIM_SELECTOR_ALGORITHM_MISMATCH",
    -17: "DKIM_STAT_INCOMPAT",
    -18: "DKIM_UNSIGNED_FROM",
    1: "DKIM_FINISHED_BODY",
    2: "DKIM_PARTIAL_SUCCESS",
    3: "DKIM_NEUTRAL",
    4: "DKIM_SUCCESS_BUT_EXTRA",
}


def letter(code: int) -> str:
    """The seeds' letter for a libdkim signature code: 'A' - code.  A
    non-negative code is a verified signature (libdkimtest and qmail-dkim
    test nResult >= 0): DKIM_SUCCESS_BUT_EXTRA (4, body longer than l=) is
    A too; `LibdkimSignature.code` keeps the difference."""
    if code >= 0:
        return "A"
    return chr(ord("A") - code)


@dataclass(frozen=True, slots=True)
class LibdkimSignature:
    code: int
    letter: str
    domain: str  # libdkim's szSignatureDomain ("" when the signature did not parse)

    @property
    def name(self) -> str:
        return CODES.get(self.code, str(self.code))


@dataclass(frozen=True, slots=True)
class LibdkimReport:
    overall: int  # DKIMVerifyResults(): 0 all verified, 2 some, 3 none (neutral)
    process: int  # first non-zero DKIMVerifyProcess(): -13 no signature, -14 none usable
    signatures: tuple[LibdkimSignature, ...]
    version: str
    raw: str

    @property
    def letters(self) -> list[str]:
        return [sig.letter for sig in self.signatures]

    @property
    def codes(self) -> list[int]:
        return [sig.code for sig in self.signatures]


class LibdkimResult(NamedTuple):
    overall: int
    letters: list[str]


class LibdkimBinaries(NamedTuple):
    verify: Path
    sign: Path


def _check_installed() -> None:
    for path, what in ((LIBDKIM_A, "libdkim.a"), (DKIM_H, "dkim.h")):
        if not path.exists():
            raise PeerMissing(f"{what} not found at {path} (Debian package libdkim-dev)")
    for tool, package in (("gcc", "gcc"), ("g++", "g++"), ("objcopy", "binutils")):
        if shutil.which(tool) is None:
            raise PeerMissing(f"{tool} not found (Debian package {package})")
    if not Path("/usr/include/openssl/evp.h").exists():
        raise PeerMissing("OpenSSL headers not found (Debian package libssl-dev)")
    version = ""
    if LIBDKIM_PC.exists():
        found = re.search(r"^Version:\s*(\S+)", LIBDKIM_PC.read_text(), re.M)
        version = found.group(1) if found else ""
    if version != FIXED_VERSION:
        raise PeerUnsupported(
            f"libdkim {version or '?'}: libdkim_fix.cpp mirrors {FIXED_VERSION}'s "
            "SignatureInfo; check the Debian build and update it"
        )


def _build_key() -> str:
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((HERE / name).read_bytes())
    stat = LIBDKIM_A.stat()
    digest.update(f"{stat.st_size}:{stat.st_mtime_ns}:{' '.join(CFLAGS)}".encode())
    return digest.hexdigest()[:16]


def _cc(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, check=False, timeout=120)
    if done.returncode != 0:
        raise PeerError(f"{PEER}: build failed: {' '.join(argv)}\n{done.stderr.decode()}")


def build_libdkim() -> LibdkimBinaries:
    """Compile (once per source version) and return the two helper programs."""
    _check_installed()
    target = BIN_DIR / f"libdkim-{_build_key()}"
    binaries = LibdkimBinaries(target / "libdkim_verify", target / "libdkim_sign")
    if all(os.access(p, os.X_OK) for p in binaries):
        return binaries
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=BIN_DIR, prefix=".build-") as name:
        tmp = Path(name)
        fixed = tmp / "libdkim-fixed.a"
        weaken = [f"--weaken-symbol={symbol}" for symbol in _WEAKEN]
        _cc(["objcopy", *weaken, str(LIBDKIM_A), str(fixed)])
        _cc(["g++", *CFLAGS, "-c", "-o", str(tmp / "fix.o"), str(HERE / "libdkim_fix.cpp")])
        for program in ("libdkim_verify", "libdkim_sign"):
            obj = tmp / f"{program}.o"
            _cc(["gcc", *CFLAGS, "-c", "-o", str(obj), str(HERE / f"{program}.c")])
            link = [str(obj), str(tmp / "fix.o"), str(fixed), "-lcrypto"]
            _cc(["g++", "-o", str(tmp / program), *link])
        final = tmp / "out"
        final.mkdir()
        for program in ("libdkim_verify", "libdkim_sign"):
            (tmp / program).rename(final / program)
        try:
            final.rename(target)  # atomic; a parallel build that won is as good
        except OSError:
            if not all(os.access(p, os.X_OK) for p in binaries):
                raise
    return binaries


_LINE = re.compile(r"^sig (\d+) (-?\d+) (\S) (\S+)$")


def libdkim_verify_details(message: bytes, keytable: KeyTable) -> LibdkimReport:
    """Everything libdkim says about `message` (LF line endings become CRLF:
    libdkim 1.0.21 splits header fields at CRLF only)."""
    binaries = build_libdkim()
    with workdir("libdkim") as tmp:
        keys = write_keytable(keytable, tmp / "keys.dns")
        done = run([str(binaries.verify), str(keys), "-"], peer=PEER, stdin=to_crlf(message))
    raw = done.stdout.decode("utf-8", "replace")
    fields: dict[str, str] = {}
    sigs = []
    for line in raw.splitlines():
        match = _LINE.match(line)
        if match:
            code = int(match.group(2))
            domain = match.group(4)
            sigs.append(LibdkimSignature(code, letter(code), "" if domain == "-" else domain))
        else:
            key, _, value = line.partition(" ")
            fields[key] = value
    try:
        return LibdkimReport(
            overall=int(fields["overall"]),
            process=int(fields["process"]),
            signatures=tuple(sigs),
            version=fields.get("version", ""),
            raw=raw,
        )
    except (KeyError, ValueError) as exc:
        raise PeerError(f"{PEER}: unreadable output {raw!r}") from exc


def libdkim_verify(message: bytes, keytable: KeyTable) -> LibdkimResult:
    """(DKIMVerifyResults() code, [the seeds' letter of each signature])."""
    report = libdkim_verify_details(message, keytable)
    return LibdkimResult(report.overall, report.letters)


def libdkim_sign(
    message: bytes,
    key_path: str | os.PathLike[str],
    selector: str,
    domain: str,
    *,
    canon: str = "relaxed/relaxed",
    algorithm: str = "rsa-sha256",
    length: bool = False,
    timestamp: bool = True,
    identity: str | None = None,
    required_headers: tuple[str, ...] = (),
) -> bytes:
    """`message` with libdkim's DKIM-Signature on top (message's line ending),
    signed as the seeds' qmail-remote did (DKIMSignGetSig2)."""
    hashes = {"rsa-sha256": "sha256", "rsa-sha1": "sha1"}
    if algorithm not in hashes:
        raise PeerUnsupported(f"libdkim {FIXED_VERSION} signs only rsa-sha1/rsa-sha256")
    binaries = build_libdkim()
    argv = [str(binaries.sign), "-c", canon, "-a", hashes[algorithm]]
    if length:
        argv.append("-l")
    if timestamp:
        argv.append("-t")
    if identity:
        argv += ["-i", identity]
    if required_headers:
        argv += ["-r", ":".join(required_headers)]
    argv += [str(Path(key_path)), selector, domain, "-"]
    done = run(argv, peer=PEER, stdin=to_crlf(message), ok=(0, 1))
    if done.returncode == 1:
        raise PeerRefused(PEER, done.stderr.decode("utf-8", "replace").strip())
    return prepend_field(message, done.stdout)
