"""The evaluation of check_host() (RFC 7208 §4, §5, §6), asynchronous.

Every DNS question goes through the `Resolver` handed in; nothing else is
touched.  Records are parsed once per text (`record.py`) and kept, so with
a warm resolver cache a check costs a few dictionary lookups per term.

Errors travel as `Abort` from wherever they happen (a TXT lookup deep in
an include, the eleventh DNS term) to the top, where they become the
verdict: §4.6.4 and §5.2 end the whole check_host() at the first one.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from math import inf

from quailmail.auth.spf.macro import MacroError, MacroString, expand, expand_domain
from quailmail.auth.spf.record import (
    Mechanism,
    SpfRecord,
    SpfSyntaxError,
    parse_explanation,
    parse_record,
    select_senderid,
    select_spf1,
)
from quailmail.auth.spf.result import MAILFROM, SpfResult
from quailmail.core.clock import Clock, SystemClock
from quailmail.core.dns import DnsResult, DnsStatus, Resolver

MAX_DNS_TERMS = 10  # §4.6.4: include, a, mx, ptr, exists, redirect
MAX_VOID_LOOKUPS = 2  # §4.6.4: more empty answers is a permerror
MAX_MX_NAMES = 10  # §4.6.4: more MX records is a permerror for "mx"
MAX_PTR_NAMES = 10  # §4.6.4: PTR names past the tenth are ignored
_CACHE_SIZE = 4096
_KEPT_TXT_MAX = 8192  # bytes: a bigger TXT answer is parsed each time, never kept

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Abort(Exception):
    """temperror or permerror, ending the whole evaluation."""

    def __init__(self, result: SpfResult, reason: str) -> None:
        super().__init__(reason)
        self.result = result
        self.reason = reason


# -- caches shared by all checks (pure functions of their keys) ---------------------------

_records: OrderedDict[tuple[str, tuple[bytes, ...]], SpfRecord | str | None] = OrderedDict()
_addresses: dict[str, int] = {}


def _remember(key: tuple[str, tuple[bytes, ...]], value: SpfRecord | str | None) -> None:
    _records[key] = value
    if len(_records) > _CACHE_SIZE:
        _records.popitem(last=False)


def _record_for(scope: str, txts: tuple[bytes, ...]) -> SpfRecord | None:
    """The parsed record among a name's TXT records, or None; raises Abort
    (permerror) for a syntax error or several records.  Kept by the TXT
    answer itself, which repeats from message to message."""
    key = (scope, txts)
    try:
        found = _records[key]
    except KeyError:
        try:
            text = select_spf1(txts) if scope == MAILFROM else select_senderid(txts, scope)
            found = None if text is None else parse_record(text)
        except SpfSyntaxError as error:
            found = str(error)
        if sum(map(len, txts)) <= _KEPT_TXT_MAX:
            _remember(key, found)
    if isinstance(found, str):
        raise Abort(SpfResult.PERMERROR, found)
    return found


def _address_int(text: str) -> int:
    value = _addresses.get(text)
    if value is None:
        value = int(ipaddress.ip_address(text))
        if len(_addresses) >= _CACHE_SIZE:
            _addresses.clear()
        _addresses[text] = value
    return value


# -- one evaluation ------------------------------------------------------------------------


@dataclass(slots=True)
class Evaluation:
    """What one check_host() knows and has counted."""

    resolver: Resolver
    ip: Address
    sender: str
    local: str
    sender_domain: str
    helo: str
    receiver: str
    scope: str  # "mailfrom" (v=spf1) or a Sender ID scope ("pra")
    clock: Clock | None
    ip_int: int = 0
    v6: bool = False
    lookups: int = 0
    voids: int = 0
    max_terms: int = MAX_DNS_TERMS
    max_voids: int = MAX_VOID_LOOKUPS
    deadline: float = inf  # loop time past which the check gives up (§4.6.4)
    time_limit: float = inf
    ptr_names: list[str] | None = None  # first 10 PTR names, or [] on error
    ptr_status: DnsStatus = DnsStatus.ANSWER
    validated: dict[str, bool] | None = None  # PTR name -> resolves back (§5.5)
    policy: LocalPolicy | None = None  # qmail-spf's spfrules / spfguess (receiver only)

    @classmethod
    def start(
        cls,
        resolver: Resolver,
        ip: Address,
        sender: str,
        *,
        helo: str = "",
        receiver: str = "unknown",
        scope: str = MAILFROM,
        clock: Clock | None = None,
        time_limit: float | None = None,
    ) -> Evaluation:
        """A fresh evaluation for a client (IPv4-mapped already unmapped);
        `time_limit` in seconds, None for none."""
        local, sender_domain = split_sender(sender)
        if not sender.rpartition("@")[0]:
            sender = f"postmaster@{sender_domain}"  # §4.3: no local-part
        check = cls(
            resolver, ip, sender, local, sender_domain, helo, receiver or "unknown", scope, clock
        )
        check.ip_int = int(ip)
        check.v6 = ip.version == 6
        if time_limit is not None:
            check.time_limit = time_limit
            check.deadline = asyncio.get_running_loop().time() + time_limit
        return check

    def count_term(self, term: str) -> None:
        """Before each DNS-querying term: the limits of §4.6.4.  The elapsed
        time is checked here rather than with a timer, which would cost every
        check a scheduled callback; a lookup in flight past the deadline ends
        at the resolver's own timeout (DnsResolver's, 5 s by default)."""
        if self.deadline is not inf and asyncio.get_running_loop().time() > self.deadline:
            raise Abort(SpfResult.TEMPERROR, f"no result within {self.time_limit:g} s")
        self.lookups += 1
        if self.lookups > self.max_terms:  # §4.6.4
            raise Abort(SpfResult.PERMERROR, f"more than {self.max_terms} DNS lookups (at {term})")

    def count_void(self, term: str) -> None:
        self.voids += 1
        if self.voids > self.max_voids:  # §4.6.4
            raise Abort(SpfResult.PERMERROR, f"more than {self.max_voids} void lookups (at {term})")

    # -- macros (§7) ----------------------------------------------------------------

    async def values(self, spec: MacroString, domain: str) -> dict[str, str]:
        """The macro values `spec` uses, %{p} looked up only when asked for."""
        values: dict[str, str] = {}
        for letter in spec.letters:
            values[letter] = await self._value(letter, domain)
        return values

    async def _value(self, letter: str, domain: str) -> str:
        ip = self.ip
        if letter == "s":
            return self.sender
        if letter == "l":
            return self.local
        if letter == "o":
            return self.sender_domain
        if letter == "d":
            return domain
        if letter == "i":
            if self.v6:  # §7.3: dot-separated nibbles for IPv6
                return ".".join(f"{ip.packed.hex():0>32}".upper())
            return str(ip)
        if letter == "c":
            return str(ip)  # RFC 5952 form for IPv6
        if letter == "v":
            return "ip6" if self.v6 else "in-addr"
        if letter == "h":
            return self.helo
        if letter == "r":
            return self.receiver
        if letter == "t":
            clock = self.clock or SystemClock()
            return str(int(clock.now()))
        if letter == "p":
            return await self.validated_domain(domain)
        raise AssertionError(f"macro letter {letter!r} passed the parser")

    async def expand_domain(self, spec: MacroString | None, domain: str) -> str:
        if spec is None:
            return domain
        if spec.literal is not None:
            literal = spec.literal
            return literal[:-1] if literal.endswith(".") else literal
        return expand_domain(spec, await self.values(spec, domain))

    # -- PTR names (§5.5, §7.3 %{p}) ----------------------------------------------------

    async def names(self) -> list[str]:
        if self.ptr_names is None:
            answer = await self.resolver.ptr(str(self.ip))
            # §5.5: a DNS error on the PTR lookup: no names, no match.
            self.ptr_names = list(answer.records[:MAX_PTR_NAMES])
            self.ptr_status = answer.status
        return self.ptr_names

    async def is_validated(self, name: str) -> bool:
        """§5.5: a PTR name is validated when it resolves back to the client;
        an error on that lookup skips the name."""
        key = name.lower()
        if self.validated is None:
            self.validated = {}
        known = self.validated.get(key)
        if known is None:
            answer = await (self.resolver.aaaa if self.v6 else self.resolver.a)(name)
            known = answer.ok and any(_address_int(a) == self.ip_int for a in answer.records)
            self.validated[key] = known
        return known

    async def validated_domain(self, domain: str) -> str:
        """%{p} (§7.3): the domain itself if validated, else a validated
        subdomain of it, else any validated name, else "unknown"."""
        validated = [n for n in await self.names() if await self.is_validated(n)]
        lowered = domain.lower()
        for name in validated:
            if name.lower() == lowered:
                return name
        for name in validated:
            if name.lower().endswith("." + lowered):
                return name
        return validated[0] if validated else "unknown"


@lru_cache(maxsize=_CACHE_SIZE)
def split_sender(sender: str) -> tuple[str, str]:
    """(local-part, domain) of a <sender> (§4.3): the local-part defaults
    to "postmaster", a sender without "@" is taken as a bare domain, and a
    trailing dot on the domain is dropped."""
    local, at, domain = sender.rpartition("@")
    if not at:
        local, domain = "", sender
    if domain.endswith("."):
        domain = domain[:-1]
    return local or "postmaster", domain


@dataclass(frozen=True, slots=True)
class Outcome:
    result: SpfResult
    mechanism: Mechanism | None
    record: SpfRecord | None  # whose exp= explains a fail (§6.2)
    domain: str
    source: str | None = None  # "spfrules" / "spfguess": a local mechanism decided


# -- qmail-spf's local policy ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LocalPolicy:
    """What a receiver adds to the sender's policy, as qmail-spf does.

    - `rules` (`control/spfrules`): mechanisms tried before the final
      failing `all` of the sender domain's record -- before the run of
      mechanisms that share that `all`'s qualifier (-, ~ or ?), never at
      the very start (a record that is only `-all` says the domain sends
      no mail, and stays so), never inside an include.  A redirect= target
      is the sender's record too.  Typical: `include:spf.trusted-forwarder.org`.
    - `guess` (`control/spfguess`): a policy tried for a sender domain that
      publishes none, followed by the rules.  A DNS error inside the guess
      is taken as no policy (result none); nothing matching is none too.

    A local mechanism that matches decides with its own qualifier; its fail
    is explained by the receiver's default explanation (no record's exp=).
    Its DNS terms count against the limits of §4.6.4 like the record's.
    This is outside RFC 7208, which knows only the published record: a
    receiver's choice, kept apart from `check_host` proper by being None
    unless asked for.
    """

    rules: tuple[Mechanism, ...] = ()
    guess: tuple[Mechanism, ...] = ()

    @classmethod
    def parse(cls, rules: str = "", guess: str = "") -> LocalPolicy:
        """From the control files' text: mechanisms separated by spaces, an
        optional leading `v=spf1`.  Modifiers are not allowed.  Raises
        SpfSyntaxError with the reason."""
        return cls(local_terms(rules, "spfrules"), local_terms(guess, "spfguess"))

    def __bool__(self) -> bool:
        return bool(self.rules or self.guess)


def local_terms(text: str, name: str) -> tuple[Mechanism, ...]:
    """The mechanisms of one local policy file's text (`name`: spfrules or
    spfguess); raises SpfSyntaxError naming the file."""
    text = " ".join(text.split())
    if not text:
        return ()
    if text.lower().split(" ", 1)[0] != "v=spf1":
        text = "v=spf1 " + text
    try:
        record = parse_record(text)
    except SpfSyntaxError as error:
        raise SpfSyntaxError(f"{name}: {error}") from None
    if record.redirect is not None or record.exp is not None or record.modifiers:
        raise SpfSyntaxError(f"{name}: modifiers are not allowed here")
    return record.mechanisms


def rules_position(mechanisms: tuple[Mechanism, ...]) -> int:
    """Where qmail-spf puts its local rules in a record: before the run of
    mechanisms ending in the first `all` whose qualifier is -, ~ or ?, all
    sharing that qualifier; -1 when there is no such `all`, or the run
    starts the record."""
    for index, mechanism in enumerate(mechanisms):
        if mechanism.kind != "all":
            continue
        qualifier = mechanism.qualifier
        if qualifier is SpfResult.PASS:
            return -1
        start = index
        while start > 0 and mechanisms[start - 1].qualifier is qualifier:
            start -= 1
        return start if start > 0 else -1
    return -1


async def _first_local(
    check: Evaluation, mechanisms: tuple[Mechanism, ...], domain: str, source: str
) -> Outcome | None:
    for mechanism in mechanisms:
        if await _matches(check, mechanism, domain):
            return Outcome(mechanism.qualifier, mechanism, None, domain, source)
    return None


async def _guessed(check: Evaluation, local: LocalPolicy, domain: str) -> Outcome:
    """No record at the sender's domain: the guess, then the rules."""
    try:
        found = await _first_local(check, local.guess, domain, "spfguess")
    except Abort as abort:
        if abort.result is not SpfResult.TEMPERROR:
            raise
        return Outcome(SpfResult.NONE, None, None, domain)  # qmail-spf: a DNS error is none
    if found is None:
        found = await _first_local(check, local.rules, domain, "spfrules")
    return found or Outcome(SpfResult.NONE, None, None, domain)


