"""SPF (RFC 7208) and Sender ID (RFC 4406/4407), asynchronous and pure.

- `check_mailfrom`, `check_helo`, `check_host`: RFC 7208 §4, handed a
  `Resolver`; the verdict (`SpfVerdict`) carries the result word
  (`SpfResult`), the explanation, the mechanism that matched and the
  lookups counted.  `check_mailfrom(..., local=LocalPolicy.parse(rules,
  guess))` adds a receiver's own rules and best guess (qmail-spf).
- `parse_record`: one record's syntax, with the reason of an error.
- `pra`, `check_senderid`: Sender ID's purported responsible address and
  its check against `spf2.0/pra` records.
"""

from quailmail.auth.spf.check import (
    DEFAULT_EXPLANATION,
    check_helo,
    check_host,
    check_mailfrom,
    client_address,
    explain_verdict,
    split_sender,
)
from quailmail.auth.spf.evaluate import MAX_DNS_TERMS, MAX_VOID_LOOKUPS, LocalPolicy, local_terms
from quailmail.auth.spf.macro import MacroError, MacroString, expand, parse_macro_string
from quailmail.auth.spf.record import Mechanism, Modifier, SpfRecord, SpfSyntaxError, parse_record
from quailmail.auth.spf.result import HELO, MAILFROM, PRA, SpfResult, SpfVerdict
from quailmail.auth.spf.senderid import check_senderid, pra, pra_field

__all__ = [
    "DEFAULT_EXPLANATION",
    "HELO",
    "MAILFROM",
    "MAX_DNS_TERMS",
    "MAX_VOID_LOOKUPS",
    "PRA",
    "LocalPolicy",
    "MacroError",
    "MacroString",
    "Mechanism",
    "Modifier",
    "SpfRecord",
    "SpfResult",
    "SpfSyntaxError",
    "SpfVerdict",
    "check_helo",
    "check_host",
    "check_mailfrom",
    "check_senderid",
    "client_address",
    "expand",
    "explain_verdict",
    "local_terms",
    "parse_macro_string",
    "parse_record",
    "pra",
    "pra_field",
    "split_sender",
]
