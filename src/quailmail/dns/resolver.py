"""The real resolver: dnspython's asyncio stub resolver behind a TTL cache.

`DnsResolver` implements `quailmail.core.dns.Resolver`.  Every lookup ends in
an answer, NXDOMAIN, NODATA or TEMPFAIL with a short reason, and no exception
reaches the caller: a DNS timeout must become a temporary outcome (4xx), never
a crash and never a "does not exist" (RFC 6376 §6.1.2, RFC 7208 §5).

What dnspython does for us, checked in dns/resolver.py of 2.9: a UDP answer
with TC set raises `dns.message.Truncated` and the same server is asked again
over TCP (RFC 7766 §5); a server that refuses the connection, sends SERVFAIL
or REFUSED is dropped and the next one tried; a server that does not answer is
retried with backoff until the lifetime runs out.  We add the cache, the
mapping to the four states, the negative TTLs of RFC 2308 and name checking.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.reversename
import dns.rrset
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.ANY.PTR import PTR
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA

from quailmail.core.dns import DnsResult, DnsStatus, MxRecord
from quailmail.dns.cache import DEFAULT_MAX_ENTRIES, TtlCache
from quailmail.dns.servers import DNS_PORT, DnsServer, parse_server, servers_from_control

__all__ = [
    "DEFAULT_TIMEOUT",
    "DnsResolver",
    "DnsServer",
    "make_resolver",
    "parse_server",
    "servers_from_control",
]

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0  # seconds for a whole lookup, all servers and retries
ATTEMPT_TIMEOUT = 2.0  # seconds one server gets before the next is asked
EDNS_PAYLOAD = 1232  # DNS flag day 2020: fits any path MTU, no IP fragments
MAX_TTL = 86_400  # unbound's cache-max-ttl; RFC 8767 §4 caps stale data too
MAX_NEGATIVE_TTL = 3_600  # RFC 2308 §5: one to three hours at most
NEGATIVE_TTL_WITHOUT_SOA = 60  # RFC 2308 §5 says do not cache; we keep it short

_Convert = Callable[[dns.rrset.RRset], tuple[Any, ...]]


class InvalidName(ValueError):
    """A name no DNS server can hold: a permanent answer, not an error."""


def query_name(name: str) -> dns.name.Name:
    """The absolute DNS name for `name` (given without trailing dot).

    Labels are taken literally (no zone-file backslash escapes: these names
    come from mail headers), U-labels are converted with IDNA 2003, which is
    what dnspython ships without the `idna` package.  Limits of RFC 1035
    §2.3.4: 63 octets a label, 255 octets on the wire (253 as text).
    """
    text = name[:-1] if name.endswith(".") else name
    if not text:
        raise InvalidName("empty name")
    labels = []
    for label in text.split("."):
        if not label:
            raise InvalidName("empty label")
        if label.isascii():
            raw = label.encode("ascii")
        else:
            try:
                raw = dns.name.IDNA_2003.encode(label)
            except dns.exception.DNSException as error:
                raise InvalidName(f"label {label!r} is not valid IDNA: {error}") from None
        if len(raw) > 63:
            raise InvalidName("label longer than 63 octets")
        labels.append(raw)
    try:
        return dns.name.Name([*labels, b""])
    except dns.name.NameTooLong:
        raise InvalidName("name longer than 253 octets") from None
    except dns.exception.DNSException as error:
        raise InvalidName(str(error)) from None


def reverse_name(address: str) -> dns.name.Name:
    """in-addr.arpa (RFC 1035 §3.5) or ip6.arpa (RFC 3596 §2.5) name of an address."""
    try:
        return dns.reversename.from_address(address)
    except (dns.exception.DNSException, ValueError):
        raise InvalidName(f"{address!r} is not an IP address") from None


class DnsResolver:
    """Asynchronous stub resolver with a bounded TTL cache.

    `servers` are (host, port) pairs (IP literals, IPv4 or IPv6); None reads
    the system's /etc/resolv.conf.  `timeout` bounds a whole lookup,
    `attempt_timeout` one try at one server.  `clock` is a monotonic clock in
    seconds, injectable so tests expire cache entries without sleeping (it is
    not `core.clock.Clock`: wall time jumps, cache deadlines must not).

    A cache hit returns the very DnsResult of the miss, so its `ttl` is the
    (clamped) TTL as received, not counted down.  One resolver serves one
    event loop at a time; it has no locks because it needs none there.

    A server whose port is closed looks like a silent one: dnspython's
    asyncio UDP sockets are not connected, so the ICMP error never reaches
    it, and the next server is asked after `attempt_timeout`.
    """

    def __init__(
        self,
        servers: Sequence[tuple[str, int]] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        attempt_timeout: float | None = None,
        edns_payload: int | None = EDNS_PAYLOAD,
        cache_size: int = DEFAULT_MAX_ENTRIES,
        min_ttl: int = 0,
        max_ttl: int = MAX_TTL,
        negative_ttl: int = NEGATIVE_TTL_WITHOUT_SOA,
        max_negative_ttl: int = MAX_NEGATIVE_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout <= 0:
            raise ValueError("DNS timeout must be positive")
        self.timeout = timeout
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.negative_ttl = negative_ttl
        self.max_negative_ttl = max_negative_ttl
        self.cache = TtlCache(cache_size)
        self.hits = 0
        self.misses = 0
        self._clock = clock
        self._inflight: dict[tuple[Any, str], asyncio.Task[DnsResult[Any]]] = {}

        if servers is None:
            self.servers = _system_servers()
        else:
            self.servers = [DnsServer(host, port) for host, port in servers]
        if not self.servers:
            raise ValueError("no DNS servers given")
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in self.servers]
        resolver.cache = None  # ours is in front; dnspython's would be a second copy
        resolver.lifetime = timeout
        resolver.timeout = min(attempt_timeout or ATTEMPT_TIMEOUT, timeout)
        if edns_payload is None:
            resolver.use_edns(False)
        else:
            # RFC 6891: advertise a payload size; larger answers still come
            # truncated over UDP and are asked again over TCP.
            resolver.use_edns(0, 0, edns_payload)
        self._resolver = resolver

    # -- the Resolver protocol --------------------------------------------

    async def txt(self, name: str) -> DnsResult[bytes]:
        """TXT records, each record's character-strings joined (RFC 6376 §3.6.2.2)."""
        return await self._lookup(name, dns.rdatatype.TXT, _txt_records, query_name)

    async def a(self, name: str) -> DnsResult[str]:
        return await self._lookup(name, dns.rdatatype.A, _a_records, query_name)

    async def aaaa(self, name: str) -> DnsResult[str]:
        return await self._lookup(name, dns.rdatatype.AAAA, _aaaa_records, query_name)

    async def mx(self, name: str) -> DnsResult[MxRecord]:
        """MX records sorted by preference (ties keep the server's order)."""
        return await self._lookup(name, dns.rdatatype.MX, _mx_records, query_name)

    async def ptr(self, address: str) -> DnsResult[str]:
        return await self._lookup(address, dns.rdatatype.PTR, _ptr_records, reverse_name)

    # -- cache and in-flight sharing ---------------------------------------

    async def _lookup(
        self,
        text: str,
        rdtype: dns.rdatatype.RdataType,
        convert: _Convert,
        to_name: Callable[[str], dns.name.Name],
    ) -> DnsResult[Any]:
        # The hot path: a dict lookup and a clock comparison, nothing else.
        key = (rdtype, text.lower())
        hit = self.cache.get(key, self._clock())
        if hit is not None:
            self.hits += 1
            return hit
        self.misses += 1
        # Concurrent lookups of one name share one query: a burst of mail
        # signed by one domain must not send a burst of identical queries.
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(
                self._fetch(key, text, rdtype, convert, to_name)
            )
            self._inflight[key] = task
            task.add_done_callback(partial(self._forget, key))
        # shield: one caller giving up must not cancel the others' lookup.
        return await asyncio.shield(task)

    def _forget(self, key: tuple[Any, str], task: asyncio.Task[DnsResult[Any]]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]

    async def _fetch(
        self,
        key: tuple[Any, str],
        text: str,
        rdtype: dns.rdatatype.RdataType,
        convert: _Convert,
        to_name: Callable[[str], dns.name.Name],
    ) -> DnsResult[Any]:
        try:
            qname = to_name(text)
        except InvalidName as error:
            return DnsResult(DnsStatus.NXDOMAIN, reason=f"invalid name: {error}")
        result = await self._query(qname, rdtype, convert)
        if result.status is not DnsStatus.TEMPFAIL:  # RFC 2308 §7: do not cache failures
            self.cache.put(key, result, result.ttl, self._clock())
        return result

    # -- one lookup over the wire -------------------------------------------

    async def _query(
        self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType, convert: _Convert
    ) -> DnsResult[Any]:
        kind = dns.rdatatype.to_text(rdtype)
        try:
            # dnspython keeps to its lifetime; this bound is for the cases it
            # cannot see (a stalled TCP write), so no lookup hangs forever.
            async with asyncio.timeout(self.timeout + 1.0):
                answer = await self._resolver.resolve(
                    qname, rdtype, raise_on_no_answer=False, search=False
                )
        except dns.resolver.NXDOMAIN as error:
            responses = error.kwargs.get("responses") or {}
            response = next(iter(responses.values()), None)
            ttl = self._negative_ttl(response)
            return DnsResult(DnsStatus.NXDOMAIN, reason="no such name (NXDOMAIN)", ttl=ttl)
        except dns.resolver.YXDOMAIN:
            # RFC 6672 §2.2: the DNAME rewrite overflowed; the name cannot exist.
            return DnsResult(
                DnsStatus.NXDOMAIN, reason="name too long after DNAME (YXDOMAIN)", ttl=0
            )
        except dns.resolver.NoAnswer:  # not raised with raise_on_no_answer=False
            return DnsResult(DnsStatus.NODATA, reason=f"no {kind} records (NODATA)", ttl=0)
        except dns.resolver.NoNameservers as error:
            return DnsResult(DnsStatus.TEMPFAIL, reason=_describe_failures(error))
        except (dns.exception.Timeout, TimeoutError):
            return DnsResult(DnsStatus.TEMPFAIL, reason=f"timed out after {self.timeout:g} s")
        except dns.exception.DNSException as error:
            return DnsResult(DnsStatus.TEMPFAIL, reason=f"DNS error: {error}")
        except OSError as error:
            return DnsResult(DnsStatus.TEMPFAIL, reason=f"network error: {error}")
        except Exception as error:
            # The contract is "no exception reaches the caller": an unforeseen
            # one is a resolver bug, logged, and a temporary failure, so the
            # mail is retried rather than lost or judged on no evidence.
            log.exception("unexpected error looking up %s %s", qname, kind)
            return DnsResult(DnsStatus.TEMPFAIL, reason=f"resolver error: {error!r}")
        if answer.rrset is None:
            ttl = self._negative_ttl(answer.response)
            return DnsResult(DnsStatus.NODATA, reason=f"no {kind} records (NODATA)", ttl=ttl)
        # The TTL of a CNAME chain is its shortest link (RFC 1034 §3.6.2).
        ttl = max(self.min_ttl, min(answer.chaining_result.minimum_ttl, self.max_ttl))
        records = convert(answer.rrset)
        where = _server_text(answer.nameserver or "?", answer.port or DNS_PORT)
        return DnsResult(DnsStatus.ANSWER, records, reason=f"answer from {where}", ttl=ttl)

    def _negative_ttl(self, response: dns.message.Message | None) -> int:
        """RFC 2308 §5: the lesser of the SOA's own TTL and its MINIMUM field."""
        ttl = self.negative_ttl
        if response is not None:
            for rrset in response.authority:
                soa = rrset[0] if rrset.rdtype == dns.rdatatype.SOA and rrset else None
                if isinstance(soa, SOA):
                    ttl = min(rrset.ttl, soa.minimum)
                    break
        return max(self.min_ttl, min(ttl, self.max_negative_ttl))


