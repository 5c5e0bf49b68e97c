"""DKVERIFY: DomainKeys and DKIM verification at the end of DATA.

As the seeds define it (Brandon's qmail-smtpd patch, 001_*; qmail-dk,
002_*).  The message is verified when the rules set `DKVERIFY` and not
`RELAYCLIENT`; `AUTH_UNSET_DKVERIFY` removes it for authenticated sessions
(`authenv`).  The value lists status letters:

- `DKLETTERS,DKIMLETTERS` (Brandon's form, e.g. `DEGIJKfh,CGHIJMQRkl`):
  DomainKeys letters A-K before the comma, DKIM letters A-S after it;
- `DKLETTERS` without a comma (qmail-dk's form, e.g. `DEGIJKfh`):
  DomainKeys letters only; DKIM is verified and reported, never refused;
- empty: verify and annotate, refuse nothing.

The status of a message is one letter per method (DomainKeys: the first
signature, as libdomainkeys; DKIM: A when one signature passes, the only
signature's status, O when several all fail, N with none).  Its letter in
upper case refuses the message (554), in lower case defers it (451); a
status not listed is accepted.  When both methods ask, a refusal wins over
a deferral, and DomainKeys is named first.  The text names the status:
`DomainKeys DK_STAT_BADSIG (bad): …`, `DKIM BAD BODY HASH (status P): …`.

Results go to `Message.evidence` ("dkim": DkimResult, "domainkeys":
DomainKeysResult, as `auth` returns them) and to Authentication-Results
(`domainkeys=… ; dkim=…` per signature, the seeds' order).  With qmail-dk's
form (letters, no comma), the message also gets the `DomainKey-Status:`
field qmail-dk 0.54 writes on top of every message it verified: the
"message tag" column of the seeds' table (002_*), padded to 12 characters
as qmail-dk pads it (`DomainKey-Status: good        `), so a migrated
site's SpamAssassin or maildrop rules keyed on it keep matching.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from dataclasses import dataclass

from quailmail.auth import authres
from quailmail.auth.dkim import DkimResult, DkimStatus, verify_dkim
from quailmail.auth.domainkeys import DkStatus, DomainKeysResult, verify_domainkeys
from quailmail.core.reply import Reply
from quailmail.policy.authenv import session_env
from quailmail.policy.base import Client, Message

log = logging.getLogger("quailmail.policy")

DKIM = "dkim"  # Message.evidence keys
DOMAINKEYS = "domainkeys"

# qmail-dk's enhanced codes per DomainKeys status (X.7.5 for a signature
# or key that does not verify, X.7.0 when the key is missing, X.6.0 for
# syntax, X.3.x for our own trouble).
_DK_DETAIL: dict[DkStatus, str] = {
    DkStatus.OK: "7.0",
    DkStatus.BADSIG: "7.5",
    DkStatus.NOSIG: "7.5",
    DkStatus.NOKEY: "7.0",
    DkStatus.BADKEY: "7.5",
    DkStatus.CANTVRFY: "7.0",
    DkStatus.SYNTAX: "6.0",
    DkStatus.NORESOURCE: "3.0",
    DkStatus.ARGS: "3.5",
    DkStatus.REVOKED: "7.5",
    DkStatus.INTERNAL: "3.0",
}
_DKIM_DETAIL = "7.20"  # RFC 7372 §3.1: no passing DKIM signature found
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


@dataclass(frozen=True, slots=True)
class Letters:
    """A parsed DKVERIFY value."""

    domainkeys: str
    dkim: str | None  # None: qmail-dk's form, DKIM letters not consulted

    @classmethod
    def parse(cls, value: str) -> Letters:
        return _parse_letters(value)


_DK_LETTERS = frozenset("ABCDEFGHIJKabcdefghijk")  # the seeds' DomainKeys table
_DKIM_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSabcdefghijklmnopqrs")  # DKIM's, libdkim's S


@functools.lru_cache(maxsize=256)
def _parse_letters(value: str) -> Letters:
    """DKVERIFY parsed, and said in the log (once per value, as it comes
    from the rules per connection) when it holds letters no status has:
    they are ignored, as the patches ignore them."""
    dk, comma, dkim = value.partition(",")
    unknown = set(dk) - _DK_LETTERS
    if comma:
        unknown |= set(dkim) - _DKIM_LETTERS
    if unknown:
        shown = _clean("".join(sorted(unknown)), 20)
        log.warning("DKVERIFY %r: %r are no status letters; ignored",
                    _clean(value, 60), shown)  # fmt: skip
    return Letters(dk, dkim if comma else None)


@dataclass(frozen=True, slots=True)
class Asked:
    """One method's letter found in DKVERIFY."""

    permanent: bool
    reply: Reply


