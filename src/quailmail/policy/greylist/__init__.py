"""Greylisting at connection time: John Simpson's jgreylist (v8, C), with
the seeds' IPv6 patch.

jgreylist decides from the client's address alone, before the first
command, with the knobs it reads from the environment (tcprules):

- `JGREYLIST`: unset → check; empty → allow without a check; text →
  deny with it (`553 DENIED text`, the first `%` replaced by the client's
  address).
- `JGREYLIST_NOREV`: text → deny clients without reverse DNS with it.
- `JGREYLIST_DIR`: the directory of the file store (see `files`);
  `JGREYLIST_REDIS` (ours): a Redis URL, one store for several nodes.
- `JGREYLIST_BY_IP`: non-zero → one entry per address, else per IPv4 /24
  and IPv6 /64.
- `JGREYLIST_HOLDTIME`: seconds from the first sighting until the client
  may send (default 120; 0: at the second connection).
- `JGREYLIST_LOG`: non-zero (the default) → log each disposition in
  jgreylist's words (`GREY first time`, `GREY too soon`, `OK known`, …).
- `JGREYLIST_LIMIT`: non-zero → the refused client's RCPT number LIMIT is
  answered `421 Too many RCPT commands, goodbye.` and the connection
  closed (logged `HANGUP too many RCPT commands`).
- `JGREYLIST_TIMEOUT`: seconds (5 to 300, default 60) the refused
  conversation may last; then `421` and the connection is closed.
  `JGREYLIST_LOG_PID` and `JGREYLIST_LOG_SMTP` are jgreylist's own log
  format and are not read: our log lines carry the process, and the
  session's log is the server's.

A passed client (`OK known`) is remembered in memory for `KNOWN_FOR`
seconds per store and key: its next connections in that time are decided
from the remembered first sighting, without a `stat` and a `utime` of its
file (or a Redis round trip) each.  Only passed keys are remembered, since
a first sighting never changes while its entry lives, and a key still
within its hold time is always looked up; the cost is that the entry's
last sighting (atime) lags by at most a minute, which `quail greylist
clean`, counting in days, does not see, and that an entry deleted by hand
greylists its client again up to a minute later.

Numbers are read as jgreylist's `getenv_int` reads them (C `atoi`: leading
digits, anything else 0; unset or empty: the default).

Where jgreylist's fake conversation answered `450 GREYLIST …`, the client
gets that reply to every RCPT, DATA and BDAT until it quits (MAIL is
taken, as jgreylist takes it: the framework's rblsmtpd mode).  Ours
beyond jgreylist: `RELAYCLIENT` clients are never greylisted (nor denied by
`JGREYLIST_NOREV`), and greylisting refusals
(`UntilAuth`) leave AUTH and STARTTLS open and a successful AUTH lifts them:
an authenticated client is never greylisted.  `JGREYLIST` text is the
admin's explicit deny and stays.  A store that cannot answer (directory
missing, Redis down) refuses with 451, as jgreylist, which died, made the
client retry.
"""

from __future__ import annotations

import enum
import functools
import logging
import time
from pathlib import Path

from quailmail.config.control import scan_ulong
from quailmail.core.dns import DnsStatus
from quailmail.core.reply import Reply
from quailmail.policy.base import Client, Conversation, UntilAuth
from quailmail.policy.dnsbl import sanitize
from quailmail.policy.greylist.files import FileStore
from quailmail.policy.greylist.store import Key, Store, StoreError, Visit, client_key

log = logging.getLogger("quailmail.policy.greylist")

DEFAULT_HOLDTIME = 120
GREY1 = "Try again later."  # jgreylist's words, first sighting
GREY2 = "I said to try later."  # … and within the hold time
TIMEOUT_DEFAULT, TIMEOUT_MIN, TIMEOUT_MAX = 60, 5, 300  # JGREYLIST_TIMEOUT, jgreylist's range
KNOWN_FOR = 60.0  # seconds a passed key is decided from memory
_KNOWN_MAX = 65536  # remembered keys per process; the memory starts over past it
_ATOI_DIGITS = 18  # longer numbers saturate at 10**18 (C's atoi overflows)

# (store, key) → (first sighting, when remembered, monotonic): passed keys.
_known: dict[tuple[Store, Key], tuple[float, float]] = {}


class Verdict(enum.Enum):
    FIRST = "GREY first time"
    TOO_SOON = "GREY too soon"
    KNOWN = "OK known"


def decide(visit: Visit, holdtime: float) -> Verdict:
    """jgreylist: `mtime + HOLDTIME > now` is too soon."""
    if visit.first_seen is None:
        return Verdict.FIRST
    if visit.first_seen + holdtime > visit.now:
        return Verdict.TOO_SOON
    return Verdict.KNOWN


