"""DMARC at DATA (RFC 7489): always reported, enforced when asked.

The verdict comes from the SPF result of MAIL FROM (HELO for a null sender,
RFC 7489 §4.1) and the DKIM signatures that verified, taken from the earlier
checks' evidence or computed here when those checks did not run
(policy/evidence.py).  Every message from an untrusted client gets a
`dmarc=` entry in Authentication-Results (§11.2); trusted clients
(RELAYCLIENT, authenticated) send their own mail and are not judged, as
they are spared SPF and DKVERIFY.

`control/dmarcbehavior` decides what a failing message's disposition (§6.3
p=/sp=, after pct sampling) does here:

- absent or `0`: nothing; the receiver only reports (OpenDMARC's
  `RejectFailures false`).
- `1`: p=reject → `550 5.7.1` naming the domain's policy (§6.6.4, §7.3:
  "reject the message during the SMTP transaction"); p=quarantine → the
  message is accepted with `X-Quail-Quarantine: dmarc …`, which local
  delivery files in the `.Junk` folder as it does `X-Spam-Status: Yes`
  (deliver/junk.py).

temperror, permerror and none are never enforced: §6.6.3 leaves a
temporary failure to the receiver, and a message is not refused because its
author's domain published a record we cannot read.
"""

from __future__ import annotations

import logging

from quailmail.auth.authres import dmarc as dmarc_resinfo
from quailmail.auth.dkim import DkimResult, verify_dkim
from quailmail.auth.dmarc import DmarcResult, Policy, author_domain, dkim_identifiers, evaluate
from quailmail.auth.memo import AnswerMemo
from quailmail.auth.results import Result
from quailmail.auth.spf.check import check_mailfrom
from quailmail.auth.spf.result import SpfVerdict
from quailmail.config.control import parse_value
from quailmail.core.reply import Reply
from quailmail.policy import spf as spf_policy
from quailmail.policy.base import Client, Message
from quailmail.policy.evidence import evidence_or_compute

log = logging.getLogger("quailmail.policy")

QUARANTINE_FIELD = "X-Quail-Quarantine"

# Verdicts of this process, reused for the same From domain and the same
# SPF and DKIM evidence while the DNS answers they read stand (auth/memo.py).
VERDICTS: AnswerMemo[DmarcResult] = AnswerMemo(size=1024)  # as many as parsed records kept


def _parse_behavior(data: bytes) -> bool:
    """control/dmarcbehavior: `1` enforces, `0` (or nothing) reports only;
    anything else reports only and is said in the log, once per version."""
    text = parse_value(data).strip()
    if text in ("", "0", "1"):
        return text == "1"
    log.warning("control/dmarcbehavior ignored: %r is neither 0 nor 1 (DMARC not enforced)",
                text[:40])  # fmt: skip
    return False


async def check(client: Client, message: Message) -> Reply | None:
    if client.trusted:
        return None
    parsed = message.client_message()
    author = author_domain(parsed)
    if author.domain is None:
        # §6.6.1: no single author domain, no policy to look up.
        result = DmarcResult(Result.PERMERROR, "", author.reason)
    else:

        async def dkim() -> DkimResult:
            return await verify_dkim(parsed, client.resolver)

        async def spf() -> SpfVerdict:
            return await check_mailfrom(
                client.ip, message.sender, client.helo or "", client.resolver,
                receiver=client.hostname, memo=spf_policy.VERDICTS,
            )  # fmt: skip

        dkim_result = await evidence_or_compute(message.evidence, "dkim", DkimResult, dkim)
        spf_verdict = await evidence_or_compute(client.evidence, "spf", SpfVerdict, spf)
        result = await evaluate(
            author.domain,
            spf=(spf_verdict.result.value, spf_verdict.domain or None),
            dkim=dkim_identifiers(dkim_result),
            resolver=client.resolver,
            memo=VERDICTS,
        )
    message.evidence["dmarc"] = result
    message.auth_results.append(dmarc_resinfo(result))
    if result.result is not Result.FAIL or result.disposition is Policy.NONE:
        return None
    if not client.control.parsed("dmarcbehavior", _parse_behavior, False):
        log.info("%s: DMARC %s for %s (%s), not enforced (dmarcbehavior is not 1)", client.ip,
                 result.disposition, result.from_domain, result.reason)  # fmt: skip
        return None
    where = result.record_domain or result.from_domain
    if result.disposition is Policy.REJECT:
        return Reply(
            550, "5.7.1", f"message refused: the DMARC policy of {where} is reject "
            f"and the message fails DMARC ({result.reason})"
        )  # fmt: skip
    message.add_headers.append(
        f"{QUARANTINE_FIELD}: dmarc (the DMARC policy of {where} is quarantine)\r\n".encode(
            "utf-8", "surrogateescape"
        )
    )
    log.info("%s: DMARC quarantine for %s: %s", client.ip, result.from_domain, result.reason)
    return None
