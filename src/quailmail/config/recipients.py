"""Which recipients an SMTP client may give: relay control and recipient checks.

`decide_recipient` is called once per RCPT by the session driver.  It reads
only cached control files and `stat()`s, so it is cheap.  In order:

1. chkuser's limits (`RcptCounter`): past `CHKUSER_WRONGRCPTLIMIT` refused
   recipients in the session, or `CHKUSER_RCPTLIMIT` accepted recipients in
   the message, every further RCPT is refused before any lookup.
2. Relay control, qmail-smtpd's `addrallowed()`: a client with `RELAYCLIENT`
   set, or authenticated, may give any recipient; any other client only
   one whose domain is in `rcpthosts`/`morercpthosts` (case-insensitively,
   `.suffix` lines as wildcards).  For that other client we also refuse the
   open-relay tricks that would smuggle a foreign address through one of our
   domains: `%`, `!` or `@` in the local part (the percent hack, UUCP bang
   paths, quoted `"a@b"@ours`), a source route (`@a,@b:u@d`), an address
   literal (`u@[192.0.2.1]`), a domain that is not a domain name.
3. Existence, for domains we deliver (chkuser's job), decided as delivery
   decides (`config/lspawn.py`): `users/assign`, a virtual domain's
   directory, a system user (qmail-getpw), else the alias user
   `ROOT/alias`; then the `.qmail` file qmail-local would read in that
   home (a user's own address needs none: the default delivery).  In a
   virtual domain's directory: the vpopmail-style user, a `.qmail-NAME`
   alias file, a `.qmail-default` catch-all, or, with qmail's `-`
   extension rule, a user or `.qmail-PREFIX-default` for a prefix of the
   local part.  The check is made for every client: a relay
   client's typo is refused at once rather than bounced later.  A domain we
   relay for (in `rcpthosts` only: a backup MX) is not checked.
4. Accepted: the recipient to queue is `local@domain` with RELAYCLIENT's
   value appended, as qmail-smtpd does (`RELAYCLIENT="@fixme.example"`).

Replies (RFC 5321 codes, RFC 3463 enhanced codes; texts after qmail-smtpd
and chkuser 2.0.9, whose `#5.x.y` suffixes became enhanced codes):

- accepted: 250 2.1.5 (RFC 3463 X.1.5, destination address valid).
- domain not ours, unauthorized client: 553 5.7.1 (qmail-smtpd's
  `err_nogateway`); the local-part tricks, a source route and an address
  literal get the same code with their reason.
- domain not a domain name: 553 5.1.3 (chkuser's RCPTFORMAT).
- no domain (other than `postmaster`, RFC 5321 §4.5.1): 553 5.1.2 (chkuser's
  DOMAINMISSING, 550 there; 553 is RFC 5321's "mailbox name not allowed").
- unknown user: 550 5.1.1 (chkuser's NORCPT).
- user store unreadable: 451 4.3.0 (chkuser's RESOURCE).
- `CHKUSER_RCPTLIMIT` reached: 452 4.5.3, as RFC 5321 §4.5.3.1.10 asks, so
  the sender sends the rest in another transaction (chkuser answers 550
  5.5.3, or 571 in 2.0.8, and the rest bounce).
- `CHKUSER_WRONGRCPTLIMIT` reached: 550 5.5.3 (chkuser's MAXWRONGRCPT).
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from quailmail.config.control import CACHE, Control, control_for
from quailmail.config.lspawn import LookupFailure, assignment, qmesearch
from quailmail.config.users import read_vpasswd
from quailmail.core.reply import Reply

ACCEPTED = Reply(250, "2.1.5", "ok")
NOT_IN_RCPTHOSTS = Reply(553, "5.7.1", "sorry, that domain isn't in my list of allowed rcpthosts")
LOCAL_PART_ROUTING = Reply(
    553, "5.7.1", "sorry, relaying with %, ! or @ in the local part is not allowed"
)
SOURCE_ROUTE = Reply(553, "5.7.1", "sorry, source routes are not allowed for relaying")
ADDRESS_LITERAL = Reply(553, "5.7.1", "sorry, address literals are not allowed for relaying")
BAD_DOMAIN = Reply(553, "5.1.3", "sorry, recipient address has invalid format")
NO_DOMAIN = Reply(553, "5.1.2", "sorry, you must specify a domain")
NO_MAILBOX = Reply(550, "5.1.1", "sorry, no mailbox here by that name")
RESOURCE = Reply(451, "4.3.0", "system temporary unavailable, try again later")
TOO_MANY_RCPTS = Reply(452, "4.5.3", "sorry, reached maximum number of recipients for one message")
TOO_MANY_WRONG = Reply(550, "5.5.3", "sorry, you are violating our security policies")

# A domain name of LDH labels (RFC 5321 §4.1.2 `Domain`), checked label by
# label.  Internationalized domains arrive as A-labels (the SMTP engine
# converts U-labels under SMTPUTF8).
_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# Characters of a local part that route mail elsewhere when a host
# interprets them: the percent hack, UUCP bang paths, a second `@`.
_ROUTING_CHARS = frozenset("%!@")


class Verdict(enum.Enum):
    ACCEPT = "accept"
    REFUSE_RELAY = "relay"  # not ours and the client may not relay
    UNKNOWN = "unknown"  # ours, no such mailbox
    BAD_ADDRESS = "syntax"
    LIMIT = "limit"  # a chkuser limit
    TEMPORARY = "temporary"


@dataclass(frozen=True, slots=True)
class RcptDecision:
    """What to answer, and for an accepted recipient the address to queue."""

    verdict: Verdict
    reply: Reply
    recipient: str | None = None  # local@domain + RELAYCLIENT's value
    reason: str = ""  # for the log

    @property
    def accepted(self) -> bool:
        return self.verdict is Verdict.ACCEPT


def _env_limit(env: Mapping[str, str], name: str) -> int | None:
    """chkuser reads its limits as positive numbers; anything else means no limit."""
    try:
        value = int(env.get(name, "").strip())
    except ValueError:
        return None
    return value if value > 0 else None


@dataclass(slots=True)
class RcptCounter:
    """chkuser's two limits, kept per session by the driver.

    `rcpt_limit` (CHKUSER_RCPTLIMIT) counts accepted recipients of the
    current message: call `new_message()` at MAIL FROM and RSET.
    `wrong_limit` (CHKUSER_WRONGRCPTLIMIT) counts refused recipients over the
    whole session: once reached, every further RCPT is refused, whatever
    the address (a dictionary attack or relay probe gets nothing more).
    """

    rcpt_limit: int | None = None
    wrong_limit: int | None = None
    accepted: int = 0
    wrong: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RcptCounter:
        return cls(
            rcpt_limit=_env_limit(env, "CHKUSER_RCPTLIMIT"),
            wrong_limit=_env_limit(env, "CHKUSER_WRONGRCPTLIMIT"),
        )

    def new_message(self) -> None:
        self.accepted = 0

    def check(self) -> RcptDecision | None:
        if self.wrong_limit is not None and self.wrong >= self.wrong_limit:
            return RcptDecision(
                Verdict.LIMIT, TOO_MANY_WRONG, reason=f"{self.wrong} wrong recipients"
            )
        if self.rcpt_limit is not None and self.accepted >= self.rcpt_limit:
            return RcptDecision(Verdict.LIMIT, TOO_MANY_RCPTS, reason=f"{self.accepted} recipients")
        return None

    def record(self, decision: RcptDecision) -> None:
        if decision.accepted:
            self.accepted += 1
        elif decision.verdict in (Verdict.REFUSE_RELAY, Verdict.UNKNOWN, Verdict.BAD_ADDRESS):
            # chkuser with CHKUSER_RCPT_DELAY_ANYERROR: every refused
            # address counts, not only unknown users.
            self.wrong += 1


def decide_recipient(
    root: Path | str | Control,
    local: str,
    domain: str,
    *,
    relayclient: str | None,
    authenticated: bool,
    route: Sequence[str] = (),
    counter: RcptCounter | None = None,
) -> RcptDecision:
    """The answer to `RCPT TO:<[route:]local@domain>`.

    `local` is the local part as the client gave it (quoted or not: only
    the characters matter), `domain` the domain, an address literal with its
    brackets (`[192.0.2.1]`, `[IPv6:…]`), or "" when the path had none.
    `relayclient` is the RELAYCLIENT variable of the connection (None when
    unset).  With a `counter`, chkuser's limits are applied and the
    decision is counted.
    """
    if counter is not None:
        limited = counter.check()
        if limited is not None:
            return limited
    control = root if isinstance(root, Control) else control_for(root)
    decision = _decide(
        control, local, domain, relayclient=relayclient, authenticated=authenticated, route=route
    )
    if counter is not None:
        counter.record(decision)
    return decision


def _decide(
    control: Control,
    local: str,
    domain: str,
    *,
    relayclient: str | None,
    authenticated: bool,
    route: Sequence[str],
) -> RcptDecision:
    may_relay = relayclient is not None or authenticated
    ldomain = domain.lower()

    if not ldomain:
        # RFC 5321 §4.5.1: <postmaster> without a domain must be accepted.
        if local.lower() != "postmaster":
            return RcptDecision(Verdict.BAD_ADDRESS, NO_DOMAIN, reason="no domain")
        ldomain = (control.value("envnoathost") or control.value("me") or "").lower()
        if not ldomain:
            return RcptDecision(Verdict.BAD_ADDRESS, NO_DOMAIN, reason="no domain, no control/me")
        return _accept(f"postmaster@{ldomain}", relayclient, "postmaster")

    if ldomain.startswith("["):
        if not may_relay:
            return RcptDecision(Verdict.REFUSE_RELAY, ADDRESS_LITERAL, reason="address literal")
        return _accept(f"{local}@{domain}", relayclient, "relay client, address literal")

    if not is_domain_name(ldomain):
        return RcptDecision(Verdict.BAD_ADDRESS, BAD_DOMAIN, reason="not a domain name")

    if not may_relay:
        if route:
            return RcptDecision(Verdict.REFUSE_RELAY, SOURCE_ROUTE, reason="source route")
        if not control.rcpthosts_match(ldomain):
            return RcptDecision(Verdict.REFUSE_RELAY, NOT_IN_RCPTHOSTS, reason="not in rcpthosts")
        if _ROUTING_CHARS.intersection(local):
            return RcptDecision(
                Verdict.REFUSE_RELAY, LOCAL_PART_ROUTING, reason="%, ! or @ in local part"
            )

    # RFC 5321 §3.3 and Appendix C: a relay client's source route is ignored;
    # the mail goes to local@domain.
    try:
        found, why = mailbox_exists(control, local, ldomain)
    except OSError as exc:
        return RcptDecision(Verdict.TEMPORARY, RESOURCE, reason=f"user store: {exc}")
    except LookupFailure as exc:
        return RcptDecision(Verdict.TEMPORARY, RESOURCE, reason=str(exc))
    if not found:
        return RcptDecision(Verdict.UNKNOWN, NO_MAILBOX, reason=why)
    return _accept(f"{local}@{ldomain}", relayclient, why)


def is_domain_name(domain: str) -> bool:
    return len(domain) <= 253 and all(_LABEL_RE.fullmatch(x) for x in domain.split("."))


def _accept(address: str, relayclient: str | None, why: str) -> RcptDecision:
    # qmail-smtpd: `if (relayclient) stralloc_cats(&addr, relayclient)`.
    return RcptDecision(Verdict.ACCEPT, ACCEPTED, address + (relayclient or ""), why)


# -- existence -------------------------------------------------------------


def _delivers(data: bytes) -> bool:
    """A `.qmail-default` that delivers (not vpopmail's `bounce-no-mailbox` line)."""
    return b"bounce-no-mailbox" not in data and bool(data.strip())


def _is_catchall(path: Path) -> bool:
    return CACHE.get(path, _delivers, False)


def _bounce_line(data: bytes) -> bool:
    return b"bounce-no-mailbox" in data


def _bounces(path: Path) -> bool:
    """A `-default` file that is vpopmail's `bounce-no-mailbox` line, which
    local delivery bounces (deliver/local.py)."""
    return CACHE.get(path, _bounce_line, False)


def mailbox_exists(control: Control, local: str, domain: str) -> tuple[bool, str]:
    """Whether mail to `local@domain` has somewhere to go, and why (for the log).

    Domains neither in `locals` nor in `virtualdomains` are relayed, not
    checked: (True, "relayed").  For ours, the decision is delivery's:
    `config.lspawn.assignment` (users/assign, `ROOT/domains`, qmail-getpw,
    the alias user), then qmail-local's search for a `.qmail` file in the
    home it gives, or vpopmail's users in a virtual domain's directory.
    Raises LookupFailure where delivery would defer.
    """
    lower = local.lower()
    if not lower or "/" in lower or "\0" in lower:
        return False, "local part not a mailbox name"
    if not control.is_local(domain) and not control.virtualdomain(lower, domain):
        # "" is an exception line (`domain:`): not virtual, and not in
        # locals either, so qmail-send would send it out.
        return True, "relayed"
    found = assignment(control, local, domain)
    if found.domain_dir is not None:
        return _virtual_exists(found.domain_dir, found.ext.lower())
    if not os.path.isdir(found.home):
        if found.uid is None:
            return False, f"no directory {found.home}"
        # qmail-local: "Unable to switch to HOME" is temporary.
        raise LookupFailure(f"home directory {found.home} does not exist (#4.2.1)")
    qmail = qmesearch(found.home, found.dash, found.ext)
    if qmail is None:
        return False, f"no .qmail for {found.source} {found.user}"
    if qmail.path is not None and qmail.is_default and _bounces(qmail.path):
        return False, f"{qmail.path.name} bounces unknown users"
    return True, f"{found.source} {found.user}"


def _virtual_exists(ddir: Path, local: str) -> tuple[bool, str]:
    """vpopmail's answer in the domain directory DDIR for user LOCAL (the
    extension qmail-lspawn gives: the local part of the address)."""
    users = read_vpasswd(ddir)
    if local in users:
        return True, "user"
    if os.path.exists(ddir / f".qmail-{local.replace('.', ':')}"):
        return True, "alias"
    # qmail's extension rule: user-ext reaches user (and .qmail-user-default).
    parts = local.split("-")
    for i in range(len(parts) - 1, 0, -1):
        prefix = "-".join(parts[:i])
        if prefix in users:
            return True, "user with extension"
        if os.path.exists(ddir / f".qmail-{prefix.replace('.', ':')}-default"):
            return True, "alias with extension"
    if _is_catchall(ddir / ".qmail-default"):
        return True, "catch-all"
    return False, "no such user"