def _system_servers() -> list[DnsServer]:
    """Servers of /etc/resolv.conf, or the loopback as the C library does."""
    try:
        system = dns.resolver.Resolver(configure=True)
    except dns.resolver.NoResolverConfiguration:
        return [DnsServer("127.0.0.1", DNS_PORT)]
    servers = []
    for entry in system.nameservers:
        if isinstance(entry, dns.nameserver.Do53Nameserver):
            servers.append(DnsServer(entry.address, entry.port))
        elif isinstance(entry, str):
            servers.append(DnsServer(entry, system.port))
    return servers or [DnsServer("127.0.0.1", DNS_PORT)]


def _server_text(host: str, port: int) -> str:
    return str(DnsServer(host, port))


def _describe_failures(error: dns.resolver.NoNameservers) -> str:
    """A few words per server: 'SERVFAIL from 127.0.0.1:53; ...'."""
    parts: list[str] = []
    for server, _tcp, port, failure, response in error.kwargs.get("errors", []):
        if isinstance(response, dns.message.Message):
            what = dns.rcode.to_text(response.rcode())
        elif isinstance(failure, ConnectionRefusedError):
            what = "connection refused"
        elif isinstance(failure, dns.exception.Timeout):
            what = "timeout"
        else:
            what = type(failure).__name__ if failure is not None else "no answer"
        # dnspython names a server "Do53:ADDRESS@PORT" in its error list.
        host = str(server)
        if host.startswith("Do53:"):
            host = host[5:].rpartition("@")[0]
        part = f"{what} from {_server_text(host, int(port))}"
        if part not in parts:
            parts.append(part)
    return "; ".join(parts) or "no DNS server answered"


