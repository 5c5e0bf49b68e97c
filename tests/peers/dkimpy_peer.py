"""dkimpy (PyPI `dkimpy`, in the test extras), in process.

Keys: `dkim.DKIM(msg).verify(idx, dnsfunc=…)` for every signature, with a
dnsfunc that answers from the key table (dkimpy asks for
"s._domainkey.d." with the final dot; NXDOMAIN and a missing name answer
nothing, "~~…~~" raises dkim.DnsTimeoutError, which dkimpy takes as a
temporary failure).  Ed25519 needs PyNaCl (also in the test extras).

dkimpy's verify() answers True/False and logs why: the logged reason is
kept as the details and decides the word (a key problem is permerror, a
DNS time-out temperror, a mismatch fail).  A malformed signature raises a
DKIMException: permerror, except a body hash mismatch (fail).  Any other
exception (dkimpy 1.1.8 lets PyNaCl's ValueError out when an RSA b= meets an
Ed25519 key) is result "crash", word permerror.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from peers._base import (
    KeyTable,
    PeerMissing,
    PeerRefused,
    SignatureVerdict,
    Verdict,
    is_tempfail,
    message_word,
    prepend_field,
    to_crlf,
)

PEER = "dkimpy"


def _dkim() -> Any:
    try:
        import dkim
    except ImportError as exc:  # pragma: no cover - dkimpy is a test dependency
        raise PeerMissing("dkimpy not installed (pip install dkimpy)") from exc
    return dkim


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.INFO:
            self.messages.append(record.getMessage())


def dnsfunc_for(keytable: KeyTable) -> Any:
    """A dkimpy dnsfunc answering from `keytable`."""
    dkim = _dkim()
    table = {name.lower().rstrip("."): value for name, value in keytable.items()}

    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
        key = (name.decode("ascii", "replace") if isinstance(name, bytes) else name).lower()
        value = table.get(key.rstrip("."))
        if value is None or value == "NXDOMAIN":
            return None
        if is_tempfail(value):
            raise dkim.DnsTimeoutError(value.strip("~"))
        return b"" if value == '""' else value.encode("utf-8")

    return dnsfunc


def _tag(raw: bytes, tag: bytes) -> str:
    for part in raw.split(b";"):
        name, _, value = part.partition(b"=")
        if name.strip() == tag:
            return b"".join(value.split()).decode("utf-8", "replace")
    return ""


def dkimpy_verify(message: bytes, keytable: KeyTable, *, minkey: int = 1024) -> Verdict:
    """dkimpy's verdict on each DKIM-Signature of `message` (LF or CRLF)."""
    dkim = _dkim()
    dnsfunc = dnsfunc_for(keytable)
    data = to_crlf(message)
    logger = logging.Logger("peers.dkimpy")
    collect = _Collect()
    logger.addHandler(collect)
    checker = dkim.DKIM(data, logger=logger, minkey=minkey)
    fields = [value for name, value in checker.headers if name.lower() == b"dkim-signature"]
    sigs = []
    for idx, field in enumerate(fields):
        collect.messages.clear()
        try:
            ok = checker.verify(idx, dnsfunc=dnsfunc)
        except dkim.DKIMException as exc:
            text = str(exc)
            word = "fail" if "body hash mismatch" in text else "permerror"
            result = type(exc).__name__
            details = text
        except Exception as exc:  # dkimpy leaks e.g. PyNaCl's ValueError
            word, result = "permerror", "crash"
            details = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
        else:
            details = "; ".join(collect.messages)
            if ok:
                word = result = "pass"
            elif "DnsTimeoutError" in details:
                word, result = "temperror", "fail"
            elif details:
                word, result = "permerror", "fail"
            else:
                word = result = "fail"
        sigs.append(
            SignatureVerdict(
                result=result,
                word=word,
                details=details,
                domain=_tag(field, b"d"),
                selector=_tag(field, b"s"),
                algorithm=_tag(field, b"a"),
            )
        )
    return Verdict(PEER, message_word(sigs), tuple(sigs), raw=repr(sigs))


def _ed25519_seed(pem: bytes) -> bytes:
    """dkimpy signs ed25519 with the base64 32-byte seed (RFC 8463 A.1 form)."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    text = pem.strip()
    if b"-----BEGIN" not in text:
        return text  # already the base64 seed
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise PeerRefused(PEER, "not an Ed25519 private key")
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(raw)


def dkimpy_sign(
    message: bytes,
    key_path: str | os.PathLike[str],
    selector: str,
    domain: str,
    *,
    canon: str = "relaxed/relaxed",
    algorithm: str = "rsa-sha256",
    headers: tuple[str, ...] | None = None,
    identity: str | None = None,
    length: bool = False,
) -> bytes:
    """`message` with dkimpy's DKIM-Signature on top (message's line ending).
    The key is a PEM file (RSA; Ed25519 as PKCS#8 PEM or the base64 seed)."""
    dkim = _dkim()
    key = Path(key_path).read_bytes()
    if algorithm.startswith("ed25519"):
        key = _ed25519_seed(key)
    header, _, body = canon.partition("/")
    signer = dkim.DKIM(to_crlf(message))
    try:
        field = signer.sign(
            selector.encode(),
            domain.encode(),
            key,
            signature_algorithm=algorithm.encode(),
            identity=identity.encode() if identity else None,
            canonicalize=(header.encode(), (body or "simple").encode()),
            include_headers=[h.encode() for h in headers] if headers is not None else None,
            length=length,
        )
    except dkim.DKIMException as exc:
        raise PeerRefused(PEER, str(exc)) from exc
    return prepend_field(message, field)


def dkimpy_version() -> str:
    from importlib.metadata import version

    return version("dkimpy")
