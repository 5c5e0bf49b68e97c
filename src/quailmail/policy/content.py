"""`BADMIMETYPE` and `BADLOADERTYPE`: refuse base64 attachments by their
first characters or by a loader signature inside them.

The knobs of the seeds' tcp.smtp (`BADMIMETYPE="",BADLOADERTYPE="M"`, 002_*,
003_*) come from the qmail-smtpd of QmailToaster, which took them from Erwin
Hoffmann's "Warlord" patch (SPAMCONTROL, later s/qmail).  It looks at the
base64 text itself, never decoding it:

- a part is base64 when a `Content-Transfer-Encoding: base64` line came
  before the blank line its content follows; its content runs to the next
  line starting with `-` (a MIME boundary);
- `BADMIMETYPE` (set, whatever its value): the first 9 characters of the
  content's first line (one of at least 10 characters) are looked up in
  `control/badmimetypes` (the first 9 characters of each line).
  `TVqQAAMAA` is how every Windows executable starts (`MZ\\x90\\0\\x03\\0`);
- `BADLOADERTYPE`: one character, the first character of the entries of
  `control/badloadertypes` (5 characters each) to look for anywhere in the
  content.  `M` is the seeds' value: `M0hVG`, for instance, is the base64
  of the DOS stub's `\\xcd!This` ("This program cannot be run in DOS
  mode"), at the place every Windows executable has it;
- `-` turns either off; `+` applies it only to clients that may not relay
  (without RELAYCLIENT or AUTH); `BADMIMETYPE="!"` also refuses base64
  content with a blank or tab in it (s/qmail's meaning of `!`).

The answer is spamcontrol's `554 sorry, invalid message content` (its
`#5.3.2` is "system not accepting network messages" in RFC 3463; ours is
5.7.1, "message refused"), and the log names what matched, as its
`Reject::DATA::Bad_MIME` / `Bad_Loader` lines do.  We read the text control
files (qmail-badmimetypes and qmail-badloadertypes compile them to `.cdb`
files we ignore).

Bounded: the message is searched with `bytes.find` and a regular expression
for the header line, never split into lines or parsed as MIME.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass

from quailmail.core.reply import Reply
from quailmail.policy.base import Client, Message

log = logging.getLogger("quailmail.policy")

MIMETYPE_LEN = 9  # spamcontrol's MIMETYPE_LEN
LOADER_LEN = 5  # spamcontrol's LOADER_LEN

_BASE64_FIELD = re.compile(rb"^content-transfer-encoding:[ \t]*base64[ \t]*\r?$", re.I | re.M)


@dataclass(frozen=True, slots=True)
class Rules:
    mime_types: frozenset[bytes]  # 9-character prefixes
    loader_types: frozenset[bytes]  # 5-character strings
    refuse_blanks: bool = False


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # "Bad_MIME" or "Bad_Loader"
    what: str  # the characters that matched

    @property
    def reply(self) -> Reply:
        why = "attachment type refused" if self.kind == "Bad_MIME" else "executable content refused"
        return Reply(554, "5.7.1", f"sorry, invalid message content ({why})")


def base64_contents(data: bytes) -> Iterator[bytes]:
    """The content of every base64 part: from the line after the blank line
    that follows a `Content-Transfer-Encoding: base64` line, up to the next
    line starting with `-`.  A blank line inside starts a new content, as
    in the Warlord patch (its first line is checked again)."""
    done = 0
    for field in _BASE64_FIELD.finditer(data):
        if field.start() < done:
            continue  # inside content already given
        blank = data.find(b"\n\r\n", field.end())
        blank_lf = data.find(b"\n\n", field.end())
        if blank < 0 or (0 <= blank_lf < blank):
            blank, skip = blank_lf, 2
        else:
            skip = 3
        if blank < 0:
            return
        start = blank + skip
        end = data.find(b"\n-", start - 1)
        end = len(data) if end < 0 else end + 1
        done = end
        section = data[start:end]
        for piece in re.split(rb"\r?\n\r?\n", section):
            if piece:
                yield piece


def scan(data: bytes, rules: Rules) -> Finding | None:
    """The first thing `rules` refuse in `data`, or None."""
    for content in base64_contents(data):
        newline = content.find(b"\n")
        first = content if newline < 0 else content[:newline]
        first = first.rstrip(b"\r")
        if len(first) <= MIMETYPE_LEN:
            continue  # spamcontrol checks nothing of a part whose first line is this short
        prefix = first[:MIMETYPE_LEN]
        if prefix in rules.mime_types:
            return Finding("Bad_MIME", prefix.decode("ascii", "replace"))
        for loader in rules.loader_types:
            if loader in content:
                return Finding("Bad_Loader", loader.decode("ascii", "replace"))
        if rules.refuse_blanks and (b" " in content or b"\t" in content):
            return Finding("Bad_MIME", "blank in base64")
    return None


def _entries(lines: tuple[str, ...], length: int, first: str | None = None) -> frozenset[bytes]:
    out = set()
    for line in lines:
        entry = line.encode("utf-8", "surrogateescape")
        if len(entry) >= length and (first is None or entry[:1] == first.encode()):
            out.add(entry[:length])
    return frozenset(out)


def rules_for(client: Client) -> Rules | None:
    """What the client's variables and the control files ask for (None: nothing)."""
    env = client.env
    mime = env.get("BADMIMETYPE")
    loader = env.get("BADLOADERTYPE")
    mime_on = mime is not None and mime != "-" and not (mime == "+" and client.trusted)
    loader_on = (
        loader is not None and len(loader) == 1 and loader != "-"
        and not (loader == "+" and client.trusted)
    )  # fmt: skip
    mime_types = _entries(client.control.lines("badmimetypes"), MIMETYPE_LEN) if mime_on else None
    loader_types = None
    if loader_on:
        first = None if loader == "+" else loader
        loader_types = _entries(client.control.lines("badloadertypes"), LOADER_LEN, first)
    blanks = mime_on and mime == "!"
    if not (mime_types or loader_types or blanks):
        return None
    return Rules(mime_types or frozenset(), loader_types or frozenset(), blanks)


async def check(client: Client, message: Message) -> Reply | None:
    rules = rules_for(client)
    if rules is None:
        return None
    finding = scan(message.data(), rules)
    if finding is None:
        return None
    log.info("%s: Reject::DATA::%s F:<%s> '%s'", client.ip, finding.kind, message.sender,
             finding.what)  # fmt: skip
    return finding.reply
