"""What every peer wrapper shares: errors, verdicts, key tables, running tools."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Compiled helpers live here (git-ignored); PEERS_BIN moves them (e.g. to a
# pytest tmp dir on a read-only checkout).
BIN_DIR = Path(os.environ.get("PEERS_BIN", HERE / "bin"))
TIMEOUT = 60  # seconds for one peer run; a hung peer is a failed test, not a hung run

KeyTable = Mapping[str, str]
"""`selector._domainkey.domain` → TXT value (character-strings joined), with
the special values of shared/testdata/README.md: "NXDOMAIN" (no such name),
"~~text~~" (a DNS error such as SERVFAIL: temporary), '""' (one empty string).
A name not in the table does not exist."""


class PeerMissing(RuntimeError):
    """The peer is not installed here; tests turn this into pytest.skip(reason)."""


class PeerUnsupported(PeerMissing):
    """The peer is installed but cannot do what was asked (ed25519 in Debian's
    Mail::DKIM, a DNS temporary failure in OpenDKIM's key file, …); skip too."""


class PeerError(RuntimeError):
    """The peer ran and failed in a way that is not a verdict (a crash, bad output)."""


class PeerRefused(PeerError):
    """The peer declined to sign (bad key, no From: …); `.reason` says why."""

    def __init__(self, peer: str, reason: str) -> None:
        super().__init__(f"{peer} refused: {reason}")
        self.peer = peer
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SignatureVerdict:
    """One DKIM-Signature as a peer judged it, in header order."""

    result: str  # the peer's own word (Mail::DKIM's "invalid", dkimpy's pass/fail, …)
    word: str  # the RFC 8601 word it amounts to: pass fail neutral policy temperror permerror
    details: str = ""
    domain: str = ""
    selector: str = ""
    algorithm: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    """A peer's verification of a whole message."""

    peer: str
    word: str  # the message's RFC 8601 word: pass if any signature passes, none if none
    signatures: tuple[SignatureVerdict, ...]
    details: str = ""
    raw: str = ""  # the peer's output, for failure messages

    @property
    def words(self) -> list[str]:
        return [sig.word for sig in self.signatures]

    def by_selector(self, selector: str) -> SignatureVerdict:
        for sig in self.signatures:
            if sig.selector == selector:
                return sig
        raise KeyError(f"{self.peer}: no signature with s={selector}: {self.raw}")


def message_word(signatures: Sequence[SignatureVerdict]) -> str:
    """Best of the signatures' words (RFC 6376 §6.1: one pass is enough)."""
    if not signatures:
        return "none"
    order = ("pass", "fail", "policy", "neutral", "temperror", "permerror")
    words = {sig.word for sig in signatures}
    for word in order:
        if word in words:
            return word
    return signatures[0].word


def is_tempfail(value: str) -> bool:
    return len(value) >= 4 and value.startswith("~~") and value.endswith("~~")


def load_keytable(path: str | os.PathLike[str]) -> dict[str, str]:
    """A key table file (`NAME  VALUE` lines, `#`/`;` comments) as a dict."""
    table: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        name, *rest = re.split(r"\s+", stripped, maxsplit=1)
        table[name.lower().rstrip(".")] = rest[0] if rest else ""
    return table


def write_keytable(table: KeyTable, path: str | os.PathLike[str]) -> Path:
    """Write `table` in key-table format (what libdkim_verify and dkim_verify.pl read)."""
    lines = []
    for name, value in table.items():
        if "\n" in value or "\r" in value:
            raise ValueError(f"key table value for {name} spans lines")
        lines.append(f"{name.lower().rstrip('.')} {value}\n")
    target = Path(path)
    target.write_text("".join(lines), encoding="utf-8")
    return target


def to_crlf(message: bytes) -> bytes:
    """Bare LFs become CRLF (what every peer wants on input; shared/testdata's
    messages are mostly LF-only)."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", message)


def linesep_of(message: bytes) -> bytes:
    end = message.find(b"\n")
    return b"\r\n" if end > 0 and message[end - 1 : end] == b"\r" else b"\n"


def prepend_field(message: bytes, field: bytes) -> bytes:
    """Put a header field on top of `message`, in the message's line ending.
    `field` may be folded with CRLF or LF and may lack its final line ending."""
    sep = linesep_of(message)
    lines = field.replace(b"\r\n", b"\n").rstrip(b"\n").split(b"\n")
    return sep.join(lines) + sep + message


_SIG_NAME = re.compile(rb"(?:^|;)\s*([sd])\s*=\s*([^;\s]+)")


def signature_key_names(message: bytes) -> list[str]:
    """`s._domainkey.d` for each DKIM-Signature (a rough parse, for peers that
    need to know in advance which names will be asked for)."""
    head = to_crlf(message).split(b"\r\n\r\n", 1)[0]
    fields = re.split(rb"\r\n(?![ \t])", head)
    names = []
    for raw in fields:
        name, _, value = raw.partition(b":")
        if name.strip().lower() != b"dkim-signature":
            continue
        compact = re.sub(rb"\s+", b"", value)
        tags: dict[bytes, bytes] = {m[1]: m[2] for m in _SIG_NAME.finditer(compact)}
        if b"s" in tags and b"d" in tags:
            names.append(f"{tags[b's'].decode()}._domainkey.{tags[b'd'].decode()}".lower())
    return names


def need(program: str, package: str) -> str:
    """The path of `program`, or PeerMissing naming the Debian package."""
    path = shutil.which(program)
    if path is None:
        raise PeerMissing(f"{program} not found (Debian package {package})")
    return path


def run(
    argv: Sequence[str],
    *,
    peer: str,
    stdin: bytes | None = None,
    ok: tuple[int, ...] = (0,),
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a peer; PeerError (with its stderr) on an unexpected exit status."""
    try:
        done = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
            env=dict(env) if env is not None else None,
        )
    except FileNotFoundError as exc:
        raise PeerMissing(f"{peer}: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise PeerError(f"{peer}: no answer in {TIMEOUT} s: {' '.join(argv)}") from exc
    if done.returncode not in ok:
        err = done.stderr.decode("utf-8", "replace").strip()
        raise PeerError(f"{peer}: exit {done.returncode}: {err}")
    return done


@contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    """A private temporary directory (mode 0700: OpenDKIM checks key paths)."""
    with tempfile.TemporaryDirectory(prefix=f"peers-{prefix}-") as name:
        yield Path(name)


@contextmanager
def skip_missing() -> Iterator[None]:
    """Inside a test: a missing or unable peer skips the test, with the reason."""
    import pytest

    try:
        yield
    except PeerMissing as exc:
        pytest.skip(str(exc))
