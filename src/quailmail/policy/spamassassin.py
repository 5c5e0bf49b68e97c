"""SpamAssassin at DATA: ask spamd, tag the message, refuse above a score.

What qmail setups did with simscan or qmail-scanner (seed 003: `QMAILQUEUE=
/var/qmail/bin/simscan` in tcp.smtp, spamd behind it), done in the receiver:

- `control/spamd` says where spamd listens (`host:port`, `[v6]:port`, or a
  unix socket path); without it nothing is scanned.
- Every message gets SpamAssassin's `X-Spam-Status: Yes|No, score=S
  required=R tests=A,B,…` (its default `add_header all Status` form, without
  the autolearn= and version= parts spamd does not report to SYMBOLS) and
  `X-Spam-Score: S`; local delivery files `X-Spam-Status: Yes` in `.Junk`
  (deliver/junk.py), as the seeds' maildrop filter did.
- `control/spamreject` (a score): at or above it the message is refused,
  `554 5.7.1`, before it is queued: nothing accepted is dropped.  A value
  that is not a finite number is ignored, with a warning in the log.
- `X-Spam-*` fields the client wrote are removed from a message that is to
  be scanned, as SpamAssassin removes earlier markup before it adds its
  own: a sender cannot pass off its own verdict.
- Messages over `control/spamdmaxsize` (spamc's 500 KB) are not scanned, as
  spamc passes them through unscanned.
- spamd down, slow (`control/spamdtimeout`, 30 s) or confused: the message
  is accepted unscanned with a log line, spamc's own fallback, so a dead
  scanner never stops the mail; `control/spamdfailclosed` (1) answers
  `451 4.7.1` instead, and the sender retries.
- Who is scanned: clients that are not trusted (RELAYCLIENT or
  authenticated users send their own mail; the seeds' "external web box"
  rule runs no simscan either).  The rules' `SPAMSCAN` overrides: `"1"`
  scans trusted clients too, `"0"` scans nobody the rule matches.
"""

from __future__ import annotations

import logging
import math

from quailmail.config.control import parse_value
from quailmail.core.reply import Reply
from quailmail.policy.base import Client, Message
from quailmail.policy.spamc import (
    DEFAULT_MAX_SIZE,
    DEFAULT_TIMEOUT,
    SpamdClient,
    SpamdError,
    SpamVerdict,
    parse_endpoint,
)

log = logging.getLogger("quailmail.policy")

FOLD_AT = 78  # RFC 5322 §2.1.1: lines SHOULD be at most 78 characters


def wanted(client: Client) -> bool:
    """Scan this client's mail?  SPAMSCAN="1"/"0" from the rules, else the
    untrusted only."""
    forced = client.env.get("SPAMSCAN")
    if forced is not None and forced.strip() in ("0", "1"):
        return forced.strip() == "1"
    return not client.trusted


def x_spam_status(verdict: SpamVerdict) -> bytes:
    """`X-Spam-Status: Yes, score=1005.2 required=5.0 tests=GTUBE,…` folded
    after commas of the test list, as SpamAssassin folds it."""
    word = "Yes" if verdict.spam else "No"
    head = f"X-Spam-Status: {word}, score={verdict.score} required={verdict.required} tests="
    tests = list(verdict.tests) or ["none"]
    lines = [head + tests[0]]
    for name in tests[1:]:
        if len(lines[-1]) + 1 + len(name) < FOLD_AT:
            lines[-1] += "," + name
        else:
            lines[-1] += ","
            lines.append("\t" + name)
    return ("\r\n".join(lines) + "\r\n").encode("ascii", "replace")


def _float(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        return float(text.strip())
    except ValueError:
        return None


async def check(client: Client, message: Message) -> Reply | None:
    control = client.control
    spec = control.value("spamd")
    if not spec or not spec.strip() or not wanted(client):
        return None
    removed = message.remove_client_fields(b"x-spam-", _spam_field)
    if removed:
        log.info("%s: removed %d X-Spam- field(s) the client wrote", client.ip, removed)
    fail_closed = control.flag("spamdfailclosed")
    try:
        endpoint = parse_endpoint(spec)
    except ValueError as exc:
        return _unscanned(client, message, f"control/spamd: {exc}", fail_closed)
    limit = control.int_value("spamdmaxsize", DEFAULT_MAX_SIZE)
    data = b"".join([*message.add_headers, *message.chunks])
    if limit > 0 and len(data) > limit:
        log.info("%s: message from <%s> not scanned: %d bytes, spamdmaxsize %d",
                 client.ip, message.sender, len(data), limit)  # fmt: skip
        return None
    timeout = _float(control.value("spamdtimeout")) or 0.0
    if not 0 < timeout < 3600:
        timeout = DEFAULT_TIMEOUT
    spamd = SpamdClient(endpoint, timeout=timeout, user=control.value("spamduser") or None)
    try:
        verdict = await spamd.symbols(data)
    except SpamdError as exc:
        return _unscanned(client, message, str(exc), fail_closed)
    message.evidence["spamassassin"] = verdict
    message.add_headers.append(x_spam_status(verdict))
    message.add_headers.append(f"X-Spam-Score: {verdict.score}\r\n".encode("ascii"))
    log.info("%s: spamd: message from <%s> %s, score %s/%s (%s)", client.ip, message.sender,
             "spam" if verdict.spam else "ham", verdict.score, verdict.required,
             ",".join(verdict.tests) or "no tests")  # fmt: skip
    reject = control.parsed("spamreject", _parse_reject, None)
    if reject is not None and verdict.score_value >= reject:
        return Reply(
            554, "5.7.1", f"message refused as spam (SpamAssassin score {verdict.score}, "
            f"limit {reject:g})"
        )  # fmt: skip
    return None


def _spam_field(field: bytes) -> bool:
    return field[:7].lower() == b"x-spam-"


def _parse_reject(data: bytes) -> float | None:
    """control/spamreject: a finite score; anything else is ignored, said
    once per version of the file."""
    text = parse_value(data).strip()
    value = _float(text)
    if text and (value is None or not math.isfinite(value)):
        log.warning("control/spamreject ignored: %r is not a score", text[:40])
        return None
    return value


def _unscanned(client: Client, message: Message, why: str, fail_closed: bool) -> Reply | None:
    if fail_closed:
        log.warning("%s: message from <%s> deferred (spamdfailclosed): %s",
                    client.ip, message.sender, why)  # fmt: skip
        return Reply(451, "4.7.1", "spam scanner unavailable; try again later")
    log.warning("%s: message from <%s> accepted unscanned: %s", client.ip, message.sender, why)
    return None
