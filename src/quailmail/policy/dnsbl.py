"""DNS blocklists at connection time: rblsmtpd (ucspi-tcp 0.88) with the
seeds' IPv6 patch.

What decides, in rblsmtpd's order:

1. `RBLSMTPD` from the rules: set and empty → no lookup, the client passes;
   set to text → refused with that text, temporary (451), or permanent
   (553) when the text starts with `-` (the `-` is dropped).
2. Unset: the lists of `control/rbls`, in file order, until one lists
   (`-r`) or allow-lists (`-a`) the client.

`control/rbls` holds rblsmtpd's options, one a line (`#` comments):

    -r zen.spamhaus.org            a blocklist (a bare zone means the same)
    -r rbl.example.org ipv6=namespace
    -a allow.example.org           an allow list
    -b                             listings answer 553 (default -B: 451)
    -c                             fail closed (default -C: fail open)
    -t 60                          the refused conversation's length, seconds
                                   (0: the refusal instead of a greeting, then
                                   the connection is closed, as rblsmtpd -t0)

`-b`/`-B` and `-c`/`-C` count for the list lines after them, as rblsmtpd
reads its options in order and decides at each lookup; `-t` for all.

The option `ipv6=` of a list line picks how an IPv6 client is looked up:
`rfc5782` (the default) reverses the 32 nibbles under the zone (RFC 5782
§2.4); `namespace` puts them under `ipv6.` of the zone, as the seeds'
rblsmtpd patch does (`1.0.0.0…2.ipv6.rbl.example.org`); `off` skips the
list for IPv6 clients.  IPv4 clients are looked up by reversed octets
(§2.1); an IPv4-mapped IPv6 client is an IPv4 client.

A listing is an A record in 127.0.0.0/8 (§2.1, §2.3); the list's TXT
records, joined as rblsmtpd's dns_txt joins them, are the text of the
refusal, else `IP is listed in ZONE` (rblsmtpd 0.88 looked at TXT alone,
RFC 5782 §2.1 makes A the listing).  Answers in 127.255.255.0/24
are the error codes lists give to refused queriers (Spamhaus'
127.255.255.252/254/255), never listings: logged, and the list is passed
over.  A lookup that fails temporarily is "not listed" (-C), or "listed,
451 temporary RBL lookup error" (-c); after a failed lookup a listing
answers 451 even under -b, as rblsmtpd's `flagmustnotbounce`.

The refusal is rblsmtpd's limited conversation: HELO, EHLO, MAIL, RSET and
NOOP are answered as usual, and every RCPT, DATA, BDAT, AUTH, STARTTLS,
VRFY, EXPN, HELP and unknown command gets the 451 or 553 (text cut at 200
characters, anything outside printable ASCII shown as `?`) until the
client quits, or for at most `-t` seconds (60) from the greeting; then 421
and the connection is closed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import functools
import ipaddress
import logging
import re
from dataclasses import dataclass

from quailmail.core.dns import DnsResult, DnsStatus, Resolver
from quailmail.core.reply import Reply
from quailmail.policy.base import Client, Conversation

log = logging.getLogger("quailmail.policy.dnsbl")

RBLS = "rbls"
TEXT_MAX = 200  # rblsmtpd: `if (text.len > 200) text.len = 200`
LOOKUP_ERROR = "temporary RBL lookup error"  # rblsmtpd's words under -c
CONVERSATION_TIMEOUT = 60.0  # rblsmtpd drops the conversation after 60 s (-t)
_LISTED_NET = ipaddress.IPv4Network("127.0.0.0/8")  # RFC 5782 §2.3
_ERROR_NET = ipaddress.IPv4Network("127.255.255.0/24")  # lists' "query refused" codes
# A zone: host name labels of 1-63 characters (RFC 1035 §2.3.4), room left
# for the reversed IPv4 address in front (253 - len("255.255.255.255.")).
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_ZONE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
ZONE_MAX = 253 - 16


class Ipv6Naming(enum.Enum):
    RFC5782 = "rfc5782"  # nibbles.zone (RFC 5782 §2.4)
    NAMESPACE = "namespace"  # nibbles.ipv6.zone (the seeds' rblsmtpd patch)
    OFF = "off"


@dataclass(frozen=True, slots=True)
class DnsList:
    zone: str
    allow: bool = False  # -a: an allow list
    ipv6: Ipv6Naming = Ipv6Naming.RFC5782
    # rblsmtpd's flags as they stood when this list came: they count for
    # the lists after them, as rblsmtpd decides at each lookup.
    bounce: bool = False  # -b: 553 for a listing here (-B: 451)
    fail_closed: bool = False  # -c: a failed lookup here refuses (-C: passes)


@dataclass(frozen=True, slots=True)
class RblConfig:
    lists: tuple[DnsList, ...] = ()
    timeout: float = CONVERSATION_TIMEOUT  # -t: the refused conversation's length


def parse_rbls(data: bytes) -> RblConfig:
    """`control/rbls`; a line that does not parse is logged and skipped."""
    lists: list[DnsList] = []
    bounce = fail_closed = False
    timeout = CONVERSATION_TIMEOUT
    for number, raw in enumerate(data.decode("utf-8", "replace").split("\n"), 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        option = words[0]
        if option in ("-b", "-B", "-c", "-C"):
            if len(words) > 1:
                log.warning("control/rbls line %d: %s takes no argument, line skipped",
                            number, option)  # fmt: skip
                continue
            bounce = option == "-b" if option in ("-b", "-B") else bounce
            fail_closed = option == "-c" if option in ("-c", "-C") else fail_closed
            continue
        if option.startswith("-t"):
            given = " ".join([option[2:], *words[1:]]).strip()  # `-t 30` or `-t30`
            if given.isascii() and given.isdigit():  # '²' is a digit to isdigit()
                timeout = float(given)
            else:
                log.warning("control/rbls line %d: -t needs seconds, line skipped",
                            number)  # fmt: skip
            continue
        allow = option == "-a"
        if option in ("-r", "-a"):
            words = words[1:]
        elif option.startswith("-"):
            log.warning("control/rbls line %d: unknown option %r, line skipped", number, option)
            continue
        listed = _list_line(words, allow)
        if listed is None:
            log.warning("control/rbls line %d does not parse: %r", number, raw.strip())
            continue
        lists.append(dataclasses.replace(listed, bounce=bounce, fail_closed=fail_closed))
    return RblConfig(tuple(lists), timeout)


def _list_line(words: list[str], allow: bool) -> DnsList | None:
    if not words:
        return None
    zone = words[0].strip(".").lower()
    if not _ZONE.fullmatch(zone) or len(zone) > ZONE_MAX:
        return None  # not a name any lookup could be made under
    naming = Ipv6Naming.RFC5782
    for word in words[1:]:
        key, _, value = word.partition("=")
        if key != "ipv6":
            return None
        try:
            naming = Ipv6Naming(value.lower())
        except ValueError:
            return None
    return DnsList(zone, allow, naming)


@functools.lru_cache(maxsize=4096)  # a busy client comes back: no parse each time
def query_name(ip: str, dnslist: DnsList) -> str | None:
    """The name to look up for `ip` in the list, or None when the list is
    not asked for this kind of address."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        return f"{'.'.join(reversed(str(address).split('.')))}.{dnslist.zone}"
    if dnslist.ipv6 is Ipv6Naming.OFF:
        return None
    middle = "ipv6." if dnslist.ipv6 is Ipv6Naming.NAMESPACE else ""
    return f"{nibbles(address)}.{middle}{dnslist.zone}"


