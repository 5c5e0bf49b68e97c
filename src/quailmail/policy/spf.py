"""SPF at MAIL FROM, as qmail-spf does it (Jana Saout's patch, in the
seeds' QmailToaster and jms1 qmail).

`control/spfbehavior`, or the rules' `SPFBEHAVIOR` (the variable wins):

| level | what happens |
|---|---|
| 0 | no SPF at all (the default) |
| 1 | check and annotate (`Received-SPF:`, `spf=` in Authentication-Results) |
| 2 | also `451 4.3.0` to MAIL FROM when the check ends in temperror |
| 3 | also refuse fail |
| 4 | also refuse softfail |
| 5 | also refuse neutral |
| 6 | refuse anything but pass (none and permerror too) |

Values above 6 count as 6; text that is not a number as 0 (qmail's
`scan_ulong`).  The check runs after MAIL FROM; a temporary error is
answered there, but a refusal is remembered and given to every RCPT TO
(`550 5.7.1 <explanation>`), where qmail-spf gives it (`flagbarfspf`:
before rcpthosts and the recipient checks, pipeline.RCPT_FIRST).  Clients
with `RELAYCLIENT` and authenticated ones are not checked.  A temperror is
answered `451 4.3.0 SPF lookup failure`; the why goes to the log.

`control/spfexp` is the explanation of a refusal: of a fail when the
record has no exp= of its own, and of every other refused result (an RFC
7208 §6.2 explain-string, with qmail-spf's own `%{xr}`, `%{xs}`, `%{xe}`
and its lenient `%`: `qmail_spf_explanation`); without it a fail says
`SPF fail - not authorized` and the others what the result means.
`control/spfrules`
mechanisms tried before the sender record's final failing `all`, and
`control/spfguess` a policy tried for domains that publish none
(`LocalPolicy`).  `control/me` is the receiver name (%{r}, `receiver=`).

Unlike qmail-spf, a client on 127.0.0.1 or one of our own addresses is not
passed without a check: such clients are relay clients in any real
tcp.smtp, and skipped for that.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass

from quailmail.auth import authres
from quailmail.auth.memo import AnswerMemo
from quailmail.auth.spf import (
    DEFAULT_EXPLANATION,
    LocalPolicy,
    MacroError,
    Mechanism,
    SpfResult,
    SpfSyntaxError,
    SpfVerdict,
    check_mailfrom,
    explain_verdict,
    local_terms,
)
from quailmail.auth.spf.record import parse_explanation
from quailmail.config.control import parse_lines, scan_ulong
from quailmail.core.dns import Resolver
from quailmail.core.reply import Reply
from quailmail.policy.authenv import session_env
from quailmail.policy.base import Client, Message

log = logging.getLogger("quailmail.policy")

MAX_LEVEL = 6
# What each level refuses (besides temperror, answered 4xx from level 2 on).
_REFUSED_FROM: dict[SpfResult, int] = {
    SpfResult.FAIL: 3,
    SpfResult.SOFTFAIL: 4,
    SpfResult.NEUTRAL: 5,
    SpfResult.NONE: 6,
    SpfResult.PERMERROR: 6,
}
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
_MAX_REPLY_LINE = 400

# Keys of `Client.evidence` (cleared at every MAIL FROM).
EVIDENCE = "spf"  # the SpfVerdict of MAIL FROM, for later checks (DMARC)
_REFUSAL = "spf.refusal"  # the Reply every RCPT gets

# MAIL FROM verdicts of this process, reused while their DNS answers stand
# (auth/memo.py): a busy sender's next message costs no evaluation.
VERDICTS: AnswerMemo[SpfVerdict] = AnswerMemo()


def parse_level(text: str | None) -> int:
    """A spfbehavior value as qmail reads it: leading digits, else 0."""
    level = None if text is None else scan_ulong(text.lstrip())
    return 0 if level is None else min(level, MAX_LEVEL)


def behavior(client: Client) -> int:
    """SPFBEHAVIOR from the rules, else control/spfbehavior."""
    env = session_env(client)
    if "SPFBEHAVIOR" in env:
        return parse_level(env["SPFBEHAVIOR"])
    return parse_level(client.control.value("spfbehavior"))


@dataclass(frozen=True, slots=True)
class _LocalTerms:
    """One local policy file, parsed: its mechanisms, or why it is ignored."""

    terms: tuple[Mechanism, ...] = ()
    error: str | None = None


def _parse_local(name: str, data: bytes) -> _LocalTerms:
    try:
        return _LocalTerms(local_terms(" ".join(parse_lines(data)), name))
    except SpfSyntaxError as exc:
        error = str(exc).removeprefix(f"{name}: ")
        log.warning("control/%s ignored: %s", name, error)  # once per version of the file
        return _LocalTerms(error=error)


# The control cache keeps a parse by (file, parser): one parser a file.
_LOCAL_FILES = {name: functools.partial(_parse_local, name) for name in ("spfrules", "spfguess")}
_NO_TERMS = _LocalTerms()


def local_policy(client: Client) -> LocalPolicy | None:
    """control/spfrules and control/spfguess, each parsed once per version
    of its file (the control cache); a file that does not parse is ignored
    with a warning (at its parse), and the other still counts."""
    files = {
        name: client.control.parsed(name, parse, _NO_TERMS) for name, parse in _LOCAL_FILES.items()
    }
    rules, guess = files["spfrules"].terms, files["spfguess"].terms
    if not rules and not guess:
        return None
    return LocalPolicy(rules, guess)


def qmail_spf_explanation(text: str) -> str:
    """qmail-spf's `spfexp` as an RFC 7208 explain-string (§6.2).

    qmail-spf expands its own macros too: `%{xr}` the receiver (RFC's
    `%{r}`), `%{xs}` "SPF record at DOMAIN", `%{xe}` the error (empty for a
    refusal); an upper-case letter URL-escapes, as in RFC macros.  It takes
    a `%` that starts no macro as itself and expands a macro it does not
    know to nothing; so does this.  Characters outside printable ASCII
    become `?`.  The result always parses."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        nxt = text[i + 1 : i + 2]
        if ch != "%":
            out.append(ch if " " <= ch <= "~" else "?")
            i += 1
        elif nxt in ("%", "_", "-"):
            out.append(ch + nxt)
            i += 2
        elif nxt == "{" and (end := text.find("}", i + 2)) >= 0:
            out.append(_qmail_spf_macro(text[i + 2 : end]))
            i = end + 1
        else:
            out.append("%%")
            i += 1
    return "".join(out)


