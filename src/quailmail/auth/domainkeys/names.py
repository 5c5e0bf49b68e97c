"""Domain and selector names as DomainKeys uses them: checks that keep bytes from
a hostile header out of DNS queries and out of the header we write."""

from __future__ import annotations

import re

from quailmail.core.kept import kept_by_text

# Letters, digits, hyphen and underscore (`_domainkey` itself has one); DNS
# allows any octet in a label, but a d= or s= outside this set is hostile or
# broken, and querying it would only hand odd bytes to the resolver.
_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}\Z")
_MAX_NAME = 253  # RFC 1035 §2.3.4 (255 octets on the wire, 253 as text)


@kept_by_text(_MAX_NAME)  # the same domains come back
def is_dns_name(name: str) -> bool:
    if not name or len(name) > _MAX_NAME:
        return False
    return all(_LABEL.match(label) for label in name.split("."))


def is_selector(selector: str) -> bool:
    """s= may hold several labels: selectors may contain periods (RFC 4870,
    "Selectors"), which qmail's dksign never makes but others do."""
    return is_dns_name(selector)


def covers(d: str, sender_domain: str) -> bool:
    """d= is the sending address's domain or a parent of it, case-insensitively.

    RFC 4870 §3.3 (d=) and libdomainkeys' dk_end() (its test cases TC26,
    TC26-1); Mail::DKIM's match_subdomain is the same rule.
    """
    d = d.lower()
    sender_domain = sender_domain.lower()
    return sender_domain == d or sender_domain.endswith("." + d)
