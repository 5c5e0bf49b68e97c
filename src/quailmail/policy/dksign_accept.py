"""qmail-dk's signing at acceptance: DKSIGN for relay clients (seeds 002_*).

qmail-dk sits where qmail-queue is and signs what relay clients send, so a
message leaves signed whatever path it takes.  As its manual has it (with
the qmail-dk-0.54-auth patch QmailToaster ships):

- with `RELAYCLIENT` set (or an authenticated client, which that patch
  treats alike), `DKSIGN` names the private key; `%` in it stands for the
  domain of `Sender:` (else `From:`), and the selector is the key file's
  name (`…/domainkeys/%/private` signs with s=private);
- with a `%` and no such file, the message is accepted unsigned ("to turn
  off signing, point DKSIGN to a file that does not exist, but keep a %");
- without a `%` and no file, the message is refused: qmail-dk's exit 32,
  a permanent error (qmail-queue's codes 11-40), `554 5.3.5`;
- neither DKSIGN nor DKVERIFY set: DKSIGN is `control/domainkeys/%/private`
  (qmail-dk's default), used when such a file exists.

A relative path is taken from the root (qmail-smtpd runs in /var/qmail).
No parent domains are tried (that is control/dksign's way, at delivery).
A key that exists but cannot be read or used defers the message (451
4.3.0), as qmail-dk's "Unable to read private key (#4.3.0)".  Both a
DKIM-Signature and a DomainKey-Signature are made with the key (RSA; an
Ed25519 key makes the DKIM one only), over the message as it will be
queued, and put on top.  This check runs last of the DATA checks.

DKQUEUE names the program qmail-dk hands the message to next; the seeds
point it at "the original qmail-queue program" (002_*: qmail-queue.orig),
the real queue.  This qmail-dk is in the server, and what follows it is
the real queue already: ours, or the `QMAILQUEUE` chain when the rules set
one (server/qmailqueue.py), which gets `DKQUEUE` in its environment for a
`quail-dkverify` in it to run.  So a tcp.smtp written for qmail-dk keeps
working unchanged; this module only signs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from quailmail.auth.dkim import SignError, sign_dkim
from quailmail.auth.domainkeys import DomainKeysSigningError, sign_domainkeys
from quailmail.auth.keys import KeyProblem, parse_private_key
from quailmail.auth.message import parse_message, sender_domain
from quailmail.core.files import is_file_name
from quailmail.core.reply import Reply
from quailmail.policy.authenv import session_env
from quailmail.policy.base import Client, Message

log = logging.getLogger("quailmail.policy")

DEFAULT_DKSIGN = "control/domainkeys/%/private"  # qmail-dk's, under the root
ERROR_32 = Reply(554, "5.3.5", "signing key not found (qmail-dk error 32)")
_UNUSABLE = Reply(451, "4.3.0", "unable to read private key; try again later")


def dksign_template(client: Client) -> str | None:
    """The DKSIGN this session signs with, or None not to sign."""
    env = session_env(client)
    if "RELAYCLIENT" not in env and client.auth_user is None:
        return None  # qmail-dk verifies instead (policy/dkverify.py)
    template = env.get("DKSIGN")
    if template is None and "DKVERIFY" not in env:
        template = DEFAULT_DKSIGN
    return template or None


async def at_data(client: Client, message: Message) -> Reply | None:
    template = dksign_template(client)
    if template is None:
        return None
    if template == DEFAULT_DKSIGN and not (client.root / "control" / "domainkeys").is_dir():
        return None  # the usual case: no keys where qmail-dk looks, nothing to read
    data = b"".join([*message.add_headers, *message.chunks])
    parsed = parse_message(data, crlf=True)
    domain = sender_domain(parsed.headers)
    if "%" in template:
        if domain is None or not is_file_name(domain):
            log.info("%s: DKSIGN: no usable Sender:/From: domain; not signed", client.ip)
            return None
        path = client.root / template.replace("%", domain)
        if not os.path.exists(path):  # False, not OSError, for a name too long
            log.info("%s: DKSIGN: no key %s; not signed", client.ip, path)
            return None
    else:
        path = client.root / template
        if not os.path.exists(path):
            log.warning("%s: DKSIGN key %s does not exist: refused (error 32)", client.ip, path)
            return ERROR_32
    try:
        key = parse_private_key(Path(path).read_bytes())
    except (OSError, KeyProblem) as exc:
        log.warning("%s: DKSIGN key %s unusable: %s", client.ip, path, exc)
        return _UNUSABLE
    if domain is None:
        log.info("%s: DKSIGN: no Sender:/From: domain for d=; not signed", client.ip)
        return None
    selector = path.name
    fields = b""
    try:
        if any(h.lname == "from" for h in parsed.headers):  # DKIM must sign From:
            fields += sign_dkim(parsed, key, selector=selector, domain=domain)
        if key.type == "rsa":
            fields += sign_domainkeys(parsed, key, selector=selector, domain=domain, canon="nofws")
    except (SignError, DomainKeysSigningError, ValueError) as exc:
        log.warning("%s: DKSIGN with %s failed: %s", client.ip, path, exc)
        return _UNUSABLE
    if not fields:
        return None
    message.add_headers.insert(0, fields)
    log.info("%s: signed for %s with %s (s=%s)", client.ip, domain, path, selector)
    return None
