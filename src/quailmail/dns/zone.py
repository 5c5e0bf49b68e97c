"""Zone data for the test DNS server: records, faults, and the answer logic.

A `Zone` holds RRsets by (name, type) below one origin (the root by default,
so one zone serves gmail.com and example.net alike) and decides, for a
question, what an authoritative server says (RFC 1034 §4.3.2):

- the records, following a CNAME inside the zone;
- NODATA (NOERROR, no answer, SOA in authority) when the name exists with
  other types or only has names below it (an empty non-terminal, RFC 8020);
- NXDOMAIN with the SOA in authority, whose MINIMUM sets negative caching
  (RFC 2308 §3);
- or an injected fault for the name, or for one type at the name: SERVFAIL,
  REFUSED, or no answer at all (servers that time out on type SPF or TXT
  while answering A exist, and the SPF suites of RFC 7208 test them).

All methods lock, because tests change the zone while the server thread reads
it.  Loaders for the text formats live in `quailmail.dns.zonefile`.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset
from dns.rdtypes.ANY.CNAME import CNAME
from dns.rdtypes.ANY.SPF import SPF
from dns.rdtypes.ANY.TXT import TXT

IN = dns.rdataclass.IN
DEFAULT_TTL = 300
TXT_STRING_MAX = 255  # RFC 1035 §3.3: a <character-string> is at most 255 octets
MAX_CNAME_HOPS = 8
_TEXT_LINE = re.compile(r"(\S+)\s+(?:(\d+)\s+)?(\S+)(?:\s+(.*))?")


class Fault(enum.Enum):
    """What a broken or unreachable server does instead of answering."""

    SERVFAIL = "servfail"
    REFUSED = "refused"
    TIMEOUT = "timeout"  # the query is dropped; the client times out


@dataclass
class Lookup:
    """The server's reply to one question, before rendering."""

    rcode: dns.rcode.Rcode = dns.rcode.NOERROR
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    fault: Fault | None = None


def to_name(name: str | dns.name.Name) -> dns.name.Name:
    """Absolute name; text is taken as relative to the root (trailing dot optional)."""
    if isinstance(name, dns.name.Name):
        return name if name.is_absolute() else name.derelativize(dns.name.root)
    return dns.name.from_text(name, origin=dns.name.root)


def txt_strings(value: bytes | str | Sequence[bytes | str]) -> tuple[bytes, ...]:
    """Character-strings for a TXT record.

    One bytes/str value is cut into 255-octet strings, as publishers split a
    long DKIM key; a list is taken as the explicit strings.  str is UTF-8.
    """
    if isinstance(value, bytes | str):
        data = value.encode("utf-8") if isinstance(value, str) else value
        chunks = [data[i : i + TXT_STRING_MAX] for i in range(0, len(data), TXT_STRING_MAX)]
        return tuple(chunks) or (b"",)  # a TXT record holds at least one string
    strings = tuple(s.encode("utf-8") if isinstance(s, str) else s for s in value)
    if not strings:
        raise ValueError("a TXT record needs at least one string")
    return strings


