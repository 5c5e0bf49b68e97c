"""DomainKeys (RFC 4870, historic): rsa-sha1 signatures over a sender's mail.

Still met in the field and still configured in the qmail setups we replace
(qmail-dk, DKSIGN, DKVERIFY letters A-K).  Pure: DNS comes in as a Resolver.

    verify_domainkeys(message, resolver)      -> DomainKeysResult (never raises)
    sign_domainkeys(message, key, selector=…) -> the DomainKey-Signature line
    domain_policy(domain, resolver)           -> DkPolicy | None

Modules: `status` (DkStatus letters, results), `signature` (the header
field), `keyrecord` (selector records), `canonicalize` (simple, nofws and the
hash), `sender` (the sending address), `policy` (_domainkey.<domain>),
`sign`, `verify`.
"""

from quailmail.auth.domainkeys.policy import DkPolicy, domain_policy, parse_policy
from quailmail.auth.domainkeys.sign import DomainKeysSigningError, sign_domainkeys
from quailmail.auth.domainkeys.signature import Canon
from quailmail.auth.domainkeys.status import DkStatus, DomainKeysResult
from quailmail.auth.domainkeys.verify import verify_domainkeys

__all__ = [
    "Canon",
    "DkPolicy",
    "DkStatus",
    "DomainKeysResult",
    "DomainKeysSigningError",
    "domain_policy",
    "parse_policy",
    "sign_domainkeys",
    "verify_domainkeys",
]
