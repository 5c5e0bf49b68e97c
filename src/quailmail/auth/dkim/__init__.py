"""DKIM (RFC 6376, RFC 8301, RFC 8463): canonicalization, signing, verification."""

from quailmail.auth.dkim.sign import DEFAULT_HEADERS, SignError, sign_dkim
from quailmail.auth.dkim.status import DkimStatus
from quailmail.auth.dkim.verify import (
    DkimResult,
    DkimSignatureResult,
    VerifyOptions,
    verify_dkim,
)

__all__ = [
    "DEFAULT_HEADERS",
    "DkimResult",
    "DkimSignatureResult",
    "DkimStatus",
    "SignError",
    "VerifyOptions",
    "sign_dkim",
    "verify_dkim",
]