def _qmail_spf_macro(body: str) -> str:
    if body[:1] == "x" and len(body) >= 2:
        letter, rest = body[1], body[2:]
        if letter in "rR":
            body = letter + rest
        elif letter == "s":
            return "SPF record at %{d}"
        elif letter == "S":
            return "SPF%-record%-at%-%{D}"
        else:
            return ""  # %{xe}: qmail-spf's error text, empty for a refusal
    macro = "%{" + body + "}"
    try:
        parse_explanation(macro)
    except MacroError:
        return ""
    return macro


def _parse_spfexp(data: bytes) -> str | None:
    """control/spfexp's first line, as an explain-string (None: no file text)."""
    lines = parse_lines(data)
    return qmail_spf_explanation(lines[0]) if lines and lines[0] else None


def refused_at(result: SpfResult, level: int) -> bool:
    needed = _REFUSED_FROM.get(result)
    return needed is not None and level >= needed


def _line(text: str) -> str:
    return _UNPRINTABLE.sub(" ", text).strip()[:_MAX_REPLY_LINE]


async def refusal(verdict: SpfVerdict, spfexp: str | None, resolver: Resolver) -> Reply:
    """qmail-spf's `550 <explanation> (#5.7.1)` (one reply line per line of
    it): a fail's explanation (the record's exp=, else `spfexp`); for the
    other refused results `spfexp` expanded, as qmail-spf gives it to every
    refusal, or without one what the result means."""
    if verdict.result is SpfResult.FAIL and verdict.explanation:
        explanation = verdict.explanation
    elif spfexp is not None:
        explanation = await explain_verdict(verdict, spfexp, resolver)
    else:
        explanation = f"SPF {verdict.result.value}: {authres.spf_comment(verdict)}"
    lines = [_line(part) for part in explanation.split("\n")]
    return Reply(550, "5.7.1", "\n".join(line for line in lines if line) or DEFAULT_EXPLANATION)


async def at_mail(client: Client, sender: str) -> Reply | None:
    """Check the MAIL FROM identity; 451 on temperror from level 2; a
    refusal is kept for RCPT."""
    if client.trusted:
        return None
    level = behavior(client)
    if level == 0:
        return None
    spfexp = client.control.parsed("spfexp", _parse_spfexp, None)
    verdict = await check_mailfrom(
        client.ip,
        sender,
        client.helo or "",
        client.resolver,
        receiver=client.hostname,
        default_explanation=spfexp or DEFAULT_EXPLANATION,
        local=local_policy(client),
        memo=VERDICTS,
    )
    client.evidence[EVIDENCE] = verdict
    log.info("%s: SPF %s for <%s> (%s)", client.ip, verdict.result.value, sender, verdict.reason)
    if verdict.result is SpfResult.TEMPERROR and level >= 2:
        # qmail-spf's words; why (which name, which server) is in the log only.
        return Reply(451, "4.3.0", "SPF lookup failure")
    if refused_at(verdict.result, level):
        client.evidence[_REFUSAL] = await refusal(verdict, spfexp, client.resolver)
    return None


async def at_rcpt(client: Client, sender: str, recipient: str) -> Reply | None:
    """The refusal decided at MAIL FROM, to every recipient."""
    found = client.evidence.get(_REFUSAL)
    return found if isinstance(found, Reply) else None


async def at_data(client: Client, message: Message) -> Reply | None:
    """`Received-SPF:` on top and `spf=` in Authentication-Results."""
    verdict = client.evidence.get(EVIDENCE)
    if not isinstance(verdict, SpfVerdict):
        return None
    field = authres.received_spf(verdict, fold=True)
    message.add_headers.append(field.encode("utf-8", "surrogateescape") + b"\r\n")
    message.auth_results.append(authres.spf_method(verdict))
    return None
