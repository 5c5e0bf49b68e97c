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
(`550 5.7.1 <explanation>`), where qmail-spf gives it (`flagbarfspf`).
Clients with `RELAYCLIENT` and authenticated ones are not checked.  (Our
RCPT checks run after the recipient checks, so a recipient we would not
take anyway is refused for that, where qmail-spf names SPF first.)

`control/spfexp` is the default explanation of a fail (an RFC 7208 §6.2
explain-string; the record's own exp= comes first), `control/spfrules`
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
    Mechanism,
    SpfResult,
    SpfSyntaxError,
    SpfVerdict,
    check_mailfrom,
    local_terms,
)
from quailmail.config.control import parse_lines
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
_LEADING_NUMBER = re.compile(r"\s*(\d+)")
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
    if text is None:
        return 0
    match = _LEADING_NUMBER.match(text)
    return min(int(match.group(1)), MAX_LEVEL) if match else 0


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
        return _LocalTerms(error=str(exc).removeprefix(f"{name}: "))


# The control cache keeps a parse by (file, parser): one parser a file.
_LOCAL_FILES = {name: functools.partial(_parse_local, name) for name in ("spfrules", "spfguess")}
_NO_TERMS = _LocalTerms()


def local_policy(client: Client) -> LocalPolicy | None:
    """control/spfrules and control/spfguess, each parsed once per version
    of its file (the control cache); a file that does not parse is ignored
    with a warning, and the other still counts."""
    files = {
        name: client.control.parsed(name, parse, _NO_TERMS) for name, parse in _LOCAL_FILES.items()
    }
    for name, parsed in files.items():
        if parsed.error is not None:
            log.warning("%s: control/%s ignored: %s", client.ip, name, parsed.error)
    rules, guess = files["spfrules"].terms, files["spfguess"].terms
    if not rules and not guess:
        return None
    return LocalPolicy(rules, guess)


def refused_at(result: SpfResult, level: int) -> bool:
    needed = _REFUSED_FROM.get(result)
    return needed is not None and level >= needed


def _line(text: str) -> str:
    return _UNPRINTABLE.sub(" ", text).strip()[:_MAX_REPLY_LINE]


def refusal(verdict: SpfVerdict) -> Reply:
    """qmail-spf's `550 <explanation> (#5.7.1)`: the explanation of a fail
    (one reply line per line of it), or what the result means."""
    if verdict.result is SpfResult.FAIL and verdict.explanation:
        lines = [_line(part) for part in verdict.explanation.split("\n")]
        text = "\n".join(line for line in lines if line) or DEFAULT_EXPLANATION
    else:
        text = _line(f"SPF {verdict.result.value}: {authres.spf_comment(verdict)}")
    return Reply(550, "5.7.1", text)


async def at_mail(client: Client, sender: str) -> Reply | None:
    """Check the MAIL FROM identity; 451 on temperror from level 2; a
    refusal is kept for RCPT."""
    if client.trusted:
        return None
    level = behavior(client)
    if level == 0:
        return None
    control = client.control
    explanation = control.value("spfexp") or DEFAULT_EXPLANATION
    verdict = await check_mailfrom(
        client.ip,
        sender,
        client.helo or "",
        client.resolver,
        receiver=client.hostname,
        default_explanation=explanation,
        local=local_policy(client),
        memo=VERDICTS,
    )
    client.evidence[EVIDENCE] = verdict
    log.info("%s: SPF %s for <%s> (%s)", client.ip, verdict.result.value, sender, verdict.reason)
    if verdict.result is SpfResult.TEMPERROR and level >= 2:
        return Reply(451, "4.3.0", _line(f"SPF lookup failure: {verdict.reason}"))
    if refused_at(verdict.result, level):
        client.evidence[_REFUSAL] = refusal(verdict)
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
    field = authres.received_spf(verdict)
    message.add_headers.append(field.encode("utf-8", "surrogateescape") + b"\r\n")
    message.auth_results.append(authres.spf_method(verdict))
    return None
