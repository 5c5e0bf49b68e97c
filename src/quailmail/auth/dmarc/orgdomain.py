"""The Organizational Domain (RFC 7489 §3.2), from the Public Suffix List.

The list comes with the `publicsuffixlist` package (no network at run time:
a newer list arrives with a newer package).  Both its ICANN and its PRIVATE
sections count, as in OpenDMARC: `a.github.io` and `b.github.io` belong to
different owners and must not align under relaxed mode.  Unknown TLDs are
taken as public suffixes (the list's implicit "*" rule).
"""

from __future__ import annotations

import functools

from publicsuffixlist import PublicSuffixList


@functools.cache
def _psl() -> PublicSuffixList:
    # Built once per process, on first use: parsing the list takes ~30 ms.
    return PublicSuffixList()


@functools.lru_cache(maxsize=4096)
def organizational_domain(domain: str) -> str:
    """The registered domain that `domain` belongs to, lowercase, e.g.
    `mail.example.co.uk` → `example.co.uk`.

    §3.2: find the longest public suffix the name ends in ("x" labels), and
    keep x+1 labels.  A name that is itself a public suffix (`co.uk`), or that
    the list cannot read (empty labels), is its own organizational domain.
    """
    name = domain.rstrip(".").lower()
    found = _psl().privatesuffix(name)
    return found if found is not None else name