def nibbles(address: ipaddress.IPv6Address) -> str:
    """RFC 5782 §2.4: the 32 nibbles, last first, lower-case hex."""
    return ".".join(reversed(address.exploded.replace(":", "")))


class Listing(enum.Enum):
    LISTED = "listed"
    NOT_LISTED = "not listed"
    ERROR = "error"  # the lookup failed temporarily


def classify(answer: DnsResult[str], name: str) -> Listing:
    """RFC 5782 §2.3: an A record in 127.0.0.0/8 lists; the list's error
    codes (127.255.255.0/24) and anything outside 127/8 do not."""
    if answer.status is DnsStatus.TEMPFAIL:
        return Listing.ERROR
    listed = False
    for record in answer.records:
        try:
            address = ipaddress.IPv4Address(record)
        except ValueError:
            continue
        if address in _ERROR_NET:
            log.warning("%s: the list answered %s (an error code, not a listing)", name, address)
        elif address in _LISTED_NET:
            listed = True
    return Listing.LISTED if listed else Listing.NOT_LISTED


def sanitize(text: str) -> str:
    """rblsmtpd's treatment of the text it sends: at most 200 characters,
    anything but printable ASCII as `?`."""
    return "".join(c if " " <= c <= "~" else "?" for c in text[:TEXT_MAX])