@lru_cache(maxsize=_CACHE_SIZE)
def well_formed(domain: str) -> bool:
    """§4.3: a multi-label name, labels of 1 to 63 octets (a trailing dot
    allowed), at most 253 in all, not a domain literal nor all-numeric at
    the top (an address given as a name)."""
    name = domain[:-1] if domain.endswith(".") else domain
    if not name or len(name) > 253 or name.startswith("["):
        return False
    labels = name.split(".")
    if len(labels) < 2 or labels[-1].isdigit():
        return False
    return all(0 < len(label) <= 63 for label in labels)


async def evaluate(
    check: Evaluation, domain: str, *, rules: bool = False, guess: bool = False
) -> Outcome:
    """§4: the record of `domain`, evaluated; errors raise Abort.  `rules`
    and `guess` say whether the check's LocalPolicy applies here (the
    sender's own record and its redirect= targets, never an include)."""
    if not well_formed(domain):
        return Outcome(SpfResult.NONE, None, None, domain)
    answer = await check.resolver.txt(domain)
    if answer.status is not DnsStatus.ANSWER:
        if answer.status is DnsStatus.TEMPFAIL:  # §4.4
            raise Abort(SpfResult.TEMPERROR, f"TXT lookup of {domain}: {answer.reason}")
        record = None
    else:
        record = _record_for(check.scope, answer.records)
    local = check.policy
    if record is None:
        if guess and local:
            return await _guessed(check, local, domain)
        return Outcome(SpfResult.NONE, None, None, domain)
    at = rules_position(record.mechanisms) if rules and local and local.rules else -1
    for index, mechanism in enumerate(record.mechanisms):  # §4.6.2: first match wins
        if index == at and local is not None:
            found = await _first_local(check, local.rules, domain, "spfrules")
            if found is not None:
                return found
        if await _matches(check, mechanism, domain):
            return Outcome(mechanism.qualifier, mechanism, record, domain)
    if record.redirect is not None and not record.has_all:  # §6.1
        check.count_term("redirect=")
        target = await check.expand_domain(record.redirect, domain)
        outcome = await evaluate(check, target, rules=rules)
        if outcome.result is SpfResult.NONE:
            raise Abort(SpfResult.PERMERROR, f"redirect={target}: no SPF record")
        return outcome  # with the target's exp=, not ours (§6.2)
    return Outcome(SpfResult.NEUTRAL, None, record, domain)  # §4.7


