"""DMARC (RFC 7489): policy records, organizational domains, alignment, evaluation."""

from quailmail.auth.dmarc.alignment import aligned, normalize_domain
from quailmail.auth.dmarc.author import AuthorDomain, author_domain, from_value_domain
from quailmail.auth.dmarc.evaluate import (
    Discovery,
    DkimInput,
    DmarcResult,
    Sampler,
    SpfInput,
    decide,
    discover_record,
    dkim_identifiers,
    evaluate,
)
from quailmail.auth.dmarc.orgdomain import organizational_domain
from quailmail.auth.dmarc.record import (
    Alignment,
    DmarcRecord,
    DmarcRecordError,
    DmarcUri,
    Policy,
    RecordProblem,
    is_dmarc_record,
    parse_record,
)

__all__ = [
    "Alignment",
    "AuthorDomain",
    "Discovery",
    "DkimInput",
    "DmarcRecord",
    "DmarcRecordError",
    "DmarcResult",
    "DmarcUri",
    "Policy",
    "RecordProblem",
    "Sampler",
    "SpfInput",
    "aligned",
    "author_domain",
    "decide",
    "discover_record",
    "dkim_identifiers",
    "evaluate",
    "from_value_domain",
    "is_dmarc_record",
    "normalize_domain",
    "organizational_domain",
    "parse_record",
]
