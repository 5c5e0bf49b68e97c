"""DomainKeys signing (RFC 4870): the DomainKey-Signature field to put on top.

The signature covers the header fields already in the message (all of them,
or with `headers` only those named, listed in h=) and the body.  It does not
cover its own field, which is why the field goes above everything it signs.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric import padding, rsa

from quailmail.auth.domainkeys.canonicalize import PREHASHED_SHA1, digest
from quailmail.auth.domainkeys.names import is_dns_name, is_selector
from quailmail.auth.domainkeys.sender import sending_address
from quailmail.auth.domainkeys.signature import CANONS, Canon, format_signature
from quailmail.auth.domainkeys.status import DkProblem
from quailmail.auth.keys import PrivateKey
from quailmail.auth.message import Message

# RFC 5322 §3.6.8 field names, less ";" (it would end the h= tag).
_H_NAME = re.compile(r"[!-9<-~]+\Z")


class DomainKeysSigningError(ValueError):
    """The message cannot be signed as asked; the text is the reason, one line."""


def sign_domainkeys(
    message: Message,
    key: PrivateKey,
    *,
    selector: str,
    domain: str | None = None,
    canon: Canon = "simple",
    headers: Sequence[str] | None = None,
) -> bytes:
    """The complete DomainKey-Signature field line, ending in the message's own
    line separator, to prepend to `message`.

    `domain` defaults to the sending address's domain (Sender: if present,
    else From:), which is what qmail's dksign `%` stands for.  It is not
    checked against that address: a d= that is neither its domain nor a
    parent signs fine and verifies nowhere (SYNTAX here, "invalid" in
    Mail::DKIM).

    With `headers`, h= lists every field of the message whose name is in
    `headers`, once per occurrence and in message order, as Mail::DKIM's
    signer writes it; the field that holds the sending address is always
    included (verifiers, ours and Mail::DKIM's, require it signed).
    """
    if key.type != "rsa" or not isinstance(key.key, rsa.RSAPrivateKey):
        raise DomainKeysSigningError(f"DomainKeys signs only with RSA (a=rsa-sha1), not {key.type}")
    if canon not in CANONS:
        raise DomainKeysSigningError(f"unknown canonicalization {canon!r}: simple or nofws")
    if not is_selector(selector):
        raise DomainKeysSigningError(f"not a usable selector: {selector[:60]!r}")
    try:
        signer = sending_address(message.headers)
    except DkProblem as problem:
        raise DomainKeysSigningError(problem.reason) from None
    d = (domain if domain is not None else signer.domain).lower().removesuffix(".")
    if not is_dns_name(d):
        raise DomainKeysSigningError(f"not a usable signing domain: {d[:60]!r}")

    signed = message.headers
    names: list[str] | None = None
    if headers is not None:
        wanted = {name.lower() for name in headers} | {signer.field}
        signed = [header for header in message.headers if header.lname in wanted]
        names = [header.lname for header in signed]
        for name in names:
            if not _H_NAME.match(name):
                raise DomainKeysSigningError(f"header name {name[:40]!r} cannot be listed in h=")
    hashed = digest(signed, message.crlf_body(), canon)
    signature = key.key.sign(hashed, padding.PKCS1v15(), PREHASHED_SHA1)
    field = format_signature(
        canon=canon,
        domain=d,
        selector=selector,
        headers=names,
        b=base64.b64encode(signature).decode("ascii"),
    )
    return field.encode("ascii") + message.linesep
