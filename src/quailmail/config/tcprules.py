"""Per-client rules in ucspi-tcp's tcprules format, IPv6 patch included.

A rule is one line, `ADDRESS:allow|deny[,VAR="value"]...`, compiled by
`compile_rules` (`quail tcprules`) into the cdb that Debian's `tcprules`
(package ucspi-tcp-ipv6) writes, byte for byte, and looked up by `lookup` as
tcpserver does on every connection.  What the real programs do, found by
running them (tests/test_tcprules_peer.py holds the comparisons):

Text (tcprules.c):
- Lines end at LF.  A line starting with `#` and an empty line are skipped;
  trailing spaces and tabs are cut.  A CR is not cut: `...:allow\\r` is an
  error, as in tcprules.
- The address ends at the first `:` followed by `allow` or `deny` (the IPv6
  patch's rule, so `::1:allow` has address `::1` and `2001:db8::allow` has
  address `2001:db8:`).  Spaces are not trimmed inside: `1.2.3.4 :allow` has
  the key `1.2.3.4 ` and never matches.
- After `allow`/`deny` come `,NAME=` then a quote character, the value and the
  same character again: `X="v"`, `X=/a"b/`; an "unquoted" `X=xx` is the empty
  value quoted by `x`, and `X=v` is an error (no closing `v`).  Anything else is
  an error.
- `A.B.C.LO-HI` stands for one rule per number LO..HI (HI cut to 255; none
  when LO > HI); only the first `-` counts, and only in addresses without `=`
  or `@`.  `10.2-3.` is `10.2.` and `10.3.`.  IPv6 addresses have no ranges.
- Differences, on purpose: a line that is not blank, not a comment and has no
  `:allow`/`:deny` is an error here.  Original tcprules 0.88 skips a line with
  no colon at all; Debian's ucspi-tcp-ipv6 1:0.88-7 loops forever on it (and
  on a line of spaces, which both tcprules 0.88 and we skip).  A NUL byte is an
  error here (tcprules would write it into the cdb, where it ends the value).

The cdb: key = the address as written (a range gives one key per address),
value = `D\\0` for deny (nothing for allow), then `+NAME=value\\0` per variable,
in order.  Duplicate keys are all written; the first one is the one found.
Variables set twice in one rule end with the last value, as in tcpserver.

Lookup (rules.c with the IPv6 patch), first key found wins:
  `INFO@IP`, `INFO@=HOST` (only with an ident name, which quailmail never asks
  for), `IP`, `=HOST`, each prefix of IP ending in `.` or `:` from the longest,
  `=.PARENT` for each parent domain of HOST from the longest, `=`, and `` (the
  default).  Host keys are tried only with a verified reverse name (the caller
  resolves it; tcpserver's TCPREMOTEHOST).  IP is the text tcpserver writes:
  an IPv4-mapped IPv6 address (`::ffff:1.2.3.4`) as plain IPv4, IPv6 in
  lowercase hex with the longest run of zero groups (the first of equal runs,
  even a single group) written `::` -- `2001:db8::1:1:1:1:1`, where RFC 5952
  writes `2001:db8:0:1:1:1:1:1`.  IPv6 prefixes are therefore textual:
  `2001:db8:` matches all of 2001:db8::/32, but `2001:0:` never matches
  `2001:0:0:...`, which is written `2001::...`.

A missing cdb: tcpserver `-x FILE` drops every connection while FILE does not
exist ("unable to read"), unless also given `-X`; then, as without `-x`, it
allows with no variables.  `lookup` returns None (allow, no variables: `-X`)
unless told `missing_ok=False`, when it raises FileNotFoundError (`-x`).
Any other read error or a corrupt cdb raises (tcpserver drops the connection).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from quailmail.config.cdb import Cdb, CdbError, make_cdb

SMTP_RULES = "tcp.smtp.cdb"
SUBMISSION_RULES = "tcp.submission.cdb"

_ULONG = 2**64  # tcprules' scan_ulong wraps as an unsigned long does


class TcpRulesError(ValueError):
    """A rules text tcprules would refuse; `lineno` counts from 1."""

    def __init__(self, lineno: int, line: str, reason: str) -> None:
        super().__init__(f"line {lineno}: {reason}: {line!r}")
        self.lineno = lineno
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class Rule:
    """One line of rules: its address as written and the keys it compiles to."""

    address: str
    allow: bool
    env: tuple[tuple[str, str], ...]
    lineno: int
    keys: tuple[str, ...]

    def data(self) -> bytes:
        """The cdb value: `D\\0` for deny, then `+NAME=value\\0` per variable."""
        out = b"" if self.allow else b"D\0"
        for name, value in self.env:
            out += b"+" + _encode(f"{name}={value}") + b"\0"
        return out


@dataclass(frozen=True)
class RuleMatch:
    """The rule a client matched: its key, allow or deny, the variables it sets."""

    key: str
    allow: bool
    env: dict[str, str] = field(default_factory=dict)
    # Every setting in order, repeats included (what tcprulescheck prints).
    settings: tuple[tuple[str, str], ...] = ()


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _number(text: str) -> int | None:
    """scan_ulong over the whole text: digits only; empty is 0, as in tcprules."""
    if text and not (text.isascii() and text.isdigit()):
        return None
    return int(text) % _ULONG if text else 0


def expand_address(address: str) -> tuple[str, ...] | None:
    """The keys of an address (a range gives several, or none); None if malformed."""
    dash = address.find("-")
    if dash < 0 or "=" in address or "@" in address:
        return (address,)
    left = address.rfind(".", 0, dash) + 1
    right = address.find(".", dash + 1)
    if right < 0:
        right = len(address)
    bottom = _number(address[left:dash])
    top = _number(address[dash + 1 : right])
    if bottom is None or top is None:
        return None
    top = min(top, 255)
    head, tail = address[:left], address[right:]
    return tuple(f"{head}{n}{tail}" for n in range(bottom, top + 1))


def _split_rule(line: str) -> tuple[str, bool, str] | None:
    """Address, allow, rest: at the first `:` followed by allow/deny (IPv6 patch)."""
    colon = line.find(":")
    while colon >= 0:
        rest = line[colon + 1 :]
        if rest.startswith("deny"):
            return line[:colon], False, rest[4:]
        if rest.startswith("allow"):
            return line[:colon], True, rest[5:]
        colon = line.find(":", colon + 1)
    return None


def _parse_line(line: str, lineno: int) -> Rule:
    if "\0" in line:
        raise TcpRulesError(lineno, line, "NUL byte")
    split = _split_rule(line)
    if split is None:
        reason = "no ':allow' or ':deny'"
        if line.endswith("\r"):
            reason += " (CRLF line end?)"
        raise TcpRulesError(lineno, line, reason)
    address, allow, rest = split
    env: list[tuple[str, str]] = []
    while rest:
        if rest[0] != ",":
            hint = " (CRLF line end?)" if rest == "\r" else ""
            raise TcpRulesError(lineno, line, f"expected ',' before {rest!r}{hint}")
        equals = rest.find("=")
        if equals < 0:
            raise TcpRulesError(lineno, line, "variable without '='")
        name = rest[1:equals]
        rest = rest[equals + 1 :]
        if not rest:
            raise TcpRulesError(lineno, line, f"no value for {name}")
        quote = rest[0]
        end = rest.find(quote, 1)
        if end < 0:
            raise TcpRulesError(lineno, line, f"value of {name} not closed by {quote!r}")
        env.append((name, rest[1:end]))
        rest = rest[end + 1 :]
    keys = expand_address(address)
    if keys is None:
        raise TcpRulesError(lineno, line, f"bad address range {address!r}")
    return Rule(address=address, allow=allow, env=tuple(env), lineno=lineno, keys=keys)


def parse_rules(text: str) -> list[Rule]:
    """Every rule of a rules text, in order; TcpRulesError at the first bad line."""
    rules = []
    lines = text.split("\n")
    if lines and not lines[-1]:
        lines.pop()  # the text's final LF ends the last line, it does not open one
    for lineno, raw in enumerate(lines, 1):
        if raw.startswith("#"):
            continue
        line = raw.rstrip(" \t")
        if not line:
            continue
        rules.append(_parse_line(line, lineno))
    return rules


def compile_rules(text: str) -> bytes:
    """The cdb tcprules makes of this text (one record per key, in order)."""
    records: list[tuple[bytes, bytes]] = []
    for rule in parse_rules(text):
        try:
            data = rule.data()
            records.extend((_encode(key), data) for key in rule.keys)
        except UnicodeEncodeError:  # a lone surrogate that surrogateescape did not make
            raise TcpRulesError(rule.lineno, rule.address, "not UTF-8") from None
    try:
        return make_cdb(records)
    except CdbError as exc:
        raise TcpRulesError(0, "", str(exc)) from None


def _ip6_text(packed: bytes) -> str:
    """IPv6 as tcpserver's ip6_fmt writes it: the longest zero run (first of
    equals, even one group) as `::`, lowercase hex without leading zeros."""
    groups = [int.from_bytes(packed[i : i + 2], "big") for i in range(0, 16, 2)]
    best_at, best_len, run_at, run_len = -1, 0, -1, 0
    for i, group in enumerate(groups):
        if group:
            run_len = 0
            continue
        if not run_len:
            run_at = i
        run_len += 1
        if run_len > best_len:
            best_at, best_len = run_at, run_len
    if not best_len:
        return ":".join(f"{g:x}" for g in groups)
    head = ":".join(f"{g:x}" for g in groups[:best_at])
    tail = ":".join(f"{g:x}" for g in groups[best_at + best_len :])
    return f"{head}::{tail}"


def rules_ip(ip: str) -> str:
    """The client address as tcpserver writes TCPREMOTEIP; ValueError if not one.

    `::ffff:a.b.c.d` (an IPv4 client on an IPv6 socket) becomes `a.b.c.d`; a
    zone (`%eth0`) is dropped, as ip6_fmt has none.
    """
    addr = ipaddress.ip_address(ip.partition("%")[0])
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return _ip6_text(addr.packed)
    return str(addr)


def candidate_keys(ip: str, hostname: str | None = None, info: str | None = None) -> list[str]:
    """The keys tcpserver tries, in order (rules.c).  `ip` as `rules_ip` gives it."""
    host = hostname.lower().rstrip(".") if hostname else None
    keys = []
    if info is not None:
        keys.append(f"{info}@{ip}")
        if host:
            keys.append(f"{info}@={host}")
    keys.append(ip)
    if host:
        keys.append(f"={host}")
    keys.extend(ip[:n] for n in range(len(ip), 0, -1) if ip[n - 1] in ".:")
    if host:
        keys.extend(f"={host[n:]}" for n in range(len(host)) if host[n] == ".")
        keys.append("=")
    keys.append("")
    return keys


def decode_match(key: str, data: bytes) -> RuleMatch:
    """A cdb value read as tcpserver's found() reads it.

    NUL-terminated entries: `D` denies, `+NAME=value` sets a variable, anything
    else (and an unterminated tail) is ignored.
    """
    allow = True
    settings = []
    entries = data.split(b"\0")
    for entry in entries[:-1]:
        if entry[:1] == b"D":
            allow = False
        elif entry[:1] == b"+" and b"=" in entry:
            name, _, value = entry[1:].partition(b"=")
            settings.append((_decode(name), _decode(value)))
    return RuleMatch(key=key, allow=allow, env=dict(settings), settings=tuple(settings))


def match_cdb(
    cdb: Cdb, ip: str, *, hostname: str | None = None, info: str | None = None
) -> RuleMatch | None:
    """The first rule of `cdb` for this client, None if none matches (allow)."""
    for key in candidate_keys(rules_ip(ip), hostname, info):
        data = cdb.get(_encode(key))
        if data is not None:
            return decode_match(key, data)
    return None


# path -> ((device, inode, mtime_ns, size), parsed cdb).  tcprules renames a new
# file over the old one, so a recompiled file has a new inode and is read anew.
_cache: dict[str, tuple[tuple[int, int, int, int], Cdb]] = {}


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def load_cdb(path: Path) -> Cdb:
    """The cdb at `path`, read again only when the file changed (inode, mtime, size)."""
    name = os.fspath(path)
    cached = _cache.get(name)
    if cached is not None and cached[0] == _signature(os.stat(name)):
        return cached[1]
    with open(name, "rb") as f:
        signature = _signature(os.fstat(f.fileno()))
        cdb = Cdb(f.read())
    _cache[name] = (signature, cdb)
    return cdb


def load_rules(cdb_path: Path) -> Cdb | None:
    """The rules cdb as it is now (one `stat`, read again only when it changed),
    or None when there is no file: every client allowed, no variables.
    Raises CdbError for a corrupt file and OSError for one that cannot be read."""
    try:
        return load_cdb(cdb_path)
    except FileNotFoundError:
        return None


def match_rules(
    cdb: Cdb | None,
    cdb_path: Path,
    ip: str,
    *,
    hostname: str | None = None,
    info: str | None = None,
) -> RuleMatch | None:
    """`lookup` in rules already loaded by `load_rules` from `cdb_path`."""
    if cdb is None:
        return None
    # The answer for a client is kept with the cdb it came from: the same
    # Cdb object means the same file (load_cdb checked it), so a recompiled
    # file still counts at the next connection.
    slot = (ip, hostname, info)
    name = os.fspath(cdb_path)
    answers = _answers.get(name)
    if answers is None or answers[0] is not cdb:
        answers = (cdb, {})
        _answers[name] = answers
    if slot in answers[1]:
        return answers[1][slot]
    match = match_cdb(cdb, ip, hostname=hostname, info=info)
    if len(answers[1]) < 65536:
        answers[1][slot] = match
    return match


def lookup(
    cdb_path: Path,
    ip: str,
    *,
    hostname: str | None = None,
    info: str | None = None,
    missing_ok: bool = True,
) -> RuleMatch | None:
    """The rule for a client, as tcpserver finds it on each connection.

    `hostname`: the client's verified reverse name (forward-confirmed by the
    caller), or None; `info`: its ident name (never asked for by quailmail).
    None means no rule applies: allow with no variables.  A missing file gives
    None, or FileNotFoundError with `missing_ok=False` (tcpserver -x without
    -X).  Raises ValueError for an `ip` that is not an address, CdbError for a
    corrupt file and OSError for one that cannot be read.
    """
    cdb = load_cdb(cdb_path) if not missing_ok else load_rules(cdb_path)
    return match_rules(cdb, cdb_path, ip, hostname=hostname, info=info)


_answers: dict[str, tuple[Cdb, dict[tuple[str, str | None, str | None], RuleMatch | None]]] = {}


def control_rules(root: Path, name: str = SMTP_RULES) -> Path:
    """`ROOT/control/tcp.smtp.cdb` (or another rules cdb of the control directory)."""
    return root / "control" / name


_names: dict[str, tuple[Cdb, bool]] = {}


def names_hosts(cdb: Cdb | None, cdb_path: Path) -> bool:
    """Whether rules loaded from `cdb_path` name hosts (`=host`, `=.domain`,
    `=`): only then is the client's reverse name worth a DNS lookup per
    connection (tcpserver looks it up unless run with -H)."""
    if cdb is None:
        return False
    name = os.fspath(cdb_path)
    hit = _names.get(name)
    if hit is None or hit[0] is not cdb:
        hit = (cdb, any(key.startswith(b"=") or b"@=" in key for key, _ in cdb.items()))
        _names[name] = hit
    return hit[1]