def getenv_int(env: dict[str, str], name: str, default: int) -> int:
    """jgreylist's `getenv_int`: unset or empty → default, else C atoi."""
    value = env.get(name)
    if not value:
        return default
    text = value.lstrip(" \t\n\v\f\r")
    sign = -1 if text[:1] == "-" else 1
    if text[:1] in "+-":
        text = text[1:]
    return sign * (scan_ulong(text, _ATOI_DIGITS) or 0)


def store_from(client: Client) -> Store | None:
    """The store the rules (then the control files) name, or None: off.

    The rules' variables win over the control files; Redis over a
    directory at the same level."""
    env = client.env
    control = client.control
    url = env.get("JGREYLIST_REDIS")
    directory = env.get("JGREYLIST_DIR")
    if not url and not directory:
        url = control.value("greylistredis")
        directory = control.value("greylistdir")
    if url:
        from quailmail.policy.greylist.redisstore import store_for  # noqa: PLC0415

        return store_for(url)
    if directory:
        return _file_store(client.root, directory)
    return None


@functools.lru_cache(maxsize=64)
def _file_store(root: Path, directory: str) -> FileStore:
    return FileStore(root / directory)


def _deny(text: str, ip: str) -> str:
    """jgreylist's message: the first `%` becomes the client's address."""
    return sanitize(text.replace("%", ip, 1))


async def check(client: Client) -> Reply | None:
    """The CONNECT check (after the DNS blocklists)."""
    env = client.env
    ip = client.ip
    logging_on = getenv_int(env, "JGREYLIST_LOG", 1) != 0

    def note(words: str) -> None:
        if logging_on:
            log.info("jgreylist: %s: %s", ip, words)

    explicit = env.get("JGREYLIST")
    if explicit is not None:
        if explicit:
            note("DENY blacklisted")
            return Conversation(553, "5.7.1", "DENIED " + _deny(explicit, ip), *_limits(env))
        note("OK whitelisted")
        return None
    if client.relayclient:
        # Never greylisted (RELAYCLIENT: a trusted network).  JGREYLIST's
        # text above is the admin's deny, and jgreylist, which runs before
        # qmail-smtpd, gives it whatever RELAYCLIENT says.
        return None
    norev = env.get("JGREYLIST_NOREV")
    if norev:
        named = await _has_reverse(client)
        if named is None:
            note("DEFER reverse DNS lookup failed")
            return UntilAuth(451, "4.4.3", "temporary DNS failure, try again later")
        if not named:
            note("DENY no reverse DNS")
            return UntilAuth(553, "5.7.1", "DENIED " + _deny(norev, ip), *_limits(env))
    key = client_key(ip, by_ip=getenv_int(env, "JGREYLIST_BY_IP", 0) != 0)
    holdtime = getenv_int(env, "JGREYLIST_HOLDTIME", DEFAULT_HOLDTIME)
    try:
        store = store_from(client)
        if store is None:
            return None
        remembered = _known.get((store, key))
        if (
            remembered is not None
            and time.monotonic() - remembered[1] < KNOWN_FOR
            and decide(Visit(remembered[0], time.time()), holdtime) is Verdict.KNOWN
        ):
            note(Verdict.KNOWN.value)
            return None
        visit = await store.visit(key)
    except StoreError as exc:
        log.error("jgreylist: %s: store failed: %s", ip, exc)
        return UntilAuth(451, "4.3.0", "greylisting unavailable, try again later")
    verdict = decide(visit, holdtime)
    note(verdict.value)
    if verdict is Verdict.KNOWN:
        assert visit.first_seen is not None
        if len(_known) >= _KNOWN_MAX:
            _known.clear()
        _known[(store, key)] = (visit.first_seen, time.monotonic())
        return None
    _known.pop((store, key), None)
    if verdict is Verdict.FIRST:
        return UntilAuth(450, "4.7.1", "GREYLIST " + GREY1, *_limits(env))
    return UntilAuth(450, "4.7.1", "GREYLIST " + GREY2, *_limits(env))  # Verdict.TOO_SOON


def _limits(env: dict[str, str]) -> tuple[int, float]:
    """jgreylist's JGREYLIST_LIMIT and JGREYLIST_TIMEOUT (clamped to 5 to 300)."""
    timeout = getenv_int(env, "JGREYLIST_TIMEOUT", TIMEOUT_DEFAULT)
    limit = max(0, getenv_int(env, "JGREYLIST_LIMIT", 0))
    return limit, float(min(max(timeout, TIMEOUT_MIN), TIMEOUT_MAX))


async def _has_reverse(client: Client) -> bool | None:
    """tcpserver's TCPREMOTEHOST is set (any PTR name: tcpserver without
    -p does not confirm it); None when the lookup failed temporarily."""
    if client.host or client.env.get("TCPREMOTEHOST"):
        return True
    answer = await client.resolver.ptr(client.ip)
    if answer.status is DnsStatus.TEMPFAIL:
        return None
    return answer.ok and bool(answer.records)
