"""What the policy checks are handed: the client and the message."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from quailmail.auth.message import Message as ParsedMessage
from quailmail.auth.message import parse_message
from quailmail.config.control import Control
from quailmail.core.dns import Resolver
from quailmail.core.reply import Reply

log = logging.getLogger("quailmail.policy")


@dataclass
class Client:
    """One SMTP connection as the checks see it."""

    root: Path
    control: Control
    resolver: Resolver
    hostname: str  # control/me: our name, the authserv-id
    ip: str
    env: dict[str, str]  # tcpserver's and the rules' variables (RELAYCLIENT, DKVERIFY, …)
    host: str | None = None  # the verified reverse name, when the rules needed it
    listener: str = "smtp"
    helo: str | None = None
    tls: bool = False
    auth_user: str | None = None
    # What checks learnt during the transaction, for later checks (cleared
    # at each MAIL FROM): "spf" → the SPF verdict of MAIL FROM, …
    evidence: dict[str, object] = field(default_factory=dict)
    # None until asked: whether env has AUTH_SET_/AUTH_UNSET_ variables
    # (authenv.session_env), which the rules fix once per connection.
    auth_vars: bool | None = field(default=None, repr=False, compare=False)

    @property
    def relayclient(self) -> bool:
        return "RELAYCLIENT" in self.env

    @property
    def trusted(self) -> bool:
        """RELAYCLIENT or authenticated: spared greylisting, SPF, DKVERIFY."""
        return self.relayclient or self.auth_user is not None


@dataclass
class Message:
    """A message at the end of DATA, before it is queued."""

    sender: str
    recipients: list[str]
    chunks: list[bytes]  # as received (CRLF), our Received: field first
    size: int
    add_headers: list[bytes] = field(default_factory=list)  # CRLF-ended fields, put on top
    auth_results: list[str] = field(default_factory=list)  # resinfo: `spf=pass smtp.mailfrom=…`
    meta: dict[str, str] = field(default_factory=dict)  # kept in the queue with the message
    # Results of earlier DATA checks for later ones ("dkim" → DkimResult,
    # "domainkeys" → DomainKeysResult, "dmarc" → DmarcResult, …).
    evidence: dict[str, object] = field(default_factory=dict)
    # client_message()'s parse, with the chunks list it parsed: a check that
    # rewrites the message assigns a new list, which makes it stale.
    _parsed: tuple[list[bytes], ParsedMessage] | None = field(
        default=None, repr=False, compare=False
    )

    def data(self) -> bytes:
        """The message as received (without the fields checks add)."""
        return b"".join(self.chunks)

    def client_message(self) -> ParsedMessage:
        """The client's message, without our Received: field (a signature
        that over-signs Received would otherwise take ours for its own),
        parsed once for every check that reads it."""
        cached = self._parsed
        if cached is None or cached[0] is not self.chunks:
            parsed = parse_message(b"".join(self.chunks[1:]), crlf=True)
            cached = self._parsed = (self.chunks, parsed)
        return cached[1]

    def remove_client_fields(self, name: bytes, unwanted: Callable[[bytes], bool]) -> int:
        """Remove from the client's header section (after our Received:)
        every field `unwanted(field)` says so of; `name`, in lower case, is
        a part of every such field's name (a quick test before the fields
        are split).  The number removed; the body's bytes are not touched."""
        chunks = self.chunks
        if len(chunks) < 2:
            return 0
        buf = bytearray()
        taken = 1
        end = -1
        while taken < len(chunks):
            before = len(buf)
            buf += chunks[taken]
            taken += 1
            end = _header_end(buf, before)
            if end >= 0:
                break
        if end < 0:
            end = len(buf)  # a message without a body is all header
        header = bytes(buf[:end])
        if name not in header.lower():
            return 0
        fields: list[bytes] = []
        for line in _LINE.findall(header):
            if fields and line[:1] in (b" ", b"\t"):
                fields[-1] += line  # a continuation line (RFC 5322 §2.2.3)
            else:
                fields.append(line)
        kept = [f for f in fields if not unwanted(f)]
        removed = len(fields) - len(kept)
        if removed:
            new_header = b"".join(kept)
            self.chunks = [chunks[0], new_header + bytes(buf[end:]), *chunks[taken:]]
            self.size -= len(header) - len(new_header)
        return removed


_LINE = re.compile(rb"[^\n]*\n|[^\n]+\Z")


def _header_end(data: bytes | bytearray, start: int = 0) -> int:
    """Offset of the empty line ending the header section, or -1."""
    if data[:2] == b"\r\n":
        return 0
    found = data.find(b"\r\n\r\n", max(start - 3, 0))
    return found + 2 if found >= 0 else -1


@dataclass(frozen=True, slots=True)
class Conversation(Reply):
    """A connection check's refusal with limits on the conversation that
    follows it, as jgreylist's fake SMTP conversation has them: the
    `rcpt_limit`-th RCPT is answered 421 and the connection closed
    (`JGREYLIST_LIMIT`; 0: no limit), and the connection is closed with a
    421 `time_limit` seconds after the greeting (`JGREYLIST_TIMEOUT`; None:
    only the server's idle timeout)."""

    rcpt_limit: int = 0
    time_limit: float | None = None


@dataclass(frozen=True, slots=True)
class UntilAuth(Conversation):
    """A connection check's refusal that holds until the client
    authenticates: AUTH (and STARTTLS, to reach it) stay open, and a
    successful AUTH lifts it.  Greylisting's, since an authenticated client
    is never greylisted and jgreylist, deciding before the first command,
    could not know who would log in."""


ConnectCheck = Callable[[Client], Awaitable[Reply | None]]
MailCheck = Callable[[Client, str], Awaitable[Reply | None]]
RcptCheck = Callable[[Client, str, str], Awaitable[Reply | None]]
DataCheck = Callable[[Client, Message], Awaitable[Reply | None]]
