"""OpenDKIM (Debian opendkim) through `opendkim -t FILE -x CONF` in test mode.

Keys: `TestPublicKeys FILE` (opendkim.conf(5)), a file of
`selector._domainkey.domain TXT-value` lines that libopendkim reads instead
of DNS (DKIM_QUERY_FILE).  NXDOMAIN entries are left out (a missing name is
"key not found", as NXDOMAIN is); '""' becomes an empty value.  The file has
no way to say "temporary DNS failure", so a table whose ~~SERVFAIL~~ entry a
signature of the message asks for raises PeerUnsupported.  With `dns_port=`
the table is ignored and OpenDKIM's resolver (libunbound, through
`ResolverConfiguration` and a forward-zone) asks 127.0.0.1:PORT: the real
DNS path.  OpenDKIM writes no Authentication-Results when a key lookup
fails for now (the filter answers 451): the verdict is then temperror for the
one signature its log line names.

Verdicts: with -vv, test mode prints the header fields the filter would add
("### INSHEADER: … hname='Authentication-Results' hvalue='…'"); each dkim=
clause of that Authentication-Results is one signature, in header order.
The exit status is 0 whatever the verdict (the default On-* actions accept),
70 (EX_SOFTWARE) when the filter gave up at the end of the header because no
signature was usable (e.g. d= "legitimate.com(.attacker.com"): permerror here.
OpenDKIM 2.11's words differ from RFC 8601 in places: a missing or revoked
key is "fail"; an empty TXT record and the damaged p= of dkimpy's
keys-corrupt-rsa.dns are "temperror" (p=AAAA is permerror).

Signing works in test mode too: Mode s with a KeyTable naming the key file
and a `refile:` SigningTable of "*" (so any From: domain is signed with the
requested d=; `Domain`/`Selector`/`KeyFile` would sign only a From: in
Domain).  RequireSafeKeys is off because temporary files live under /tmp,
which is world-writable; the signature is the INSHEADER DKIM-Signature.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from peers._base import (
    KeyTable,
    PeerError,
    PeerUnsupported,
    SignatureVerdict,
    Verdict,
    is_tempfail,
    message_word,
    need,
    prepend_field,
    run,
    signature_key_names,
    to_crlf,
    workdir,
)

PEER = "OpenDKIM"
_INSHEADER = re.compile(rb"^### INSHEADER: idx=\d+ hname='([^']*)' hvalue='(.*?)'$", re.M | re.S)
_CLAUSE = re.compile(r"dkim=(\w+)(.*)", re.S)
_REASON = re.compile(r'reason="([^"]*)"')
_PROP = re.compile(r"\bheader\.([a-z])=(\S+)")
_FAILED = re.compile(
    r"verification \(s=(?P<s>[^,\s]+),? d=(?P<d>[^,\s]+),[^)]*\) failed: (?P<reason>.*)"
)
_WORDS = ("pass", "fail", "neutral", "policy", "temperror", "permerror", "none")


# Debian's opendkim resolves through libunbound: ResolverConfiguration names an
# unbound.conf, whose forward-zone sends every query to the loopback server.
_UNBOUND = """server:
    do-not-query-localhost: no
    module-config: "iterator"
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@{port}
"""


def _opendkim() -> str:
    return need("opendkim", "opendkim")


def _inserted(stdout: bytes, name: str) -> list[str]:
    return [
        value.decode("utf-8", "replace")
        for hname, value in _INSHEADER.findall(stdout)
        if hname.decode().lower() == name.lower()
    ]


def _parse_authres(value: str) -> tuple[SignatureVerdict, ...]:
    _, _, body = value.partition(";")  # drop the authserv-id
    sigs = []
    for clause in body.split(";"):  # OpenDKIM's reasons hold no ";"
        match = _CLAUSE.fullmatch(clause.strip())
        if match is None:
            continue  # dkim-atps=, or nothing
        word, rest = match.groups()
        reason = _REASON.search(rest)
        props = dict(_PROP.findall(rest))
        sigs.append(
            SignatureVerdict(
                result=word,
                word=word if word in _WORDS else "permerror",
                details=reason.group(1) if reason else " ".join(rest.split()),
                domain=props.get("d", ""),
                selector=props.get("s", ""),
                algorithm=props.get("a", ""),
            )
        )
    return tuple(sigs)


def opendkim_verify(
    message: bytes, keytable: KeyTable | None = None, *, dns_port: int | None = None
) -> Verdict:
    """OpenDKIM's verdict on each DKIM-Signature of `message` (LF or CRLF).
    With `dns_port`, keys are asked of a DNS server on 127.0.0.1:PORT instead."""
    opendkim = _opendkim()
    wanted = set(signature_key_names(message))
    lines = []
    for name, value in (keytable or {}).items():
        key = name.lower().rstrip(".")
        if value == "NXDOMAIN":
            continue
        if is_tempfail(value):
            if key in wanted:
                raise PeerUnsupported(
                    f"{PEER}: TestPublicKeys cannot express a temporary DNS failure ({key})"
                )
            continue
        empty = value == '""'
        lines.append(f"{key} {'' if empty else value}\n")
    with workdir("opendkim") as tmp:
        keys = tmp / "keys.txt"
        keys.write_text("".join(lines), encoding="utf-8")
        conf = tmp / "opendkim.conf"
        if dns_port is None:
            source = f"TestPublicKeys {keys}"
        else:
            unbound = tmp / "unbound.conf"
            unbound.write_text(_UNBOUND.format(port=dns_port), encoding="utf-8")
            source = f"ResolverConfiguration {unbound}"
        settings = ["Mode v", "Syslog no", "AuthservID peers.test", source]
        conf.write_text("\n".join(settings) + "\n", encoding="utf-8")
        msg = tmp / "message.eml"
        msg.write_bytes(to_crlf(message))
        done = run([opendkim, "-x", str(conf), "-vv", "-t", str(msg)], peer=PEER, ok=(0, 70))
    raw = done.stdout.decode("utf-8", "replace") + done.stderr.decode("utf-8", "replace")
    results = _inserted(done.stdout, "Authentication-Results")
    if not results:
        if "message not signed" in raw:
            return Verdict(PEER, "none", (), details="message not signed", raw=raw)
        if done.returncode == 70 and "mlfi_eoh() returned SMFIS_ACCEPT" in raw:
            # No usable signature at the end of the header (dkim_eoh() gave up,
            # e.g. on a d= that is not a domain): the filter lets the message
            # through with no Authentication-Results, test mode exits EX_SOFTWARE.
            reason = "accepted at end of header, no verdict (signature unusable)"
            sigs = tuple(
                SignatureVerdict(result="none", word="permerror", details=reason)
                for _ in range(max(1, len(signature_key_names(message))))
            )
            return Verdict(PEER, "permerror", sigs, details=reason, raw=raw)
        failed = _FAILED.search(raw)
        if "SETREPLY: rcode='451'" in raw or (failed and "DNS" in failed["reason"]):
            # A key lookup that failed for now: the filter answers 451 (its
            # default On-DNSError tempfail; "accept" passes the message with no
            # header either), so only the signature it names gets a verdict.
            reason = failed["reason"] if failed else "key retrieval failed (451)"
            sig = SignatureVerdict(
                result="tempfail",
                word="temperror",
                details=reason,
                domain=failed["d"] if failed else "",
                selector=failed["s"] if failed else "",
            )
            return Verdict(PEER, "temperror", (sig,), details=reason, raw=raw)
        raise PeerError(f"{PEER}: no Authentication-Results in {raw!r}")
    sigs = _parse_authres(results[0])
    return Verdict(PEER, message_word(sigs), sigs, details=results[0], raw=raw)


def opendkim_sign(
    message: bytes,
    key_path: str | os.PathLike[str],
    selector: str,
    domain: str,
    *,
    canon: str = "relaxed/relaxed",
    algorithm: str = "rsa-sha256",
    oversign: tuple[str, ...] = (),
) -> bytes:
    """`message` with OpenDKIM's DKIM-Signature on top (message's line ending).
    The key is a PEM file (RSA, or Ed25519 PKCS#8 for ed25519-sha256)."""
    opendkim = _opendkim()
    with workdir("opendkim-sign") as tmp:
        keytable = tmp / "keytable"
        keytable.write_text(f"k1 {domain}:{selector}:{Path(key_path).resolve()}\n", "utf-8")
        signing = tmp / "signingtable"
        signing.write_text("* k1\n", "utf-8")
        conf = tmp / "opendkim.conf"
        settings = [
            "Mode s",
            "Syslog no",
            "RequireSafeKeys no",
            f"KeyTable {keytable}",
            f"SigningTable refile:{signing}",
            f"Canonicalization {canon}",
            f"SignatureAlgorithm {algorithm}",
        ]
        if oversign:
            settings.append(f"OversignHeaders {','.join(oversign)}")
        conf.write_text("\n".join(settings) + "\n", "utf-8")
        msg = tmp / "message.eml"
        msg.write_bytes(to_crlf(message))
        done = run([opendkim, "-x", str(conf), "-vv", "-t", str(msg)], peer=PEER)
    fields = _inserted(done.stdout, "DKIM-Signature")
    if not fields:
        err = (done.stdout + done.stderr).decode("utf-8", "replace")
        raise PeerError(f"{PEER}: did not sign: {err}")
    return prepend_field(message, b"DKIM-Signature: " + fields[0].encode("utf-8"))


def opendkim_version() -> str:
    out = run([_opendkim(), "-V"], peer=PEER).stdout.decode()
    first = out.splitlines()[0] if out else ""
    return first.rsplit(" ", 1)[-1]


__all__ = ["opendkim_sign", "opendkim_verify", "opendkim_version"]