def _clean(text: str, limit: int = 200) -> str:
    return _UNPRINTABLE.sub(" ", text).strip()[:limit]


def _asked(letters: str, letter: str) -> bool | None:
    """True: refuse, False: defer, None: accept."""
    if letter.upper() in letters:
        return True
    if letter.lower() in letters:
        return False
    return None


def _dk_reply(permanent: bool, dk: DomainKeysResult) -> Reply:
    status = dk.status
    text = f"DomainKeys {status.stat_name} ({status.status_text}): {_clean(dk.reason)}"
    detail = _DK_DETAIL[status]
    return Reply(554, f"5.{detail}", text) if permanent else Reply(451, f"4.{detail}", text)


def _dkim_reply(permanent: bool, dkim: DkimResult) -> Reply:
    status: DkimStatus = dkim.status
    text = f"DKIM {status.text} (status {status.letter}): {_clean(dkim.reason)}"
    if permanent:
        return Reply(554, f"5.{_DKIM_DETAIL}", text)
    return Reply(451, f"4.{_DKIM_DETAIL}", text)


def decide(letters: Letters, dk: DomainKeysResult, dkim: DkimResult) -> Reply | None:
    """The reply DKVERIFY asks for, or None to accept."""
    asked: list[Asked] = []
    permanent = _asked(letters.domainkeys, dk.status.letter)
    if permanent is not None:
        asked.append(Asked(permanent, _dk_reply(permanent, dk)))
    if letters.dkim is not None:
        permanent = _asked(letters.dkim, dkim.status.letter)
        if permanent is not None:
            asked.append(Asked(permanent, _dkim_reply(permanent, dkim)))
    for item in asked:
        if item.permanent:
            return item.reply
    return asked[0].reply if asked else None


def domainkey_status(dk: DomainKeysResult) -> bytes:
    """qmail-dk's `DomainKey-Status:` field for DK's status (CRLF-ended)."""
    return f"DomainKey-Status: {dk.status.status_text:<12}\r\n".encode("ascii")


def dkverify_value(client: Client) -> str | None:
    """DKVERIFY as this session sees it, or None when not to verify."""
    env = session_env(client)
    if "RELAYCLIENT" in env:
        return None
    return env.get("DKVERIFY")


async def at_data(client: Client, message: Message) -> Reply | None:
    value = dkverify_value(client)
    if value is None:
        return None
    parsed = message.client_message()
    if parsed.fields_by_name().get("domainkey-signature"):
        dkim, dk = await asyncio.gather(
            verify_dkim(parsed, client.resolver), verify_domainkeys(parsed, client.resolver)
        )
    else:  # nothing for DomainKeys to look up: no task for it to wait in
        dkim = await verify_dkim(parsed, client.resolver)
        dk = await verify_domainkeys(parsed, client.resolver)
    message.evidence[DKIM] = dkim
    message.evidence[DOMAINKEYS] = dk
    message.auth_results.extend(authres.domainkeys_and_dkim(dk, dkim))
    log.info(
        "%s: DomainKeys %s (%s), DKIM %s (%s) for <%s>",
        client.ip, dk.status.letter, dk.result.value, dkim.status.letter, dkim.result.value,
        message.sender,
    )  # fmt: skip
    letters = Letters.parse(value)
    if letters.dkim is None and value:  # qmail-dk's form: its header too
        # ("" is Brandon's too: seed 001 runs DKVERIFY="", which adds
        # Authentication-Results alone)
        message.add_headers.append(domainkey_status(dk))
    return decide(letters, dk, dkim)
