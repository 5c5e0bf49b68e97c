"""The server side of one SMTP connection, as a sans-I/O state machine (h11).

Bytes go in with `receive()`; `next_event()` hands out what the driver must
decide on (greeting, HELO, MAIL, RCPT, DATA, the message, AUTH credentials,
STARTTLS) and what it should know (RSET, QUIT, a refused message, the close);
the driver answers a decision with `reply()`; `data_to_send()` is what to
write.  The session writes every other reply itself, in command order, so
pipelined commands (RFC 2920) are answered in order with no extra work.

Where the stream changes meaning the session stops reading until the driver
has answered: after DATA (the bytes after it are a message only once 354 is
given), after BDAT's size (the chunk is read as octets, not lines), after
STARTTLS (anything already buffered is discarded — the plaintext-injection
attack of CVE-2011-0411, RFC 3207 §5 — and so is anything received before
`tls_started()`).

Design choices, against the brief where they differ:

- The driver answers StartTls itself (220 or 454): whether TLS can start now
  (certificate loaded, handshake budget) is the driver's knowledge.  After a
  220 the session is PAUSED: write `data_to_send()`, upgrade the transport,
  call `tls_started()`.
- QUIT, RSET, NOOP, VRFY, EXPN, HELP and every protocol error are answered
  here; QUIT and RSET are still reported (`Quit`, `Reset`) for the log.
- Error replies the driver gives (5xx) count toward ``max_errors`` like the
  session's own: a dictionary attack on RCPT is an error run too (qmail's
  and Postfix's hard error limits count them).
- BDAT chunks are acknowledged here ("250 2.0.0 N octets"); only the LAST
  chunk's message goes to the driver, as for DATA.
- A BDAT whose size cannot be parsed closes the connection: its chunk would
  otherwise be read as commands.
- Command lines may end in a bare LF (as qmail and Postfix accept); the
  message stream may not (see `smtp.data`).
"""

from __future__ import annotations

import enum
import functools
import re
from collections import deque
from dataclasses import dataclass, field

from quailmail.core.reply import Reply
from quailmail.smtp import replies
from quailmail.smtp.buffer import TOO_LONG, InputBuffer
from quailmail.smtp.commands import MailArgs, bdat_args, ehlo_keywords, mail_args, rcpt_args
from quailmail.smtp.config import SessionConfig
from quailmail.smtp.data import ChunkReader, DotReader, _Checks
from quailmail.smtp.events import (
    NEED_DATA,
    PAUSED,
    AuthRequest,
    Connected,
    ConnectionClosed,
    DataReady,
    Event,
    Helo,
    MailFrom,
    MessageReceived,
    MessageRefused,
    Quit,
    RcptTo,
    Reset,
    Signal,
    StartTls,
)
from quailmail.smtp.paths import Path
from quailmail.smtp.received import with_protocol
from quailmail.smtp.sasl import MECHANISMS, SaslExchange, auth_refusal

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_HTTP_VERBS = frozenset({"GET", "POST", "HEAD", "PUT", "CONNECT", "OPTIONS"})


@functools.lru_cache(maxsize=512)
def _render(reply: Reply, enhanced: bool) -> bytes:
    """Most replies are the same few constants: render each once."""
    return reply.render(enhanced=enhanced)


class State(enum.Enum):
    GREETING = "greeting"  # Connected not answered yet
    REJECTED = "rejected"  # greeting was 554: only QUIT (RFC 5321 §3.1)
    COMMAND = "command"
    AUTH = "auth"  # inside a SASL exchange
    DATA = "data"  # after 354, until CRLF.CRLF
    BDAT = "bdat"  # inside a chunk
    TLS = "tls"  # 220 to STARTTLS given, waiting for tls_started()
    CLOSED = "closed"


class ProtocolError(RuntimeError):
    """The driver broke the contract (replied when nothing was asked, gave
    a code that does not answer the event, …).  Never raised by client input."""


@dataclass(slots=True)
class _Transaction:
    mail: MailArgs
    rcpts: list[Path] = field(default_factory=list)
    chunks: ChunkReader | None = None  # set by the first BDAT


RCPT_LIMIT_REACHED = "too many RCPT commands"  # ConnectionClosed.reason (limit_rcpt_commands)