def _txt_records(rrset: dns.rrset.RRset) -> tuple[bytes, ...]:
    return tuple(b"".join(rd.strings) for rd in rrset if isinstance(rd, TXT))


def _a_records(rrset: dns.rrset.RRset) -> tuple[str, ...]:
    return tuple(str(rd.address) for rd in rrset if isinstance(rd, A))


def _aaaa_records(rrset: dns.rrset.RRset) -> tuple[str, ...]:
    return tuple(str(rd.address) for rd in rrset if isinstance(rd, AAAA))


def _host(name: dns.name.Name) -> str:
    # The root is RFC 7505's null MX: "" by the contract of core.dns.MxRecord.
    return "" if name == dns.name.root else name.to_text(omit_final_dot=True)


def _mx_records(rrset: dns.rrset.RRset) -> tuple[MxRecord, ...]:
    mxs = [MxRecord(rd.preference, _host(rd.exchange)) for rd in rrset if isinstance(rd, MX)]
    return tuple(sorted(mxs, key=lambda mx: mx.preference))


def _ptr_records(rrset: dns.rrset.RRset) -> tuple[str, ...]:
    return tuple(_host(rd.target) for rd in rrset if isinstance(rd, PTR))


def make_resolver(
    servers: Sequence[str] | None,
    root: Path | None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> DnsResolver:
    """The resolver the CLI builds: `--dns` wins over `control/dnsservers`,
    which wins over /etc/resolv.conf.  Raises ValueError on a bad server."""
    chosen: list[DnsServer] | None = None
    if servers:
        chosen = [parse_server(text) for text in servers]
    elif root is not None:
        chosen = servers_from_control(root) or None
    return DnsResolver(chosen, timeout=timeout)
