"""One SMTP connection: the asyncio side of the sans-I/O session.

The session (quailmail.smtp) parses and sequences; this driver answers its
events from the root's settings, the per-connection rules (tcprules) and
the queue, and is the only code that writes to the socket.  Decisions that
wait (the queue's group commit, a password check) run as tasks; the
session keeps pipelined input meanwhile, and reading pauses until the
answer is in, so a client cannot flood memory while a DATA is committed.

Invariant: `250` to the end of DATA is written only after `Queue.put`
returned, i.e. after the message is fsynced into the queue (ARCHITECTURE,
"250 means durable").
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from quailmail.config.auth import authenticate, checkpassword_command, may_offer_auth
from quailmail.config.cdb import Cdb
from quailmail.config.control import FileReadError
from quailmail.config.recipients import RcptCounter, decide_recipient
from quailmail.config.tcprules import load_rules, match_rules, names_hosts
from quailmail.core.reply import Reply
from quailmail.net import proxy
from quailmail.net.addresses import in_networks, plain
from quailmail.net.listeners import Listener
from quailmail.policy import pipeline
from quailmail.policy.base import Client, Conversation, Message, UntilAuth
from quailmail.queue import QueueError
from quailmail.server import qmailqueue
from quailmail.server.names import verified_name
from quailmail.server.state import ServerState
from quailmail.smtp import (
    NEED_DATA,
    PAUSED,
    RCPT_LIMIT_REACHED,
    AuthRequest,
    Connected,
    ConnectionClosed,
    DataReady,
    Event,
    Helo,
    MailFrom,
    MessageReceived,
    RcptTo,
    Reset,
    Session,
    SessionConfig,
    StartTls,
    received_header,
)

log = logging.getLogger("quailmail.smtpd")

_PROXY_TIMEOUT = 10.0  # seconds for a trusted proxy to send its header
# What a connection check's refusal answers here, beside RCPT, DATA and BDAT
# (the session answers those: Session.refusal); a greylisting one
# (UntilAuth) lets the client log in (and start TLS to do so), and AUTH
# lifts it.  HELO, EHLO, MAIL, RSET, NOOP and QUIT get their usual answers,
# as rblsmtpd and jgreylist give them.
_REFUSED = (AuthRequest, StartTls)
_SENDER_OK = Reply(250, "2.1.0", "sender ok")
# jgreylist's answer at JGREYLIST_LIMIT (its words), before it hangs up.
_TOO_MANY_RCPTS = Reply(421, "4.7.0", "Too many RCPT commands, goodbye.")


class SmtpConnection(asyncio.Protocol):
    def __init__(self, state: ServerState, listener: Listener) -> None:
        self.state = state
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.env: dict[str, str] = {}
        self.remote_ip = self.local_ip = ""
        self.remote_port = self.local_port = 0
        self.tls_active = listener.implicit_tls
        self.pending = bytearray()  # bytes before the session exists (PROXY header)
        self.awaiting_proxy = False
        self.naming = False  # looking up the client's name for =host rules
        self.eof_pending = False
        self.greeting_held = False  # GREETDELAY or the connection checks running
        self.greet_delay = 0.0  # GREETDELAY: talking before the greeting is then refused
        self.greeting: str | None = None  # control/smtpgreeting, read per connection
        self.busy = False  # a queue write or password check under way
        self.closed = False
        self.counted = False
        self.sender = ""
        self.sender_set = False  # between MAIL and the end of the transaction
        self.recipients: list[str] = []
        self.timeout = 0.0
        self.counter: RcptCounter | None = None
        self.client: Client  # set in _start, with the rules' variables
        self.last_activity = time.monotonic()
        self.timer: asyncio.TimerHandle | None = None
        # A refused conversation's end (Conversation.time_limit); cancelled
        # at close, so a flood of refused clients leaves no connection behind.
        self.conversation_timer: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()

    # -- connection life -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport; they act like one.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("0.0.0.0", 0)  # noqa: S104
        local = transport.get_extra_info("sockname") or ("0.0.0.0", 0)  # noqa: S104
        self.remote_ip, self.remote_port = plain(peer[0]), int(peer[1])
        self.local_ip, self.local_port = plain(local[0]), int(local[1])
        self.state.connections_set.add(self)
        if self.state.proxy_from and in_networks(self.remote_ip, self.state.proxy_from):
            self.awaiting_proxy = True
            self._arm_timer(_PROXY_TIMEOUT)
            return
        self._begin()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        if self.conversation_timer is not None:
            self.conversation_timer.cancel()
        self.state.connections_set.discard(self)
        if self.counted:
            self.state.connections -= 1
            left = self.state.per_ip.get(self.remote_ip, 1) - 1
            if left > 0:
                self.state.per_ip[self.remote_ip] = left
            else:
                self.state.per_ip.pop(self.remote_ip, None)
        if self.sender_set:
            self._end_transaction()

    def _close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    # -- PROXY header, rules, greeting ---------------------------------------------

    def _take_proxy_header(self) -> None:
        try:
            header = proxy.parse(bytes(self.pending))
        except proxy.ProxyError as exc:
            log.info("%s: %s", self.remote_ip, exc)
            self._close()
            return
        if header is None:
            return
        del self.pending[: header.consumed]
        self.awaiting_proxy = False
        if header.source is not None and header.source_port is not None:
            self.remote_ip, self.remote_port = plain(header.source), header.source_port
        if header.destination is not None and header.destination_port is not None:
            self.local_ip, self.local_port = plain(header.destination), header.destination_port
        self._begin()

    def _begin(self) -> None:
        state = self.state
        ip = self.remote_ip
        state.connections += 1
        state.per_ip[ip] = state.per_ip.get(ip, 0) + 1
        self.counted = True
        assert self.transport is not None
        if state.stopping:
            self._refuse(Reply(421, "4.3.2", f"{state.hostname} shutting down"))
            return
        if state.connections > state.max_connections or (
            state.max_per_ip and state.per_ip[ip] > state.max_per_ip
        ):
            self._refuse(Reply(421, "4.7.0", f"{state.hostname} too many connections"))
            return
        rules = state.root / "control" / self.listener.rules
        # tcpserver reads the rules file on every connection: a recompiled
        # file counts at once.  No file: every client allowed, no variables.
        try:  # a corrupt cdb may show only when its keys are read
            cdb = load_rules(rules)
            naming = names_hosts(cdb, rules)
        except (OSError, ValueError) as exc:
            self._rules_unreadable(rules, exc)
            return
        if naming:
            # Rules name hosts: find the client's verified name first, as
            # tcpserver does; input waits in `pending` meanwhile.
            self.naming = True
            task = self.loop.create_task(verified_name(state.resolver, ip))
            task.add_done_callback(lambda done: self._named(rules, done))
            return
        self._start(rules, cdb, None)

    def _named(self, rules: Path, task: asyncio.Task[str | None]) -> None:
        self.naming = False
        if self.closed:
            return
        try:
            host = task.result()
        except Exception:  # a resolver bug must not leave the client hanging
            log.exception("%s: reverse lookup failed", self.remote_ip)
            host = None
        try:  # as the file is now, after the lookup
            cdb = load_rules(rules)
        except (OSError, ValueError) as exc:
            self._rules_unreadable(rules, exc)
            return
        self._start(rules, cdb, host)

    def _start(self, rules: Path, cdb: Cdb | None, host: str | None) -> None:
        state = self.state
        ip = self.remote_ip
        try:  # a corrupt cdb may show only at a lookup
            match = match_rules(cdb, rules, ip, hostname=host)
        except (OSError, ValueError) as exc:
            self._rules_unreadable(rules, exc)
            return
        if match is not None and not match.allow:
            log.info("%s: denied by %s", ip, match.key or "the default rule")
            self._close()  # tcpserver drops a denied client without a word
            return
        six = ":" in ip
        proto = ("SSL" if self.tls_active else "TCP") + ("6" if six else "")
        env = {
            **state.base_env,  # the run script's variables (tcpserver's environment)
            "PROTO": proto,
            "TCPREMOTEIP": ip,
            "TCPREMOTEPORT": str(self.remote_port),
            "TCPLOCALIP": self.local_ip,
            "TCPLOCALPORT": str(self.local_port),
        }
        if host is not None:
            env["TCPREMOTEHOST"] = host
        if match is not None:
            env.update(match.env)
        self.env = env
        self.counter = RcptCounter.from_env(env)
        # AUTH without TLS only where config.auth allows it (authloopback).
        loopback_auth = may_offer_auth(state.root, tls=False, client_ip=ip)
        # qmail-smtpd's smtp_greet: control/smtpgreeting names us in the 220,
        # HELO's and EHLO's 250 and the 221 (Received keeps control/me).
        self.greeting = state.greeting()
        config = SessionConfig(
            self.greeting or state.hostname,
            max_message_size=state.databytes(env),
            timeout=float(state.timeout()),
            tls_available=state.tls is not None and not self.tls_active,
            auth_mechanisms=("PLAIN", "LOGIN"),
            auth_requires_tls=not loopback_auth,
        )
        session = self.session = Session(config)
        if self.tls_active:
            version, cipher = self._tls_info()
            session.tls_started(version, cipher)
        self._arm_timer(config.timeout)
        self.client = Client(
            root=state.root,
            control=state.control,
            resolver=state.resolver,
            hostname=state.hostname,
            ip=ip,
            env=env,
            host=host,
            listener=self.listener.name,
            tls=self.tls_active,
        )
        delay = self.greet_delay = _seconds(env.get("GREETDELAY"))
        if pipeline.CONNECT:
            # The connection checks decide before the greeting; input waits.
            self.greeting_held = True
            task = self.loop.create_task(pipeline.at_connect(self.client))
            task.add_done_callback(lambda done: self._connect_checked(done, delay))
        elif delay > 0:
            self.greeting_held = True
            self.loop.call_later(delay, self._greet)
        else:
            self._pump()
        if self.pending:
            data = bytes(self.pending)
            self.pending.clear()
            self.data_received(data)
        if self.eof_pending and not self.closed:
            self.eof_pending = False
            self.eof_received()

    def _connect_checked(self, task: asyncio.Task[Reply | None], delay: float) -> None:
        if self.closed:
            return
        try:
            refusal = task.result()
        except FileReadError as exc:  # said in one line: the admin's to mend
            log.error("%s: connection checks failed: %s", self.remote_ip, exc)
            refusal = Reply(451, "4.3.0", "temporary failure, try again later")
        except Exception:  # a check's bug must not leave the client hanging
            log.exception("%s: connection checks failed", self.remote_ip)
            refusal = Reply(451, "4.3.0", "temporary failure, try again later")
        if isinstance(refusal, Conversation) and refusal.time_limit == 0:
            # rblsmtpd -t0: the refusal instead of a greeting, then goodbye.
            self._refuse(refusal)
            return
        session = self.session
        assert session is not None  # made in _start, before the checks
        session.refusal = refusal  # the answer to every command until QUIT
        if isinstance(refusal, Conversation):
            if refusal.time_limit is not None:
                self.conversation_timer = self.loop.call_later(
                    refusal.time_limit, self._conversation_over, refusal
                )
            if refusal.rcpt_limit:
                session.limit_rcpt_commands(refusal.rcpt_limit, _TOO_MANY_RCPTS)
        if delay > 0:
            self.loop.call_later(delay, self._greet)
        else:
            self._greet()

    def _greet(self) -> None:
        if self.greeting_held and not self.closed:
            self.greeting_held = False
            self._pump()

    def _rules_unreadable(self, rules: Path, exc: Exception) -> None:
        """A rules file that cannot be read (half written in place, corrupt,
        unreadable): tcpserver drops the client ("unable to read"); we say
        so with a 421, which makes it retry, and read the file again at the
        next connection."""
        log.warning("%s: rules %s unreadable: %s", self.remote_ip, rules, exc)
        self._refuse(
            Reply(421, "4.3.0", f"{self.state.hostname} local configuration error, try again later")
        )

    def _refuse(self, reply: Reply) -> None:
        assert self.transport is not None
        self.transport.write(reply.render())
        self._close()

    # -- input ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        if self.awaiting_proxy or self.session is None or self.naming:
            self.pending += data
            if self.awaiting_proxy:
                self._take_proxy_header()
            return
        if self.greeting_held:
            if self.greet_delay <= 0:
                # The connection checks are deciding: the input waits in the
                # session until the greeting, as rblsmtpd's lookups make it wait.
                self.session.receive(data)
                return
            # Spoke before the greeting: an early talker (GREETDELAY).
            self.greeting_held = False
            self.session.early_talker()
            self._pump()
            return
        self.session.receive(data)
        if not self.busy:
            self._pump()

    def eof_received(self) -> bool | None:
        # True keeps our side open: replies to what was already sent (a
        # pipelined script ending in QUIT, then EOF) must still be written.
        # Over TLS the transport closes whatever we answer (asyncio warns
        # that True has no effect there), so the answer is False.
        keep_open = not self.tls_active
        if self.session is None or self.naming or self.awaiting_proxy:
            self.eof_pending = True  # fed to the session once it exists
            return keep_open
        if not self.greeting_held:
            self.session.receive(b"")
            if not self.busy:
                self._pump()
        elif self.greet_delay <= 0:
            self.session.receive(b"")  # read after the greeting, as the input
        return keep_open

    # -- the event loop of the session -----------------------------------------------

    def _pump(self) -> None:
        session = self.session
        assert session is not None
        while not self.busy and not self.closed:
            event = session.next_event()
            if event is NEED_DATA:
                break
            if event is PAUSED:
                self._flush()
                self.loop.create_task(self._start_tls())
                return
            assert isinstance(event, Event)
            if isinstance(event, ConnectionClosed):
                if event.reason == RCPT_LIMIT_REACHED:
                    log.info("%s: HANGUP %s", self.remote_ip, RCPT_LIMIT_REACHED)  # jgreylist
                self._flush()
                self._close()
                return
            if not event.needs_reply:
                if isinstance(event, Reset):
                    self._end_transaction()
                continue
            reply = self._answer(event)
            if reply is not None:
                session.reply(reply)
        self._flush()

    def _flush(self) -> None:
        assert self.session is not None and self.transport is not None
        data = self.session.data_to_send()
        if data and not self.closed:
            self.transport.write(data)

    def _answer(self, event: Event) -> Reply | None:
        """The reply now, or None when a task will give it."""
        state = self.state
        refusal = self.session.refusal if self.session is not None else None
        if refusal is not None:
            # rblsmtpd's way: the reason to every command that would lead to
            # a delivery, until QUIT; MAIL is taken (and nothing checked).
            if isinstance(event, MailFrom):
                return _SENDER_OK
            if isinstance(event, _REFUSED) and not isinstance(refusal, UntilAuth):
                return refusal
        if isinstance(event, RcptTo):
            return self._rcpt(event)
        if isinstance(event, MailFrom):
            self._end_transaction()
            self.sender = "" if event.path.null else str(event.path)
            self.sender_set = True
            state.in_transaction += 1
            if self.counter is not None:
                self.counter.new_message()
            if pipeline.MAIL:
                self._wait_for(self._mail_checks(self.sender))
                return None
            return _SENDER_OK
        if isinstance(event, DataReady):
            return Reply(354, None, "go ahead, end with <CRLF>.<CRLF>")
        if isinstance(event, MessageReceived):
            self._wait_for(self._queue(event))
            return None
        if isinstance(event, Helo):
            return Reply(250, None, self.greeting or state.hostname)
        if isinstance(event, Connected):
            if self.greeting:
                return Reply(220, None, f"{self.greeting} ESMTP")
            return Reply(220, None, f"{state.hostname} ESMTP quailmail")
        if isinstance(event, AuthRequest):
            self._wait_for(self._auth(event))
            return None
        if isinstance(event, StartTls):
            if state.tls is None:
                return Reply(454, "4.7.0", "TLS not available")
            return Reply(220, "2.0.0", "ready to start TLS")
        return Reply(502, "5.5.1", "not implemented")

    def _rcpt(self, event: RcptTo) -> Reply | None:
        """RCPT: the policy's first checks (qmail-spf's refusal comes before
        rcpthosts), the relay and recipient checks, then the policy's RCPT
        checks for a recipient they took."""
        self._wait_for(self._rcpt_checks(event))
        return None

    async def _rcpt_checks(self, event: RcptTo) -> Reply:
        assert self.session is not None
        client = self._client()
        path = event.path
        refused = await pipeline.at_rcpt_first(client, self.sender, str(path))
        if refused is not None:
            return refused
        decision = decide_recipient(
            self.state.control,
            path.local,
            path.domain,
            relayclient=self.env.get("RELAYCLIENT"),
            authenticated=self.session.auth_user is not None,
            route=path.route,
            counter=self.counter,
        )
        if not decision.accepted:
            log.info("%s: RCPT %s refused: %s", self.remote_ip, path, decision.reason)
            return decision.reply
        if decision.recipient is None:
            return decision.reply
        refused = await pipeline.at_rcpt(client, self.sender, decision.recipient)
        if refused is not None:
            return refused
        self.recipients.append(decision.recipient)
        return decision.reply

    def _client(self) -> Client:
        """The policy's view, brought up to date with the session."""
        session = self.session
        assert session is not None
        client = self.client
        client.helo = session.helo
        client.tls = session.tls_active
        client.auth_user = session.auth_user
        return client

    async def _mail_checks(self, sender: str) -> Reply:
        client = self._client()
        client.evidence.clear()
        refused = await pipeline.at_mail(client, sender)
        if refused is not None:
            self._end_transaction()
            return refused
        return _SENDER_OK

    def _end_transaction(self) -> None:
        if self.sender_set:
            self.state.in_transaction -= 1
        self.sender_set = False
        self.sender = ""
        self.recipients = []

    # -- answers that wait -------------------------------------------------------------

    def _wait_for(self, job: Coroutine[Any, Any, Reply]) -> None:
        self.busy = True
        assert self.transport is not None
        self.transport.pause_reading()
        task: asyncio.Task[Reply] = self.loop.create_task(job)
        task.add_done_callback(self._answered)

    def _answered(self, task: asyncio.Task[Reply]) -> None:
        self.busy = False
        if self.closed or self.session is None:
            return
        try:
            reply = task.result()
        except FileReadError as exc:  # a control file we cannot read: one line
            log.error("%s: %s", self.remote_ip, exc)
            reply = Reply(451, "4.3.0", "temporary failure, try again later")
        except Exception:  # never let a bug kill the loop: answer 451 and log it
            log.exception("%s: internal error", self.remote_ip)
            reply = Reply(451, "4.3.0", "internal error, try again later")
        self.session.reply(reply)
        assert self.transport is not None
        self.transport.resume_reading()
        self._pump()

    async def _queue(self, event: MessageReceived) -> Reply:
        session = self.session
        assert session is not None
        state = self.state
        recipients = list(self.recipients)
        header = received_header(
            helo=session.helo,
            client_ip=self.remote_ip,
            client_host=None,
            server_name=state.hostname,
            with_protocol=session.with_protocol,
            date=datetime.now(UTC),
            tls_version=session.tls_version,
            tls_cipher=session.tls_cipher,
            auth_user=session.auth_user,
            recipient=recipients[0] if len(recipients) == 1 else None,
        )
        message = Message(
            self.sender,
            recipients,
            [header.encode("utf-8"), *event.chunks],
            event.size,
            meta={"client": self.remote_ip, "proto": self.env.get("PROTO", "")},
        )
        if pipeline.DATA:
            refused = await pipeline.at_data(self._client(), message)
            if refused is not None:
                self._end_transaction()
                return refused
        if self.env.get("QMAILQUEUE"):
            # A qmail-queue program takes the message instead of our queue.
            reply = await qmailqueue.run(self._client(), message)
            self._end_transaction()
            return reply
        try:
            qid = await state.queue.put(
                self.sender,
                message.recipients,
                [*message.add_headers, *message.chunks],
                meta=message.meta,
            )
        except QueueError as exc:
            log.warning("%s: queue refused a message: %s", self.remote_ip, exc)
            reply = Reply(451, exc.enhanced, f"{exc}; try again later")
        else:
            log.info(
                "%s: queued %s from <%s> to %d recipient(s), %d bytes",
                self.remote_ip, qid, self.sender, len(recipients), event.size,
            )  # fmt: skip
            reply = Reply(250, "2.0.0", f"ok {qid}")
        self._end_transaction()
        return reply

    async def _auth(self, event: AuthRequest) -> Reply:
        root = self.state.root
        result = await authenticate(
            root, event.username, event.password, checkpassword=checkpassword_command(root)
        )
        if not result:
            log.info("%s: AUTH %s failed for %r", self.remote_ip, event.mechanism, event.username)
        elif self.session is not None and isinstance(self.session.refusal, UntilAuth):
            self.session.refusal = None  # an authenticated client is never greylisted
            self.session.limit_rcpt_commands(0)
        return result.reply

    async def _start_tls(self) -> None:
        assert self.transport is not None and self.state.tls is not None
        try:
            transport = await self.loop.start_tls(
                self.transport, self, self.state.tls, server_side=True
            )
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            log.info("%s: TLS handshake failed: %s", self.remote_ip, exc)
            self._close()
            return
        if transport is None or self.closed:
            self._close()
            return
        self.transport = transport
        self.tls_active = True
        self.env["PROTO"] = "SSL6" if ":" in self.remote_ip else "SSL"
        version, cipher = self._tls_info()
        assert self.session is not None
        self.session.tls_started(version, cipher)
        self._pump()

    def _tls_info(self) -> tuple[str | None, str | None]:
        assert self.transport is not None
        ssl_object = self.transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return None, None
        cipher = ssl_object.cipher()
        return ssl_object.version(), cipher[0] if cipher else None

    # -- timeouts ------------------------------------------------------------------------

    def _arm_timer(self, seconds: float) -> None:
        """One timer per connection, re-armed lazily: activity only moves
        `last_activity`, the timer checks it when it fires."""
        self.timeout = seconds
        self.timer = self.loop.call_later(seconds, self._check_timeout)

    def _check_timeout(self) -> None:
        if self.closed:
            return
        idle = time.monotonic() - self.last_activity
        if self.busy or idle < self.timeout:
            self.timer = self.loop.call_later(max(self.timeout - idle, 0.05), self._check_timeout)
            return
        if self.session is None:
            self._close()
            return
        self.session.timed_out()
        self._pump()
        self._close()

    def _conversation_over(self, refusal: Conversation) -> None:
        """The refused conversation lasted its `time_limit` (jgreylist's
        JGREYLIST_TIMEOUT): 421 and close, unless AUTH lifted the refusal."""
        if self.closed or self.session is None or self.session.refusal is not refusal:
            return
        log.info("%s: refused conversation timed out after %.0f s", self.remote_ip,
                 refusal.time_limit or 0)  # fmt: skip
        self.session.timed_out()
        self._pump()
        self._close()

    def shutdown(self) -> None:
        """SIGTERM: an idle connection is told 421 and closed; one inside a
        transaction is left to finish it (the server waits, bounded)."""
        if self.closed or self.busy or self.sender_set:
            return
        if self.transport is not None:
            self.transport.write(Reply(421, "4.3.2", "shutting down").render())
        self._close()


def _seconds(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        return 0.0
