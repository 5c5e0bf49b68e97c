"""Independent DKIM implementations for the interop tests, behind one API.

Every function takes the message as bytes (LF or CRLF line endings; each
peer gets CRLF) and either a key table (`selector._domainkey.domain` → TXT
value, special values as in shared/testdata/README.md: "NXDOMAIN",
"~~SERVFAIL~~", '""') or a private key file + selector + domain.

Verify → `Verdict` (`.word` for the message, `.signatures` in header order,
each a `SignatureVerdict` with the peer's own `.result`, the RFC 8601 `.word`
it amounts to, `.details`, `.domain`, `.selector`, `.algorithm`):

    mail_dkim_verify(msg, keytable)            Mail::DKIM (perl), or dns_port=PORT
    opendkim_verify(msg, keytable)             opendkim -t with TestPublicKeys, or dns_port=PORT
    dkimpy_verify(msg, keytable)               dkimpy in process
    libdkim_verify(msg, keytable)              → (overall code, [letters]): the seeds' letters
    libdkim_verify_details(msg, keytable)      → LibdkimReport (codes, process status, …)

Sign → the message with the peer's DKIM-Signature on top, in the message's
own line ending:

    mail_dkim_sign(msg, key_path, selector, domain, method="relaxed", algorithm="rsa-sha256")
    opendkim_sign(msg, key_path, selector, domain, canon=…, algorithm=…)
    dkimpy_sign(msg, key_path, selector, domain, canon=…, algorithm=…)
    libdkim_sign(msg, key_path, selector, domain, canon=…)

A peer that is not installed raises `PeerMissing`; one that cannot do what
was asked (ed25519 in Debian's Mail::DKIM and libdkim, a temporary DNS
failure in OpenDKIM's key file) raises `PeerUnsupported`, a subclass: tests
turn both into pytest.skip(str(exc)), e.g. `with skip_missing(): ...`.
`PeerError` is a peer that broke, `PeerRefused` one that declined to sign.
Each module's docstring says how its peer is given the keys and what it is
known to do differently.
"""

from pathlib import Path

from peers._base import (
    KeyTable,
    PeerError,
    PeerMissing,
    PeerRefused,
    PeerUnsupported,
    SignatureVerdict,
    Verdict,
    load_keytable,
    prepend_field,
    skip_missing,
    to_crlf,
    write_keytable,
)
from peers.dkimpy_peer import dkimpy_sign, dkimpy_verify, dkimpy_version, dnsfunc_for
from peers.libdkim import (
    LibdkimReport,
    LibdkimResult,
    LibdkimSignature,
    build_libdkim,
    letter,
    libdkim_sign,
    libdkim_verify,
    libdkim_verify_details,
)
from peers.mail_dkim import mail_dkim_sign, mail_dkim_verify, mail_dkim_version
from peers.opendkim import opendkim_sign, opendkim_verify, opendkim_version

SIGNERS = {
    "mail_dkim": mail_dkim_sign,
    "opendkim": opendkim_sign,
    "dkimpy": dkimpy_sign,
    "libdkim": libdkim_sign,
}


def sign_with(
    peer: str, message: bytes, key_path: Path, selector: str, domain: str, *, algorithm: str
) -> bytes:
    """`message` signed by the named peer (a key of `algorithm`'s type)."""
    return SIGNERS[peer](message, key_path, selector, domain, algorithm=algorithm)


__all__ = [
    "SIGNERS",
    "KeyTable",
    "LibdkimReport",
    "LibdkimResult",
    "LibdkimSignature",
    "PeerError",
    "PeerMissing",
    "PeerRefused",
    "PeerUnsupported",
    "SignatureVerdict",
    "Verdict",
    "build_libdkim",
    "dkimpy_sign",
    "dkimpy_verify",
    "dkimpy_version",
    "dnsfunc_for",
    "letter",
    "libdkim_sign",
    "libdkim_verify",
    "libdkim_verify_details",
    "load_keytable",
    "mail_dkim_sign",
    "mail_dkim_verify",
    "mail_dkim_version",
    "opendkim_sign",
    "opendkim_verify",
    "opendkim_version",
    "prepend_field",
    "sign_with",
    "skip_missing",
    "to_crlf",
    "write_keytable",
]