class Session:
    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self._state = State.GREETING
        self._input = InputBuffer()
        self._eof = False
        self._out: list[bytes] = []
        self._events: deque[Event] = deque()
        self._pending: Event | None = None
        self._greeting_asked = False
        self._close_reason = ""
        self._txn: _Transaction | None = None
        self._mail: MailArgs | None = None  # MAIL args awaiting the driver's answer
        self._reader: DotReader | None = None
        self._bdat_remaining = 0
        self._bdat_size = 0
        self._bdat_last = False
        self._bdat_refusal: Reply | None = None
        self._sasl: SaslExchange | None = None
        self._rcpt_limit: tuple[int, Reply] | None = None  # limit_rcpt_commands
        self._rcpt_commands = 0
        self.errors = 0
        self.helo: str | None = None
        self.extended = False
        self.tls_active = False
        self.tls_version: str | None = None
        self.tls_cipher: str | None = None
        self.auth_user: str | None = None
        self.refusal: Reply | None = None
        """rblsmtpd's limited conversation: set by the driver, this reply
        answers every RCPT, DATA, BDAT, VRFY, EXPN, HELP and unknown command
        (whatever MAIL was answered) until it is lifted again; the driver
        answers the others (HELO, EHLO, MAIL, RSET, NOOP, QUIT as usual)."""
        self.injected_bytes = 0
        """Octets discarded after STARTTLS (a pipelining injection), for the log."""

    # -- what the driver reads -------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def closed(self) -> bool:
        return self._state is State.CLOSED

    @property
    def mail_from(self) -> Path | None:
        return self._txn.mail.path if self._txn else None

    @property
    def recipients(self) -> list[Path]:
        return list(self._txn.rcpts) if self._txn else []

    @property
    def with_protocol(self) -> str:
        """The Received ``with`` keyword for the current transaction (RFC 3848,
        RFC 6531 §3.7.3)."""
        utf8 = self._txn is not None and self._txn.mail.smtputf8
        return with_protocol(
            extended=self.extended, tls=self.tls_active, auth=self.auth_user is not None, utf8=utf8
        )

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    # -- what the driver calls -------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Bytes from the client; ``b""`` is end of file."""
        if self._state is State.CLOSED:
            return
        if self._state is State.TLS:
            self.injected_bytes += len(data)
            return
        if not data:
            self._eof = True
        else:
            self._input.append(data)

    def next_event(self) -> Event | Signal:
        while True:
            if self._events:
                return self._events.popleft()
            if self._pending is not None:
                raise ProtocolError(f"reply to {type(self._pending).__name__} first")
            if self._state is State.CLOSED:
                return ConnectionClosed(self._close_reason)
            if self._state is State.TLS:
                return PAUSED
            if not self._step():
                return NEED_DATA

    def reply(self, reply: Reply) -> None:
        """Answer the event that is waiting (any 4xx/5xx, or one of its
        ``ok_codes``)."""
        event = self._pending
        if event is None:
            raise ProtocolError("no event is waiting for a reply")
        if reply.code < 400 and reply.code not in event.ok_codes:
            raise ProtocolError(f"{reply.code} does not answer {type(event).__name__}")
        self._pending = None
        ok = reply.code < 400
        if isinstance(event, Connected):
            self._state = State.COMMAND if ok else State.REJECTED
        elif isinstance(event, Helo) and ok:
            self.helo, self.extended, self._txn = event.name, event.extended, None
            words = ehlo_keywords(
                self.config,
                tls_active=self.tls_active,
                auth=[] if self.auth_user else self._auth_mechanisms(),
            )
            lines = [reply.text, *words] if event.extended else [reply.text]
            reply = Reply(250, None, "\n".join(lines))  # no enhanced code: RFC 2034 §3
        elif isinstance(event, MailFrom) and ok:
            assert self._mail is not None
            self._txn = _Transaction(self._mail)
        elif isinstance(event, RcptTo) and ok and self._txn is not None:
            self._txn.rcpts.append(event.path)
        elif isinstance(event, DataReady) and ok:
            self._state = State.DATA
            self._reader = DotReader(self.config.max_message_size, self.config.refuse_nul)
        elif isinstance(event, MessageReceived):
            self._txn = None  # RFC 5321 §4.1.1.4: the transaction ends either way
        elif isinstance(event, AuthRequest) and ok:
            self.auth_user = event.username
        elif isinstance(event, StartTls) and ok:
            self._state = State.TLS
            self._discard_input()
        self._mail = None
        if reply.code >= 500:
            self._error(reply)
        else:
            self._write(reply)
        if reply.code == 421 and self._state is not State.CLOSED:  # RFC 5321 §3.8
            self._close("421 from the driver")

    def tls_started(self, version: str | None = None, cipher: str | None = None) -> None:
        """The TLS handshake completed (after STARTTLS, or at once on an
        implicit-TLS port).  RFC 3207 §4.2: forget everything learnt before."""
        if self._state not in (State.TLS, State.GREETING):
            raise ProtocolError(f"tls_started() in state {self._state.value}")
        self.tls_active, self.tls_version, self.tls_cipher = True, version, cipher
        self.helo, self.extended, self.auth_user, self._txn = None, False, None, None
        self._discard_input()
        if self._state is State.TLS:
            self._state = State.COMMAND

    def limit_rcpt_commands(self, limit: int, reply: Reply | None = None) -> None:
        """From now on, the `limit`-th RCPT command (counted from the start,
        whatever its fate) is answered `reply` and the session closed, as
        jgreylist's JGREYLIST_LIMIT hangs up on a refused client that keeps
        trying recipients; 0 lifts the limit."""
        self._rcpt_limit = (limit, reply) if limit > 0 and reply is not None else None

    def early_talker(self) -> None:
        """The client spoke during GREETDELAY, before our greeting: refuse and
        close (554 5.5.0, as the greetdelay patches do)."""
        if self._state is not State.GREETING:
            raise ProtocolError("early_talker() after the greeting")
        self._pending = None
        self._events.clear()
        self._write(replies.EARLY_TALKER)
        self._close("early talker")

    def timed_out(self) -> None:
        """No command (or data) within ``config.timeout``: 421 and close."""
        if self._state is State.CLOSED:
            return
        self._pending = None
        self._write(replies.timeout(self.config.hostname))
        self._close("timeout")

    # -- internals ---------------------------------------------------------------

    def _write(self, reply: Reply) -> None:
        self._out.append(_render(reply, self.config.enhancedstatuscodes))

    def _error(self, reply: Reply) -> None:
        self._write(reply)
        self.errors += 1
        if self.errors >= self.config.max_errors and self._state is not State.CLOSED:
            self._write(replies.TOO_MANY_ERRORS)
            self._close("too many errors")

    def _emit(self, event: Event) -> None:
        if event.needs_reply:
            self._pending = event
        self._events.append(event)

    def _close(self, reason: str) -> None:
        self._state = State.CLOSED
        self._close_reason = reason
        self._input.clear()
        self._events.append(ConnectionClosed(reason))

    def _discard_input(self) -> None:
        self.injected_bytes += self._input.clear()

    def _need_data(self) -> bool:
        if self._eof:
            self._close("end of file")
            return True
        return False

    def _auth_mechanisms(self) -> list[str]:
        if self.config.auth_requires_tls and not self.tls_active:
            return []
        return [m for m in self.config.auth_mechanisms if m in MECHANISMS]

    def _step(self) -> bool:
        """Make progress on buffered input; False when more input is needed."""
        state = self._state
        if state is State.GREETING:
            if self._greeting_asked:  # pragma: no cover - pending blocks this
                return False
            self._greeting_asked = True
            self._emit(Connected())
            return True
        if state is State.DATA:
            return self._step_data()
        if state is State.BDAT:
            return self._step_bdat()
        line = self._input.line(self._line_limit())
        if line is None:
            return self._need_data()
        if line is TOO_LONG:
            self._error(replies.LINE_TOO_LONG)
            return True
        self._command(line)
        return True

    def _line_limit(self) -> int:
        c = self.config
        if self._state is State.AUTH or self._input.startswith_upper(b"AUTH "):
            return max(c.max_auth_line_length, c.max_line_length)
        return c.max_line_length

    def _step_data(self) -> bool:
        block = self._input.rest()
        if not block:
            return self._need_data()
        reader = self._reader
        assert reader is not None
        used = reader.feed(block)
        self._input.consume(len(block) if used < 0 else used)
        if used < 0:
            return True
        self._state = State.COMMAND
        self._reader = None
        if reader.refused:
            self._refuse(reader)
        else:
            self._emit(MessageReceived(reader.chunks, reader.size))
        return True

    def _step_bdat(self) -> bool:
        piece = self._input.rest(self._bdat_remaining)
        if not piece and self._bdat_remaining:
            return self._need_data()
        self._input.consume(len(piece))
        self._bdat_remaining -= len(piece)
        txn = self._txn
        if self._bdat_refusal is None and txn is not None and txn.chunks is not None:
            txn.chunks.feed(piece)
        if self._bdat_remaining:
            return True
        self._state = State.COMMAND
        if self._bdat_refusal is not None or txn is None or txn.chunks is None:
            self._error(self._bdat_refusal or replies.NEED_MAIL_DATA)
            return True
        reader = txn.chunks
        if self._bdat_last:
            reader.finish()
        if reader.refused:
            self._refuse(reader)
        elif self._bdat_last:
            self._emit(MessageReceived(reader.chunks, reader.size, bdat=True))
        else:
            self._write(replies.bdat_ok(self._bdat_size))
        return True

    def _refuse(self, reader: _Checks) -> None:
        reply = reader.refusal()
        self._txn = None
        self._events.append(MessageRefused(reply))
        self._error(reply)

    def _command(self, raw: bytes) -> None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._error(replies.BAD_UTF8)
            return
        if _CONTROL.search(text):
            self._error(replies.CONTROL_CHARS)
            return
        if self._state is State.AUTH:
            assert self._sasl is not None
            self._sasl_step(self._sasl.respond(text))
            return
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        if self._state is State.REJECTED and verb != "QUIT":
            self._error(replies.BAD_SEQUENCE_REJECTED)
            return
        handler = _HANDLERS.get(verb)
        if self.refusal is not None and (
            verb in _REFUSED_VERBS or (handler is None and verb not in _HTTP_VERBS)
        ):
            self._error(self.refusal)  # rblsmtpd and jgreylist: all but a few
        elif handler is not None:
            handler(self, arg)
        elif verb in _HTTP_VERBS:
            self._write(replies.HTTP)
            self._close("HTTP request")
        else:
            self._error(replies.UNKNOWN)

    # -- commands ----------------------------------------------------------------

    def _helo(self, arg: str, *, extended: bool = False) -> None:
        name = arg.strip()
        if not name:
            self._error(replies.SYNTAX_HELO)
            return
        self._emit(Helo(name, extended))

    def _ehlo(self, arg: str) -> None:
        self._helo(arg, extended=True)

    def _mail_cmd(self, arg: str) -> None:
        if self.helo is None:
            self._error(replies.NEED_HELO)
            return
        if self._txn is not None:
            self._error(replies.NESTED_MAIL)
            return
        args = mail_args(
            arg, self.config, extended=self.extended, auth=bool(self._auth_mechanisms())
        )
        if isinstance(args, Reply):
            self._error(args)
            return
        self._mail = args
        self._emit(MailFrom(args.path, args.params))

    def _rcpt(self, arg: str) -> None:
        self._rcpt_commands += 1
        if self._rcpt_limit is not None and self._rcpt_commands >= self._rcpt_limit[0]:
            self._write(self._rcpt_limit[1])
            self._close(RCPT_LIMIT_REACHED)
            return
        if self.refusal is not None:
            self._error(self.refusal)
            return
        txn = self._txn
        if txn is None:
            self._error(replies.NEED_MAIL)
            return
        parsed = rcpt_args(arg, smtputf8=txn.mail.smtputf8)
        if isinstance(parsed, Reply):
            self._error(parsed)
            return
        if len(txn.rcpts) >= self.config.max_recipients:
            self._write(replies.TOO_MANY_RCPTS)
            return
        self._emit(RcptTo(*parsed))

    def _data(self, arg: str) -> None:
        txn = self._txn
        if arg.strip():
            self._error(replies.SYNTAX_NOARGS)
        elif txn is None:
            self._error(replies.NEED_MAIL_DATA)
        elif txn.mail.body == "BINARYMIME":
            self._error(replies.BINARYMIME_DATA)
        elif txn.chunks is not None:
            self._error(replies.DATA_AFTER_BDAT)
        elif not txn.rcpts:
            self._error(replies.NO_VALID_RCPT)
        else:
            self._emit(DataReady())

    def _bdat(self, arg: str) -> None:
        parsed = bdat_args(arg.strip())
        if parsed is None:
            self._write(replies.SYNTAX_BDAT)
            self._close("BDAT syntax")
            return
        self._bdat_remaining, self._bdat_last = parsed
        self._bdat_size = self._bdat_remaining
        self._state = State.BDAT
        txn = self._txn
        refusal = None
        if self.refusal is not None:
            refusal = self.refusal
        elif not self.config.chunking:
            refusal = replies.NO_CHUNKING
        elif txn is None:
            refusal = replies.NEED_MAIL_DATA
        elif not txn.rcpts:
            refusal = replies.NO_VALID_RCPT
        elif txn.chunks is None:
            c = self.config
            binary = txn.mail.body == "BINARYMIME"
            txn.chunks = ChunkReader(c.max_message_size, c.refuse_nul, binary=binary)
        self._bdat_refusal = refusal  # the chunk is read (and dropped) all the same

    def _rset(self, arg: str) -> None:
        if arg.strip():
            self._error(replies.SYNTAX_NOARGS)
            return
        self._txn = None
        self._write(replies.OK)
        self._events.append(Reset())

    def _noop(self, arg: str) -> None:
        self._write(replies.OK)

    def _vrfy(self, arg: str) -> None:
        if arg.strip():
            self._write(replies.VRFY)  # RFC 5321 §3.5.3
        else:
            self._error(replies.SYNTAX_VRFY)

    def _expn(self, arg: str) -> None:
        self._error(replies.EXPN)

    def _help(self, arg: str) -> None:
        self._write(replies.HELP)

    def _quit(self, arg: str) -> None:
        self._write(replies.closing(self.config.hostname))
        self._events.append(Quit())
        self._close("quit")

    def _starttls(self, arg: str) -> None:
        if self.tls_active:
            self._error(replies.TLS_ACTIVE)
        elif not self.config.tls_available:
            self._error(replies.STARTTLS_UNAVAILABLE)
        elif arg.strip():
            self._error(replies.SYNTAX_NOARGS)
        else:
            # RFC 3207 §5, CVE-2011-0411: commands pipelined after STARTTLS
            # were sent in plaintext and must not run inside TLS.
            self._discard_input()
            self._emit(StartTls())

    def _auth(self, arg: str) -> None:
        words = arg.split()
        refusal = auth_refusal(
            words,
            self._auth_mechanisms(),
            extended=self.extended,
            authenticated=self.auth_user is not None,
            in_transaction=self._txn is not None,
        )
        if refusal is not None:
            self._error(refusal)
            return
        self._sasl = SaslExchange(words[0].upper())
        self._sasl_step(self._sasl.start(words[1] if len(words) == 2 else None))

    def _sasl_step(self, result: Reply | AuthRequest) -> None:
        if isinstance(result, AuthRequest):
            self._state, self._sasl = State.COMMAND, None
            self._emit(result)
        elif result.code == 334:
            self._state = State.AUTH
            self._write(result)
        else:
            self._state, self._sasl = State.COMMAND, None
            self._error(result)


_HANDLERS = {
    "HELO": Session._helo,
    "EHLO": Session._ehlo,
    "MAIL": Session._mail_cmd,
    "RCPT": Session._rcpt,
    "DATA": Session._data,
    "BDAT": Session._bdat,
    "RSET": Session._rset,
    "NOOP": Session._noop,
    "VRFY": Session._vrfy,
    "EXPN": Session._expn,
    "HELP": Session._help,
    "QUIT": Session._quit,
    "STARTTLS": Session._starttls,
    "AUTH": Session._auth,
}
# Refused whole under a refusal (Session.refusal); RCPT is refused once
# counted (JGREYLIST_LIMIT), BDAT once its chunk is read.
_REFUSED_VERBS = frozenset({"DATA", "VRFY", "EXPN", "HELP"})
