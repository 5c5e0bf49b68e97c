"""Identifier alignment (RFC 7489 §3.1): does the DKIM d= or the SPF-checked
domain match the RFC5322.From domain?

- strict: the two names are the same (case-insensitively, §3.1.1, §3.1.2);
- relaxed: their Organizational Domains are the same (§3.2), so
  `mail.example.com` aligns with `example.com` and with `news.example.com`.
"""

from __future__ import annotations

from quailmail.auth.dmarc.orgdomain import organizational_domain
from quailmail.auth.dmarc.record import Alignment


def normalize_domain(domain: str) -> str:
    """Lowercase, without leading or trailing dots.

    A trailing dot is an absolute name; leading dots are junk that OpenDMARC
    tolerates too (its alignment tests `.mac.com.`), and they cannot make a
    passing DKIM or SPF identifier out of a failing one.
    """
    return domain.strip(".").lower()


def aligned(identifier: str, from_domain: str, mode: Alignment | str) -> bool:
    """Does `identifier` (DKIM d= or the SPF domain) align with the From domain?"""
    a = normalize_domain(identifier)
    b = normalize_domain(from_domain)
    if not a or not b:
        return False
    if a == b:
        return True
    if Alignment(mode) is Alignment.STRICT:
        return False
    return organizational_domain(a) == organizational_domain(b)
