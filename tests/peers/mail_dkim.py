"""Mail::DKIM (Debian libmail-dkim-perl) through tests/peers/dkim_*.pl.

Keys: by default the key table is written to a file that dkim_verify.pl
serves by replacing Mail::DKIM::DNS::query (as Mail::DKIM's own test suite
does with FAKE_DNS.dat): every lookup and every special value (NXDOMAIN,
~~SERVFAIL~~, "") is answered, no server needed.  With `dns_port=` the table
is ignored and a Net::DNS::Resolver asks 127.0.0.1:PORT instead (the real DNS
path, for a loopback test DNS server).

Debian 12's Mail::DKIM 1.20230212 has no ed25519: it reports such a
signature "invalid (unsupported algorithm ed25519-sha256)" and will not sign
with it (PeerUnsupported).  It reports a DNS error as "invalid (public key:
DNS error: …)": the word here is then temperror.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from peers._base import (
    HERE,
    KeyTable,
    PeerError,
    PeerMissing,
    PeerRefused,
    PeerUnsupported,
    SignatureVerdict,
    Verdict,
    message_word,
    prepend_field,
    run,
    to_crlf,
    workdir,
    write_keytable,
)

PEER = "Mail::DKIM"
_checked: list[bool] = []


def _perl() -> str:
    perl = shutil.which("perl")
    if perl is None:
        raise PeerMissing("perl not found (Debian package perl)")
    if not _checked:
        done = run(
            [perl, "-MMail::DKIM", "-MNet::DNS", "-MJSON::PP", "-e", "print $Mail::DKIM::VERSION"],
            peer=PEER,
            ok=(0, 2),
        )
        if done.returncode != 0:
            raise PeerMissing(
                "Mail::DKIM or Net::DNS not installed (Debian libmail-dkim-perl libnet-dns-perl)"
            )
        _checked.append(True)
    return perl


def mail_dkim_version() -> str:
    perl = _perl()
    return run(
        [perl, "-MMail::DKIM", "-e", "print $Mail::DKIM::VERSION"], peer=PEER
    ).stdout.decode()


def _word(result: str, detail: str) -> str:
    if result in ("pass", "fail", "none", "temperror", "neutral", "policy"):
        return result
    if result == "softfail":
        return "fail"
    if "DNS error" in detail or "timed out" in detail or "timeout" in detail:
        return "temperror"
    return "permerror"  # "invalid": the signature or the key record cannot be used


def mail_dkim_verify(
    message: bytes, keytable: KeyTable | None = None, *, dns_port: int | None = None
) -> Verdict:
    """Mail::DKIM's verdict on each DKIM-Signature of `message` (LF or CRLF)."""
    perl = _perl()
    with workdir("maildkim") as tmp:
        msg = tmp / "message.eml"
        msg.write_bytes(message)
        argv = [perl, str(HERE / "dkim_verify.pl")]
        if dns_port is not None:
            argv += ["--dns-port", str(dns_port)]
        else:
            argv += ["--keytable", str(write_keytable(keytable or {}, tmp / "keys.dns"))]
        done = run([*argv, str(msg)], peer=PEER)
    raw = done.stdout.decode("utf-8", "replace")
    try:
        out = json.loads(raw)
    except ValueError as exc:
        raise PeerError(f"{PEER}: unreadable output {raw!r}") from exc
    sigs = tuple(
        SignatureVerdict(
            result=s["result"],
            word=_word(s["result"], s["detail"]),
            details=s["detail"],
            domain=s["domain"],
            selector=s["selector"],
            algorithm=s["algorithm"],
        )
        for s in out["signatures"]
    )
    return Verdict(PEER, message_word(sigs), sigs, details=out["detail"], raw=raw)


def mail_dkim_sign(  # noqa: PLR0917 - positional as the interop tests call it
    message: bytes,
    key_path: str | os.PathLike[str],
    selector: str,
    domain: str,
    method: str = "relaxed",
    algorithm: str = "rsa-sha256",
    *,
    headers: tuple[str, ...] | None = None,
    identity: str | None = None,
    timestamp: int | None = None,
) -> bytes:
    """`message` with a DKIM-Signature from Mail::DKIM on top (in the
    message's own line ending).  `method` is Mail::DKIM's c=: "relaxed" is
    relaxed/simple, as in RFC 6376; say "relaxed/relaxed" for both."""
    if not algorithm.startswith("rsa-"):
        raise PeerUnsupported(f"{PEER} {mail_dkim_version()} signs only rsa-sha1/rsa-sha256")
    perl = _perl()
    argv = [
        perl,
        str(HERE / "dkim_sign.pl"),
        "--key",
        str(Path(key_path)),
        "--selector",
        selector,
        "--domain",
        domain,
        "--method",
        method,
        "--algorithm",
        algorithm,
    ]
    if headers is not None:
        argv += ["--headers", ":".join(headers)]
    if identity is not None:
        argv += ["--identity", identity]
    if timestamp is not None:
        argv += ["--timestamp", str(timestamp)]
    done = run([*argv, "-"], peer=PEER, stdin=to_crlf(message), ok=(0, 1))
    if done.returncode == 1:
        raise PeerRefused(PEER, done.stderr.decode("utf-8", "replace").strip())
    return prepend_field(message, done.stdout)
