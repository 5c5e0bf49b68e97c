"""Keys: parsing (cached), generation and the DNS record that publishes them.

Parsing a PEM RSA key with `cryptography`'s full validation costs milliseconds
(~35 ms for 2048 bits here), which per message would cap signing at a few
dozen a second; so private keys are parsed once per distinct content and
public keys once per distinct `p=` value.  Callers read the key file (this
package opens no files) and hand the bytes in; the cache is keyed by content,
so a replaced key file takes effect with no restart.
"""

from __future__ import annotations

import base64
import binascii
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal, TypeAlias

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

KeyType = Literal["rsa", "ed25519"]
PublicKey: TypeAlias = rsa.RSAPublicKey | ed25519.Ed25519PublicKey
PrivateKeyObject: TypeAlias = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

MIN_GENERATE_BITS = 1024  # RFC 8301 §3.2: signers MUST use at least 1024 bits
_CACHE_SIZE = 1024


class KeyProblem(ValueError):
    """A key that cannot be used; the text is the reason, one line."""


@dataclass(frozen=True, slots=True)
class PrivateKey:
    type: KeyType
    key: PrivateKeyObject

    @property
    def bits(self) -> int:
        return self.key.key_size if isinstance(self.key, rsa.RSAPrivateKey) else 256

    def public_record_value(self) -> str:
        """The p= value: SubjectPublicKeyInfo DER for RSA (RFC 6376 §3.6.1),
        the raw 32-byte key for Ed25519 (RFC 8463 §4), base64."""
        return base64.b64encode(public_key_bytes(self.key.public_key())).decode("ascii")


def public_key_bytes(public: PublicKey) -> bytes:
    if isinstance(public, rsa.RSAPublicKey):
        return public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


_private_cache: OrderedDict[bytes, PrivateKey] = OrderedDict()
_public_cache: OrderedDict[tuple[str, str], PublicKey] = OrderedDict()


def _remember(cache: OrderedDict, key: object, value: object) -> None:  # type: ignore[type-arg]
    cache[key] = value
    if len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)


def parse_private_key(data: bytes) -> PrivateKey:
    """A private key from PEM (PKCS#1 or PKCS#8), DER, or the base64 32-byte
    Ed25519 seed that RFC 8463 Appendix A.1 and dkimpy use.  Cached by content."""
    cached = _private_cache.get(data)
    if cached is not None:
        return cached
    key = _load_private(data)
    _remember(_private_cache, data, key)
    return key


def _load_private(data: bytes) -> PrivateKey:
    loaded: object
    stripped = data.strip()
    try:
        if stripped.startswith(b"-----BEGIN"):
            loaded = serialization.load_pem_private_key(stripped, password=None)
        elif len(stripped) in (43, 44) and b"\n" not in stripped:
            seed = base64.b64decode(stripped, validate=True)
            if len(seed) != 32:
                raise KeyProblem("an Ed25519 seed must be 32 bytes")
            loaded = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        else:
            loaded = serialization.load_der_private_key(data, password=None)
    except KeyProblem:
        raise
    except TypeError as exc:  # encrypted PEM
        raise KeyProblem(f"cannot use the key: {exc}") from None
    except (ValueError, UnsupportedAlgorithm, binascii.Error) as exc:
        raise KeyProblem(f"not a private key: {str(exc).splitlines()[0][:80]}") from None
    if isinstance(loaded, rsa.RSAPrivateKey):
        return PrivateKey("rsa", loaded)
    if isinstance(loaded, ed25519.Ed25519PrivateKey):
        return PrivateKey("ed25519", loaded)
    raise KeyProblem(f"unsupported key type {type(loaded).__name__}")


def parse_public_key(key_type: str, p: str) -> PublicKey:
    """The key of a record's p= (FWS already removed).  RSA keys may be
    SubjectPublicKeyInfo or bare PKCS#1 RSAPublicKey, both seen in the field."""
    cache_key = (key_type, p)
    cached = _public_cache.get(cache_key)
    if cached is not None:
        return cached
    try:
        raw = base64.b64decode(p, validate=True)
    except (binascii.Error, ValueError):
        raise KeyProblem("p= is not valid base64") from None
    public: PublicKey
    if key_type == "ed25519":
        if len(raw) != 32:
            raise KeyProblem(f"an Ed25519 key is 32 bytes, p= has {len(raw)}")
        public = ed25519.Ed25519PublicKey.from_public_bytes(raw)
    elif key_type == "rsa":
        try:
            loaded = serialization.load_der_public_key(raw)
        except (ValueError, UnsupportedAlgorithm):
            raise KeyProblem("p= is not an RSA public key") from None
        if not isinstance(loaded, rsa.RSAPublicKey):
            raise KeyProblem("p= is not an RSA public key")
        public = loaded
    else:
        raise KeyProblem(f"unknown key type k={key_type}")
    _remember(_public_cache, cache_key, public)
    return public


def generate(key_type: KeyType = "rsa", bits: int = 2048) -> PrivateKey:
    if key_type == "ed25519":
        return PrivateKey("ed25519", ed25519.Ed25519PrivateKey.generate())
    if bits < MIN_GENERATE_BITS:
        raise KeyProblem(
            f"{bits}-bit RSA keys are refused: RFC 8301 requires at least {MIN_GENERATE_BITS}"
        )
    if bits > 8192:
        raise KeyProblem(f"{bits}-bit RSA keys are too large to publish in DNS (max 8192)")
    return PrivateKey("rsa", rsa.generate_private_key(public_exponent=65537, key_size=bits))


def private_key_pem(key: PrivateKey) -> bytes:
    """PEM to store: PKCS#1 for RSA (what dknewkey, libdkim and qmail-dk read),
    PKCS#8 for Ed25519."""
    fmt = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if key.type == "rsa"
        else serialization.PrivateFormat.PKCS8
    )
    return key.key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def record_value(key: PrivateKey, *, dkim: bool = True) -> str:
    """The TXT data of the selector record.  With dkim=False the DomainKeys
    form of RFC 4870 §3.2.3 (`k=rsa; p=…`, no v=) that libdomainkeys' dknewkey wrote."""
    head = "v=DKIM1; " if dkim else ""
    return f"{head}k={key.type}; p={key.public_record_value()}"


def split_strings(text: str, size: int = 255) -> list[str]:
    """A TXT value as DNS character-strings of at most 255 bytes (RFC 1035 §3.3)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def bind_record(selector: str, value: str, ttl: int | None = None) -> str:
    strings = " ".join(f'"{s}"' for s in split_strings(value))
    ttl_text = f" {ttl}" if ttl is not None else ""
    # Several strings on one line are one TXT record (RFC 1035 §5.1); no
    # parentheses, so the line pastes into any zone file or web form.
    return f"{selector}._domainkey{ttl_text} IN TXT {strings}"


def tinydns_record(fqdn: str, value: str, ttl: int = 3600) -> str:
    """djbdns' generic TXT line `'fqdn:text:ttl` with ':' and non-printables
    escaped in octal, as the seeds write them (`include\\072…`)."""
    out = []
    for ch in value:
        code = ord(ch)
        if ch in ":\\" or code < 32 or code > 126:
            out.append(f"\\{code:03o}")
        else:
            out.append(ch)
    return f"'{fqdn.rstrip('.')}.:{''.join(out)}:{ttl}"
