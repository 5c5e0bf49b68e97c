"""The checks of each stage, in order.  A new check is one line here.

- CONNECT: before the greeting.  A reply puts the session in rblsmtpd's
  mode: that reply to every RCPT, DATA, BDAT (and AUTH and STARTTLS, but
  for greylisting) until QUIT, MAIL taken; a listed or greylisted client is
  told why, not dropped.
- MAIL: after MAIL FROM.  RCPT_FIRST: at RCPT TO, before the relay and
  recipient checks; RCPT: after a recipient passed them.  DATA: at the end
  of DATA, before the queue; a check may add header fields or
  Authentication-Results entries to the message.
"""

from __future__ import annotations

import logging

from quailmail.auth.authres import authentication_results
from quailmail.core.reply import Reply
from quailmail.policy import (
    badmailfrom,
    badrcptto,
    content,
    dksign_accept,
    dkverify,
    dmarc,
    dnsbl,
    forged_authres,
    greylist,
    spamassassin,
    spf,
)
from quailmail.policy.base import Client, ConnectCheck, DataCheck, MailCheck, Message, RcptCheck

log = logging.getLogger("quailmail.policy")

# connect: dnsbl (rblsmtpd), then greylist (jgreylist)
CONNECT: tuple[ConnectCheck, ...] = (
    dnsbl.check,
    greylist.check,
)
# MAIL: badmailfrom, then spf (spfbehavior)
MAIL: tuple[MailCheck, ...] = (badmailfrom.check, spf.at_mail)
# Before the relay and recipient checks (rcpthosts, validrcptto, chkuser):
# spf, the refusal decided at MAIL FROM, where qmail-spf's flagbarfspf is.
RCPT_FIRST: tuple[RcptCheck, ...] = (spf.at_rcpt,)
# RCPT, for a recipient the relay and recipient checks took: badrcptto.
RCPT: tuple[RcptCheck, ...] = (badrcptto.check,)
# DATA: content (BADMIMETYPE, BADLOADERTYPE), spf (Received-SPF, spf=),
# dkverify (DKVERIFY), dmarc (dmarcbehavior), forged Authentication-Results
# removed (after the verifiers, which see the message as signed),
# spamassassin (spamd), qmail-dk signing (DKSIGN, last: it signs the message
# as queued); QMAILQUEUE then replaces the queue itself.
DATA: tuple[DataCheck, ...] = (
    content.check,
    spf.at_data,
    dkverify.at_data,
    dmarc.check,
    forged_authres.at_data,
    spamassassin.check,
    dksign_accept.at_data,
)


async def at_connect(client: Client) -> Reply | None:
    for check in CONNECT:
        reply = await check(client)
        if reply is not None:
            log.info("%s: refused at connection by %s: %s", client.ip, _name(check), reply.text)
            return reply
    return None


async def at_mail(client: Client, sender: str) -> Reply | None:
    for check in MAIL:
        reply = await check(client, sender)
        if reply is not None:
            log.info("%s: MAIL <%s> refused by %s: %s", client.ip, sender, _name(check), reply.text)
            return reply
    return None


async def at_rcpt_first(client: Client, sender: str, recipient: str) -> Reply | None:
    return await _rcpt(RCPT_FIRST, client, sender, recipient)


async def at_rcpt(client: Client, sender: str, recipient: str) -> Reply | None:
    return await _rcpt(RCPT, client, sender, recipient)


async def _rcpt(
    checks: tuple[RcptCheck, ...], client: Client, sender: str, recipient: str
) -> Reply | None:
    for check in checks:
        reply = await check(client, sender, recipient)
        if reply is not None:
            log.info("%s: RCPT <%s> refused by %s: %s", client.ip, recipient, _name(check),
                     reply.text)  # fmt: skip
            return reply
    return None


async def at_data(client: Client, message: Message) -> Reply | None:
    """Run the DATA checks; then put one Authentication-Results field
    (authserv-id `control/me`) on top of what they added, when any check
    reported a result."""
    for check in DATA:
        reply = await check(client, message)
        if reply is not None:
            log.info("%s: message from <%s> refused by %s: %s", client.ip, message.sender,
                     _name(check), reply.text)  # fmt: skip
            return reply
    if message.auth_results:
        field = authentication_results(client.hostname, message.auth_results)
        message.add_headers.insert(0, field.encode("utf-8", "surrogateescape") + b"\r\n")
    return None


def _name(check: object) -> str:
    module = getattr(check, "__module__", "") or ""
    return module.rsplit(".", 1)[-1] or getattr(check, "__name__", "check")