async def _addresses_of(check: Evaluation, name: str, term: str) -> DnsResult[str]:
    answer = await (check.resolver.aaaa if check.v6 else check.resolver.a)(name)
    if answer.status is DnsStatus.TEMPFAIL:  # §5: DNS errors are temperror
        kind = "AAAA" if check.v6 else "A"
        raise Abort(SpfResult.TEMPERROR, f"{kind} lookup of {name} ({term}): {answer.reason}")
    return answer


def _in_network(check: Evaluation, addresses: tuple[str, ...], mechanism: Mechanism) -> bool:
    prefix = mechanism.cidr6 if check.v6 else mechanism.cidr4
    bits = 128 if check.v6 else 32
    shift = bits - prefix
    client = check.ip_int >> shift
    return any(_address_int(a) >> shift == client for a in addresses)


async def _matches(check: Evaluation, mechanism: Mechanism, domain: str) -> bool:
    kind = mechanism.kind
    if kind == "ip4":  # §5.6: IPv4 clients only (mapped ones included)
        return not check.v6 and check.ip_int & mechanism.mask == mechanism.network
    if kind == "ip6":
        return check.v6 and check.ip_int & mechanism.mask == mechanism.network
    if kind == "all":  # §5.1
        return True
    term = mechanism.text
    check.count_term(term)
    target = await check.expand_domain(mechanism.domain, domain)
    if kind == "include":  # §5.2
        outcome = await evaluate(check, target)
        if outcome.result is SpfResult.PASS:
            return True
        if outcome.result is SpfResult.NONE:
            raise Abort(SpfResult.PERMERROR, f"{term}: no SPF record at {target}")
        return False  # fail, softfail, neutral: no match (errors were raised)
    if kind == "a":  # §5.3
        answer = await _addresses_of(check, target, term)
        if not answer.records:
            check.count_void(term)
            return False
        return _in_network(check, answer.records, mechanism)
    if kind == "mx":  # §5.4
        mx = await check.resolver.mx(target)
        if mx.status is DnsStatus.TEMPFAIL:
            raise Abort(SpfResult.TEMPERROR, f"MX lookup of {target} ({term}): {mx.reason}")
        if not mx.records:
            check.count_void(term)
            return False
        if len(mx.records) > MAX_MX_NAMES:
            raise Abort(SpfResult.PERMERROR, f"{term}: {len(mx.records)} MX records (at most 10)")
        for record in mx.records:
            if not record.exchange:  # RFC 7505 null MX: no host to match
                continue
            answer = await _addresses_of(check, record.exchange, term)
            if answer.records and _in_network(check, answer.records, mechanism):
                return True
        return False
    if kind == "ptr":  # §5.5
        names = await check.names()
        if not names:
            if check.ptr_status is not DnsStatus.TEMPFAIL:
                check.count_void(term)
            return False
        lowered = target.lower()
        suffix = "." + lowered
        for name in names:
            low = name.lower().rstrip(".")
            if (low == lowered or low.endswith(suffix)) and await check.is_validated(name):
                return True
        return False
    # exists (§5.7): an A lookup whatever the client's address family
    answer = await check.resolver.a(target)
    if answer.status is DnsStatus.TEMPFAIL:
        raise Abort(SpfResult.TEMPERROR, f"A lookup of {target} ({term}): {answer.reason}")
    if not answer.records:
        check.count_void(term)
        return False
    return True


async def explain(check: Evaluation, outcome: Outcome, default: str) -> str:
    """§6.2: the exp= text of the record that failed, or `default`.  Any
    trouble (DNS, no or several records, bad syntax, non-ASCII) falls back
    to the default; the lookup counts against no limit."""
    record = outcome.record
    if record is not None and record.exp is not None:
        try:
            name = await check.expand_domain(record.exp, outcome.domain)
            answer = await check.resolver.txt(name)
            if answer.ok and len(answer.records) == 1:
                text = parse_explanation(answer.records[0].decode("ascii"))
                return expand(text, await check.values(text, outcome.domain))
        except (MacroError, UnicodeDecodeError):
            pass
    try:
        text = parse_explanation(default)
    except MacroError:
        return default
    return expand(text, await check.values(text, outcome.domain))
