"""DKIM signing (RFC 6376 §5, RFC 8463).

The result is the DKIM-Signature field to put on top of the message, with
the message's own line ending.  Signatures are deterministic for RSA PKCS#1
v1.5 and Ed25519, which the RFC 8463 golden test relies on.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives.asymmetric import ed25519, padding

from quailmail.auth.dkim.canonicalize import BODY_CANON, Hasher, header_hash, select_fields
from quailmail.auth.dkim.signature import ALGORITHMS, CANONS
from quailmail.auth.dkim.verify import _PREHASHED
from quailmail.auth.keys import PrivateKey
from quailmail.auth.message import Message, sender_domain

# Signed when present (RFC 6376 §5.4.1's list, plus the list headers).
DEFAULT_HEADERS = (
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
    "mime-version", "content-type", "content-transfer-encoding", "content-id",
    "content-description", "resent-date", "resent-from", "resent-sender", "resent-to",
    "resent-cc", "resent-message-id", "in-reply-to", "references", "list-id",
    "list-help", "list-unsubscribe", "list-subscribe", "list-post", "list-owner",
    "list-archive",
)  # fmt: skip
# Listed once more than present, so that an added instance breaks the
# signature (§8.15): From, which every receiver shows.
OVERSIGN = ("from",)
_WIDTH = 76


class SignError(ValueError):
    """The message or the request cannot be signed; one line saying why."""


def _pick_headers(message: Message, wanted: tuple[str, ...] | None) -> list[str]:
    if wanted is not None:
        return [h.strip().lower() for h in wanted if h.strip()]
    present = [h.lname for h in message.headers]
    names = [name for name in reversed(present) if name in DEFAULT_HEADERS]
    names.reverse()  # top to bottom, as the fields appear
    names.extend(OVERSIGN)
    return names


def _fold_list(prefix: str, items: list[str], sep: str) -> list[str]:
    """`prefix` + items joined by `sep`, cut into lines at separators."""
    lines: list[str] = []
    line = prefix
    for i, item in enumerate(items):
        piece = item + (sep if i < len(items) - 1 else "")
        if len(line) + len(piece) > _WIDTH and line.strip():
            lines.append(line)
            line = " "
        line += piece
    lines.append(line)
    return lines


def sign_dkim(
    message: Message,
    key: PrivateKey,
    *,
    selector: str,
    domain: str | None = None,
    algorithm: str | None = None,
    canon: str = "relaxed/relaxed",
    headers: tuple[str, ...] | None = None,
    identity: str | None = None,
    body_length: bool = False,
    timestamp: int | None = None,
    expiration: int | None = None,
) -> bytes:
    """The DKIM-Signature field (with line ending) for `message`."""
    if algorithm is None:
        algorithm = "ed25519-sha256" if key.type == "ed25519" else "rsa-sha256"
    if algorithm not in ALGORITHMS:
        raise SignError(f"unknown algorithm {algorithm}")
    key_type, hash_name = ALGORITHMS[algorithm]
    if key_type != key.type:
        raise SignError(f"a {key.type} key cannot sign {algorithm}")
    parts = canon.lower().split("/")
    if len(parts) > 2 or any(p not in CANONS for p in parts):
        raise SignError(f"unknown canonicalization {canon}")
    header_canon, body_canon = parts[0], parts[1] if len(parts) > 1 else "simple"
    if domain is None:
        domain = sender_domain(message.headers)
        if domain is None:
            raise SignError("no From: or Sender: address to take the domain from")
    domain = domain.lower().rstrip(".")
    names = _pick_headers(message, headers)
    if "from" not in names:
        raise SignError("the From header must be signed (RFC 6376 §5.4)")

    # Body hash (§3.7), streamed; counted too when l= is asked for (never by default).
    body_hasher = hashlib.new(hash_name)
    counter = _Counting(body_hasher)
    body_canonicalizer = BODY_CANON[body_canon](counter if body_length else body_hasher, None)
    for chunk in message.crlf_body():
        body_canonicalizer.update(chunk)
    body_canonicalizer.finish()
    length = counter.count
    bh = base64.b64encode(body_hasher.digest()).decode("ascii")

    tags = [f"v=1; a={algorithm}; c={header_canon}/{body_canon}; d={domain}; s={selector};"]
    extra = []
    if identity:
        extra.append(f"i={identity};")
    if timestamp is not None:
        extra.append(f"t={timestamp};")
    if expiration is not None:
        extra.append(f"x={expiration};")
    if body_length:
        extra.append(f"l={length};")
    lines = [f"DKIM-Signature: {tags[0]}"]
    if extra:
        lines.append(" " + " ".join(extra))
    lines.extend(_fold_list(" h=", names, ":"))
    lines[-1] += ";"
    lines.append(f" bh={bh};")
    lines.append(" b=")
    unsigned = "\r\n".join(lines).encode("utf-8")

    fields = select_fields(names, message.fields_by_name())
    digest = header_hash(hash_name, header_canon, fields, unsigned)

    if isinstance(key.key, ed25519.Ed25519PrivateKey):
        signature = key.key.sign(digest)
    else:
        signature = key.key.sign(digest, padding.PKCS1v15(), _PREHASHED[hash_name])
    b = base64.b64encode(signature).decode("ascii")
    first = _WIDTH - 4
    pieces = [b[:first]] + [b[i : i + _WIDTH - 1] for i in range(first, len(b), _WIDTH - 1)]
    field = unsigned + "\r\n ".join(pieces).encode("ascii") + b"\r\n"
    if message.linesep != b"\r\n":
        field = field.replace(b"\r\n", message.linesep)
    return field


class _Counting:
    """Passes data on to a hash, counting it (for l=)."""

    __slots__ = ("count", "hasher")

    def __init__(self, hasher: Hasher) -> None:
        self.hasher = hasher
        self.count = 0

    def update(self, data: bytes) -> None:
        self.count += len(data)
        self.hasher.update(data)
