"""The sending domain's DomainKeys policy record, `_domainkey.<domain>` (RFC 4870 §3.6).

    _domainkey.example.com  TXT  "t=y; o=-; r=postmaster@example.com"

`o=-` says the domain signs all its mail, `o=~` (the default) some of it;
`t=y` that the domain is testing DomainKeys and unsigned or unverifiable mail
must not be treated differently; `r=` a reporting address and `n=` a note.
The record is evidence for the policy layer, which decides; this module never
rejects anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from quailmail.auth.domainkeys.names import is_dns_name
from quailmail.auth.tagvalue import TagValueError, parse_tag_list
from quailmail.core.dns import DnsStatus, Resolver


@dataclass(frozen=True, slots=True)
class DkPolicy:
    domain: str
    o: str = "~"  # "-": all mail signed; "~" (default): some
    testing: bool = False  # t=y
    r: str | None = None  # reporting address
    n: str | None = None  # note for humans

    @property
    def signs_all(self) -> bool:
        return self.o == "-"

    def describe(self) -> str:
        """One phrase for a verdict's reason, e.g. "domain signs all mail (o=-)"."""
        text = "domain signs all mail (o=-)" if self.signs_all else "domain signs some mail (o=~)"
        return f"{text}, testing (t=y)" if self.testing else text


def parse_policy(domain: str, text: str) -> DkPolicy | None:
    """The policy in a record's TXT data, or None when it is not a tag list.

    Unknown tags are ignored, as are unknown o= values (read as the default
    "~"), like libdomainkeys' dk_policy() and Mail::DKIM's DkPolicy.
    """
    try:
        tags = parse_tag_list(text)
    except TagValueError:
        return None
    o = "".join(tags.get("o", "~").split())
    t_flags = [flag.strip().lower() for flag in tags.get("t", "").split(":")]
    return DkPolicy(
        domain=domain,
        o="-" if o == "-" else "~",
        testing="y" in t_flags,
        r=tags.get("r") or None,
        n=tags.get("n") or None,
    )


async def domain_policy(domain: str, resolver: Resolver) -> DkPolicy | None:
    """Look up and parse `_domainkey.<domain>`.

    None when there is no record, when the lookup fails (a temporary failure
    is not evidence either way) or when the first TXT record is not a tag list.
    """
    domain = domain.rstrip(".").lower()
    name = f"_domainkey.{domain}"
    if not is_dns_name(name):
        return None
    answer = await resolver.txt(name)
    if answer.status is not DnsStatus.ANSWER or not answer.records:
        return None
    # Like Mail::DKIM, the first TXT record is the policy; a name carrying
    # several is misconfigured and RFC 4870 gives no rule to pick one.
    return parse_policy(domain, answer.records[0].decode("utf-8", "replace"))