class Zone:
    """Authoritative data below `origin`, changeable while a server runs."""

    def __init__(
        self,
        origin: str = ".",
        *,
        ttl: int = DEFAULT_TTL,
        soa_ttl: int = 3600,
        soa_minimum: int = 60,
    ) -> None:
        self.origin = to_name(origin)
        self.ttl = ttl
        self._lock = threading.RLock()
        self._rrsets: dict[tuple[dns.name.Name, dns.rdatatype.RdataType], dns.rrset.RRset] = {}
        # (name, None) fails every question for the name; (name, type) one type.
        self._faults: dict[tuple[dns.name.Name, dns.rdatatype.RdataType | None], Fault] = {}
        self._names: set[dns.name.Name] = set()  # owners and all their ancestors
        self.set_soa(soa_ttl, soa_minimum)

    # -- changing the data ---------------------------------------------------

    def set_soa(self, ttl: int, minimum: int) -> None:
        """The SOA sent with negative answers; min(ttl, minimum) is their
        cache time (RFC 2308 §5)."""
        soa = dns.rdata.from_text(
            IN, dns.rdatatype.SOA, f"ns.invalid. hostmaster.invalid. 1 3600 600 86400 {minimum}"
        )
        ns = dns.rdata.from_text(IN, dns.rdatatype.NS, "ns.invalid.")
        with self._lock:
            self._put(self.origin, soa, ttl, replace=True)
            self._put(self.origin, ns, ttl, replace=True)

    def add(
        self,
        name: str | dns.name.Name,
        rdtype: str | dns.rdatatype.RdataType,
        value: str,
        ttl: int | None = None,
    ) -> None:
        """Add one record from its zone-file text (`10 mx.example.com`).

        Names inside the value are relative to the root, so a trailing dot
        is optional."""
        kind = dns.rdatatype.RdataType.make(rdtype)
        rdata = dns.rdata.from_text(IN, kind, value, origin=dns.name.root, relativize=False)
        with self._lock:
            self._put(to_name(name), rdata, ttl)

    def add_txt(
        self,
        name: str | dns.name.Name,
        value: bytes | str | Sequence[bytes | str],
        ttl: int | None = None,
    ) -> None:
        rdata = TXT(IN, dns.rdatatype.TXT, txt_strings(value))
        with self._lock:
            self._put(to_name(name), rdata, ttl)

    def add_spf(
        self,
        name: str | dns.name.Name,
        value: bytes | str | Sequence[bytes | str],
        ttl: int | None = None,
    ) -> None:
        """A record of type SPF (99, RFC 4408 §3.1.1), which RFC 7208 §3.1
        dropped: checkers must not use it, and tests show they do not."""
        rdata = SPF(IN, dns.rdatatype.SPF, txt_strings(value))
        with self._lock:
            self._put(to_name(name), rdata, ttl)

    def add_a(self, name: str, address: str, ttl: int | None = None) -> None:
        self.add(name, dns.rdatatype.A, address, ttl)

    def add_aaaa(self, name: str, address: str, ttl: int | None = None) -> None:
        self.add(name, dns.rdatatype.AAAA, address, ttl)

    def add_mx(self, name: str, preference: int, exchange: str, ttl: int | None = None) -> None:
        self.add(name, dns.rdatatype.MX, f"{preference} {exchange or '.'}", ttl)

    def add_ptr(self, name: str, target: str, ttl: int | None = None) -> None:
        """`name` is the reverse name (`4.3.2.1.in-addr.arpa`) or an address."""
        self.add(_reverse_or_name(name), dns.rdatatype.PTR, target, ttl)

    def add_cname(self, name: str, target: str, ttl: int | None = None) -> None:
        self.add(name, dns.rdatatype.CNAME, target, ttl)

    def set_fault(
        self,
        name: str | dns.name.Name,
        fault: Fault | None,
        rdtype: str | dns.rdatatype.RdataType | None = None,
    ) -> None:
        """Make every question for exactly `name` fail this way, or only
        questions of type `rdtype` (None: heal).  A fault for the type wins
        over one for the whole name."""
        kind = None if rdtype is None else dns.rdatatype.RdataType.make(rdtype)
        key = (to_name(name), kind)
        with self._lock:
            if fault is None:
                self._faults.pop(key, None)
            else:
                self._faults[key] = fault

    def remove(
        self, name: str | dns.name.Name, rdtype: str | dns.rdatatype.RdataType | None = None
    ) -> None:
        """Remove the name's records of one type, or all of them."""
        owner = to_name(name)
        with self._lock:
            for key in list(self._rrsets):
                if key[0] == owner and (
                    rdtype is None or key[1] == dns.rdatatype.RdataType.make(rdtype)
                ):
                    del self._rrsets[key]
            self._reindex()

    def clear(self) -> None:
        """Drop all records and faults (the SOA and NS at the origin stay)."""
        with self._lock:
            apex = [(self.origin, dns.rdatatype.SOA), (self.origin, dns.rdatatype.NS)]
            self._rrsets = {key: self._rrsets[key] for key in apex}
            self._faults.clear()
            self._reindex()

    def _put(
        self, owner: dns.name.Name, rdata: dns.rdata.Rdata, ttl: int | None, replace: bool = False
    ) -> None:
        if not owner.is_subdomain(self.origin):
            raise ValueError(f"{owner} is outside the zone {self.origin}")
        key = (owner, rdata.rdtype)
        rrset = None if replace else self._rrsets.get(key)
        if rrset is None:
            rrset = dns.rrset.RRset(owner, IN, rdata.rdtype)
            self._rrsets[key] = rrset
        rrset.add(rdata, self.ttl if ttl is None else ttl)
        self._index(owner)

    def _index(self, owner: dns.name.Name) -> None:
        while owner not in self._names:
            self._names.add(owner)
            if owner == self.origin:
                break
            owner = owner.parent()

    def _reindex(self) -> None:
        self._names.clear()
        for owner, _kind in self._rrsets:
            self._index(owner)

    # -- text formats ------------------------------------------------------------

    @classmethod
    def from_keytable(cls, path: str | Path) -> Zone:
        """A zone from a key table file (see `load_keytable`)."""
        zone = cls()
        zone.load_keytable(Path(path).read_text(encoding="utf-8"))
        return zone

    @classmethod
    def from_text(cls, text: str) -> Zone:
        zone = cls()
        zone.load_text(text)
        return zone

    @classmethod
    def from_tinydns(cls, text: str) -> Zone:
        zone = cls()
        zone.load_tinydns(text)
        return zone

    def load_keytable(self, text: str) -> None:
        """Mail::DKIM's t/FAKE_DNS.dat format, shared by ../testdata: one TXT
        record a line, `NAME  VALUE`, the value's character-strings joined.

        `NXDOMAIN` removes the name, `~~Query timed out~~` drops its queries,
        any other `~~text~~` answers SERVFAIL, `""` is one empty string.
        """
        for number, name, line in _lines(text):
            fields = line.split(None, 1)
            try:
                if len(fields) < 2:
                    raise ValueError("expected NAME VALUE")
                data = fields[1]
                if data == "NXDOMAIN":
                    self.remove(name)
                elif len(data) >= 4 and data.startswith("~~") and data.endswith("~~"):
                    timeout = "timed out" in data.lower()
                    self.set_fault(name, Fault.TIMEOUT if timeout else Fault.SERVFAIL)
                else:
                    self.add_txt(name, "" if data == '""' else data)
            except (ValueError, dns.exception.DNSException) as error:
                raise ValueError(f"key table line {number}: {error}") from None

    def load_text(self, text: str) -> None:
        """One record a line: `NAME [TTL] TYPE VALUE`.

        TYPE is any type dnspython knows, VALUE its zone-file text
        (`example.com MX 10 mx.example.com`).  An unquoted TXT value is one
        value cut into 255-octet strings; quoted ones are the exact strings.
        Pseudo-types SERVFAIL, REFUSED, TIMEOUT inject a fault and NXDOMAIN
        removes the name.  `#` and `;` start comment lines.
        """
        for number, name, line in _lines(text):
            try:
                match = _TEXT_LINE.fullmatch(line)
                if match is None:
                    raise ValueError("expected NAME [TTL] TYPE VALUE")
                _name, ttl_text, kind_text, value = match.groups(default="")
                ttl = int(ttl_text) if ttl_text else None
                kind = kind_text.upper()
                if kind in ("SERVFAIL", "REFUSED", "TIMEOUT"):
                    self.set_fault(name, Fault[kind])
                elif kind == "NXDOMAIN":
                    self.remove(name)
                elif kind == "TXT" and not value.startswith('"'):
                    self.add_txt(name, value, ttl)
                else:
                    self.add(name, kind, value, ttl)
            except (ValueError, dns.exception.DNSException) as error:
                raise ValueError(f"zone line {number}: {error}") from None

    def load_tinydns(self, text: str) -> None:
        """tinydns-data lines (djbdns): `'fqdn:text:ttl`, `+fqdn:ip:ttl`,
        `=fqdn:ip:ttl`, `@fqdn:ip:x:dist:ttl`, `Cfqdn:p:ttl`, `^fqdn:p:ttl`,
        `3fqdn:hex:ttl`, `6fqdn:hex:ttl`, `:fqdn:n:rdata:ttl`, with `\\NNN`
        octal escapes.  NS and SOA lines (`.`, `&`, `Z`) are skipped: this
        zone's SOA is its own.
        """
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.rstrip("\r\n")
            if not line or line[0] in "#-%.&Z":
                continue
            try:
                self._tinydns_line(line)
            except (IndexError, ValueError, dns.exception.DNSException) as error:
                raise ValueError(f"tinydns line {number}: {error}") from None

    def _tinydns_line(self, line: str) -> None:
        kind, fields = line[0], line[1:].split(":")
        fields += [""] * (6 - len(fields))
        owner = _tinydns_name(fields[0])

        def ttl(index: int) -> int | None:
            return int(fields[index]) if fields[index].isdigit() else None

        if kind == "'":
            self.add_txt(owner, _tinydns_unescape(fields[1]), ttl(2))
        elif kind in "+=":
            self.add(owner, dns.rdatatype.A, fields[1], ttl(2))
            if kind == "=":
                self.add(dns.reversename.from_address(fields[1]), dns.rdatatype.PTR, str(owner))
        elif kind == "@":
            exchange = fields[2] if "." in fields[2] else f"{fields[2] or 'mx'}.mx.{owner}"
            preference = int(fields[3]) if fields[3].isdigit() else 0
            self.add(owner, dns.rdatatype.MX, f"{preference} {exchange}", ttl(4))
            if fields[1]:
                self.add(exchange, dns.rdatatype.A, fields[1], ttl(4))
        elif kind in "C^":
            kind_type = dns.rdatatype.CNAME if kind == "C" else dns.rdatatype.PTR
            self.add(owner, kind_type, str(_tinydns_name(fields[1])), ttl(2))
        elif kind in "36":
            address = str(ipaddress.IPv6Address(int(fields[1], 16)))
            self.add(owner, dns.rdatatype.AAAA, address, ttl(2))
            if kind == "6":
                self.add(dns.reversename.from_address(address), dns.rdatatype.PTR, str(owner))
        elif kind == ":":
            wire = _tinydns_unescape(fields[2])
            kind_type = dns.rdatatype.RdataType.make(int(fields[1]))
            rdata = dns.rdata.from_wire(IN, kind_type, wire, 0, len(wire))
            with self._lock:
                self._put(owner, rdata, ttl(3))
        else:
            raise ValueError(f"unknown line type {kind!r}")

    # -- answering -------------------------------------------------------------

    def lookup(self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> Lookup:
        """What an authoritative server answers for (qname, rdtype, IN)."""
        with self._lock:
            fault = self._faults.get((qname, rdtype)) or self._faults.get((qname, None))
            if fault is not None:
                return Lookup(fault=fault)
            if not qname.is_subdomain(self.origin):
                return Lookup(rcode=dns.rcode.REFUSED)  # not our zone (RFC 8906 §3.1.4)
            result = Lookup()
            name = qname
            for _hop in range(MAX_CNAME_HOPS):
                found = self._find(name, rdtype)
                if found:
                    result.answer.extend(found)
                    return result
                cname = self._rrsets.get((name, dns.rdatatype.CNAME))
                if cname is None or rdtype == dns.rdatatype.CNAME:
                    break
                target = cname[0]
                if not isinstance(target, CNAME):
                    break
                # RFC 1034 §4.3.2 step 3a: give the CNAME and go on with its target.
                result.answer.append(_copy(cname))
                name = target.target
                if not name.is_subdomain(self.origin):
                    return result  # the resolver follows it elsewhere
            if name not in self._names:
                # RFC 6604 §3: NXDOMAIN speaks of the last name of the chain.
                result.rcode = dns.rcode.NXDOMAIN
            result.authority.append(_copy(self._rrsets[(self.origin, dns.rdatatype.SOA)]))
            return result

    def _find(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> list[dns.rrset.RRset]:
        if rdtype == dns.rdatatype.ANY:
            return [_copy(rrset) for (owner, _k), rrset in self._rrsets.items() if owner == name]
        rrset = self._rrsets.get((name, rdtype))
        return [_copy(rrset)] if rrset is not None else []

    def names(self) -> Iterable[dns.name.Name]:
        """Owner names that hold records (for diagnostics)."""
        with self._lock:
            return sorted({owner for owner, _kind in self._rrsets})


def _reverse_or_name(name: str) -> str | dns.name.Name:
    try:
        return dns.reversename.from_address(name)
    except (dns.exception.DNSException, ValueError):
        return name


def _copy(rrset: dns.rrset.RRset) -> dns.rrset.RRset:
    """A copy for one response, so a test changing the zone meanwhile
    cannot change a message being rendered in the server thread."""
    return dns.rrset.from_rdata_list(rrset.name, rrset.ttl, list(rrset))


def _lines(text: str) -> Iterable[tuple[int, str, str]]:
    """(line number, first field, whole line) of the non-comment lines."""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and line[0] not in "#;":
            yield number, line.split(None, 1)[0], line


def _tinydns_unescape(field: str) -> bytes:
    """tinydns-data's escapes: a backslash and up to three octal digits
    (`\\072` is ':'), or a backslash quoting the next character."""
    out = bytearray()
    data = field.encode("utf-8")
    i = 0
    while i < len(data):
        char = data[i]
        i += 1
        if char != 0x5C or i >= len(data):  # not a backslash
            out.append(char)
            continue
        digits = 0
        value = 0
        while digits < 3 and i < len(data) and 0x30 <= data[i] <= 0x37:
            value = value * 8 + data[i] - 0x30
            i += 1
            digits += 1
        if digits:
            out.append(value & 0xFF)
        else:
            out.append(data[i])
            i += 1
    return bytes(out)


def _tinydns_name(field: str) -> dns.name.Name:
    raw = _tinydns_unescape(field).rstrip(b".")
    if not raw:
        return dns.name.root
    return dns.name.Name([*raw.split(b"."), b""])