def refusal(text: str, *, permanent: bool, timeout: float = CONVERSATION_TIMEOUT) -> Conversation:
    """rblsmtpd's limited conversation: this answer until QUIT, for at most
    `timeout` seconds."""
    text = sanitize(text) or "blocked"
    if permanent:
        return Conversation(553, "5.7.1", text, time_limit=timeout)
    return Conversation(451, "4.7.1", text, time_limit=timeout)


async def lookup(resolver: Resolver, ip: str, config: RblConfig) -> Reply | None:
    """rblsmtpd's decision for `ip` over the lists of `config`."""
    names = [query_name(ip, dnslist) for dnslist in config.lists]
    # Every list is asked at once; the answers are read in file order, so
    # the first list that decides wins, as rblsmtpd's sequential lookups.
    if len(names) == 1:  # a task less: an answer from the cache is immediate
        answers = [await _ask(resolver, names[0])]
    else:
        answers = await asyncio.gather(*(_ask(resolver, name) for name in names))
    must_not_bounce = False
    for dnslist, name, answer in zip(config.lists, names, answers, strict=True):
        if name is None or answer is None:
            continue
        listing = classify(answer, name)
        if listing is Listing.ERROR:
            log.info("%s: %s lookup failed: %s", ip, name, answer.reason or "temporary failure")
            must_not_bounce = True
            if dnslist.fail_closed and not dnslist.allow:
                return refusal(LOOKUP_ERROR, permanent=False, timeout=config.timeout)
            if not dnslist.fail_closed and dnslist.allow:
                return None  # -C: an allow list that cannot answer allows
            continue
        if listing is Listing.NOT_LISTED:
            continue
        if dnslist.allow:
            log.info("%s: allow-listed by %s", ip, dnslist.zone)
            return None
        text = await _text(resolver, name, ip, dnslist.zone)
        permanent = dnslist.bounce and not must_not_bounce
        return refusal(text, permanent=permanent, timeout=config.timeout)
    return None


async def _ask(resolver: Resolver, name: str | None) -> DnsResult[str] | None:
    if name is None:
        return None
    return await resolver.a(name)


async def _text(resolver: Resolver, name: str, ip: str, zone: str) -> str:
    answer = await resolver.txt(name)
    # Every record's strings, one after the other, byte by byte: rblsmtpd's
    # dns_txt (a list like zen may answer several).
    text = b"".join(answer.records).decode("latin-1") if answer.ok else ""
    return text or f"{ip} is listed in {zone}"


async def check(client: Client) -> Reply | None:
    """The CONNECT check: `RBLSMTPD`, then `control/rbls`."""
    given = client.env.get("RBLSMTPD")
    if given == "":
        return None
    config = client.control.parsed(RBLS, parse_rbls, RblConfig())
    if given is not None:
        if given.startswith("-"):
            return refusal(given[1:], permanent=True, timeout=config.timeout)
        return refusal(given, permanent=False, timeout=config.timeout)
    if not config.lists:
        return None
    return await lookup(client.resolver, client.ip, config)
