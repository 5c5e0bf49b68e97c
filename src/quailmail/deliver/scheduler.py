"""The scheduler: qmail-send inside each `quail serve` worker.

Each worker owns one queue shard (its flock) and delivers what is in it:
nobody else may record outcomes there.  Worker 0 also empties the shard
`quail inject` writes (`queue/inject`): it copies each message into its own
shard, durably, and only then marks it done in the inject shard, so a crash
in between leaves a duplicate, never a loss.

For every message the scheduler splits the pending recipients: local ones
(domains in `locals` or `virtualdomains`, delivered to whom qmail-lspawn
would: `users/assign`, a virtual domain's directory, a system user, the
alias user; see config/lspawn.py) are delivered one by one within
`concurrencylocal`, remote ones one transaction per domain within
`concurrencyremote`, reusing an open connection to the same domain.  Every
recipient's outcome is recorded in the queue (`mark_done`, fsynced) before
the attempt is forgotten: a crash repeats a delivery, never drops one.

A temporary failure is retried at qmail's `nextretry` (queue/retry.py)
until the message is older than `queuelifetime`; then, like a permanent
failure, it bounces.  A message bounces once, as in qmail-send: its
failures are gathered (qmail's `addbounce` appends each to `bounce/ID`)
and one RFC 3464 report naming them all is queued to the envelope sender
when no recipient is left to try (`messdone` → `injectbounce`, see
`_messdone`), before any of them is marked bounced.  A failed bounce (null
sender) goes to `doublebounceto`; a failed double bounce is dropped and
logged.

Requests from `quail queue`: a changed mtime of `queue/flush` (or SIGALRM)
makes every pending recipient due now; a file `SHARD/delete/ID` removes
message ID from the shard that owns it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from quailmail.config.control import Control, control_for
from quailmail.config.lspawn import LookupFailure, assignment
from quailmail.core.clock import Clock, SystemClock
from quailmail.core.dns import Resolver
from quailmail.core.outcome import Outcome
from quailmail.deliver import junk
from quailmail.deliver.bounce import Failure, make_bounce, wants_bounce
from quailmail.deliver.local import Mailbox, default_delivery, deliver_local, mailbox_for
from quailmail.deliver.lspawn import Lspawn
from quailmail.deliver.remote import (
    DeliveryError,
    RecipientOutcome,
    RemoteSession,
    RemoteSettings,
    Status,
    connect,
)
from quailmail.deliver.signconf import sign_outgoing
from quailmail.queue import Queue, QueuedMessage, QueueError
from quailmail.queue.record import Outcome as Done
from quailmail.queue.retry import QUEUELIFETIME, expired, next_retry
from quailmail.queue.segment import list_files
from quailmail.queue.shards import INJECT

log = logging.getLogger("quailmail.send")

CONCURRENCY_LOCAL = 10  # qmail-send's defaults
CONCURRENCY_REMOTE = 20
POLL = 0.5  # seconds between looks at the inject shard and the request files
IDLE_CONNECTION = 5.0  # seconds an unused connection to a domain stays open
_INLINE_READ = 256 * 1024  # messages up to this size are read on the loop
DOUBLE_BOUNCE_SENDER = "#@[]"  # qmail's sender of a double bounce
TOO_OLD = "I'm not going to try again; this message has been in the queue too long."
_ENHANCED = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.])")


@dataclass(slots=True)
class _Rcpt:
    index: int
    address: str
    local: bool
    domain: str
    due: float
    busy: bool = False


@dataclass(slots=True)
class _Message:
    qid: str
    sender: str
    birth: float
    meta: dict[str, str]
    rcpts: dict[int, _Rcpt]
    busy: int = 0  # attempts under way
    data: bytes | None = None  # read once while attempts are under way
    signed: tuple[bytes, str | None] | None = None  # (fields, temporary reason)
    # Failed recipients not yet reported, by index (qmail's bounce/ID); they
    # stay pending in the queue until the report is queued (`_messdone`).
    failed: dict[int, Failure] = field(default_factory=dict)
    report_due: float = 0.0  # when to queue the report again after a failure


@dataclass(frozen=True, slots=True)
class _Result:
    index: int
    kind: str  # "ok" | "temporary" | "permanent"
    reason: str
    host: str = ""  # the remote MTA that said it
    status: str = ""  # RFC 3463 code for the bounce ("": from the reason)


@dataclass(slots=True)
class _Idle:
    session: RemoteSession
    since: float


def _status_of(reason: str, permanent: bool) -> str:
    """The RFC 3463 code a reason carries (`550 5.1.1 …`, `(#5.1.1)`), else a
    generic one: 5.0.0, or for a temporary failure that outlived
    `queuelifetime` its own 4.x.x code, else 4.4.7 (delivery time expired)."""
    found = _ENHANCED.search(reason)
    code = found.group(1) if found else None
    if permanent:
        return code if code and code[0] == "5" else "5.0.0"
    return code if code and code[0] == "4" else "4.4.7"


class Scheduler:
    def __init__(
        self,
        root: Path,
        queue: Queue,
        *,
        resolver: Resolver,
        worker: int = 0,
        workers: int = 1,
        clock: Clock | None = None,
        settings: RemoteSettings | None = None,
    ) -> None:
        self.root = root
        self.queue = queue
        self.resolver = resolver
        self.worker = worker
        self.clock = clock or SystemClock()
        self.control: Control = control_for(root)
        self._settings = settings  # fixed settings (tests); else read per attempt
        self._settings_cache: tuple[float, RemoteSettings] | None = None
        share = max(1, workers)
        local = self.control.int_value("concurrencylocal", CONCURRENCY_LOCAL)
        remote = self.control.int_value("concurrencyremote", CONCURRENCY_REMOTE)
        self._local = asyncio.Semaphore(max(1, -(-local // share)))
        self._remote = asyncio.Semaphore(max(1, -(-remote // share)))
        self._messages: dict[str, _Message] = {}
        self._heap: list[tuple[float, str]] = []
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle: dict[str, list[_Idle]] = {}
        self._stopping = False
        self._runner: asyncio.Task[None] | None = None
        # qmail-lspawn: a root helper forking per delivery to another uid,
        # started at the first one, stopped with us.
        self._lspawn = Lspawn()
        self._flush_mtime = self._mtime(self._flush_path)

    # -- life cycle -------------------------------------------------------

    @property
    def _flush_path(self) -> Path:
        return self.root / "queue" / "flush"

    async def start(self) -> None:
        """Take every message already queued, then follow new ones."""
        for message in list(self.queue.messages()):
            self._admit(message)
        self.queue.on_put = self.notify
        self._runner = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, grace: float = 30.0) -> None:
        """Stop starting attempts; let those under way record their outcome
        (bounded by `grace`); the rest resume at the next start."""
        self._stopping = True
        self.queue.on_put = None
        self._wake.set()
        if self._runner is not None:
            await self._runner
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for idle in self._idle.values():
            for entry in idle:
                await entry.session.close()
        self._idle.clear()
        await self._lspawn.close()

    def notify(self, qid: str) -> None:
        """A message just became durable in our queue."""
        if self._stopping or qid in self._messages:
            return
        try:
            message = self.queue.get(qid)
        except KeyError:
            return
        self._admit(message)
        self._wake.set()

    def flush(self) -> None:
        """Every pending recipient is due now (qmail-send's SIGALRM)."""
        now = self.clock.now()
        for message in self._messages.values():
            for rcpt in message.rcpts.values():
                rcpt.due = min(rcpt.due, now)
            message.report_due = min(message.report_due, now)
            heapq.heappush(self._heap, (now, message.qid))
        self._wake.set()

    # -- bookkeeping ------------------------------------------------------

    def _is_local(self, address: str) -> tuple[bool, str]:
        local, at, domain = address.rpartition("@")
        if not at:
            return True, ""  # a bare local part: ours (qmail adds `me`)
        domain = domain.lower()
        if self.control.is_local(domain):
            return True, domain
        return self.control.virtualdomain(local, domain) not in (None, ""), domain

    def _admit(self, message: QueuedMessage) -> None:
        now = self.clock.now()
        rcpts = {}
        for index in message.pending:
            address = message.recipients[index]
            local, domain = self._is_local(address)
            rcpts[index] = _Rcpt(index, address, local, domain, now)
        if not rcpts:
            return
        self._messages[message.id] = _Message(
            message.id, message.sender, message.arrival, dict(message.meta), rcpts
        )
        heapq.heappush(self._heap, (now, message.id))

    # -- the loop ---------------------------------------------------------

    async def _run(self) -> None:
        last_poll = 0.0
        while not self._stopping:
            now = self.clock.now()
            self._dispatch(now)
            mono = time.monotonic()
            if mono - last_poll >= POLL:
                last_poll = mono
                try:
                    await self._requests()
                except Exception:  # a request gone wrong must not stop delivery
                    log.exception("handling queue requests failed")
                self._close_idle(mono)
            wait = POLL
            if self._heap:
                wait = max(0.0, min(wait, self._heap[0][0] - self.clock.now()))
            self._wake.clear()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)

    def _dispatch(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now and not self._stopping:
            _, qid = heapq.heappop(self._heap)
            message = self._messages.get(qid)
            if message is None:
                continue
            if not message.rcpts:
                # Only its report is left: the last attempt could not queue it.
                if message.failed and not message.busy and message.report_due <= now:
                    self._spawn_report(message)
                continue
            due = [r for r in message.rcpts.values() if not r.busy and r.due <= now]
            if not due:
                continue
            locals_ = [r for r in due if r.local]
            by_domain: dict[str, list[_Rcpt]] = {}
            for rcpt in due:
                if not rcpt.local:
                    by_domain.setdefault(rcpt.domain, []).append(rcpt)
            for rcpt in locals_:
                self._spawn(message, [rcpt], local=True)
            for group in by_domain.values():
                self._spawn(message, group, local=False)

    def _spawn(self, message: _Message, rcpts: list[_Rcpt], *, local: bool) -> None:
        for rcpt in rcpts:
            rcpt.busy = True
        message.busy += 1
        task = asyncio.get_running_loop().create_task(self._attempt(message, rcpts, local=local))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _spawn_report(self, message: _Message) -> None:
        message.busy += 1
        task = asyncio.get_running_loop().create_task(self._report(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _attempt(self, message: _Message, rcpts: list[_Rcpt], *, local: bool) -> None:
        try:
            async with self._local if local else self._remote:
                if self._stopping:
                    results = None
                else:
                    data = await self._data(message)
                    if data is None:
                        return
                    if local:
                        results = [await self._local_one(message, rcpts[0], data)]
                    else:
                        results = await self._remote_group(message, rcpts, data)
            if results is not None:
                await self._record(message, results)
                if message.busy == 1 and not message.rcpts:
                    await self._messdone(message)  # the last attempt of the message
        except Exception:
            log.exception("%s: delivery attempt failed", message.qid)
            for rcpt in rcpts:
                if rcpt.index in message.rcpts:
                    rcpt.due = self.clock.now() + 60
            message.report_due = self.clock.now() + 60
        finally:
            for rcpt in rcpts:
                rcpt.busy = False
            self._settle(message)

    async def _report(self, message: _Message) -> None:
        """Queue the report the last attempt could not (qmail-send retries
        `messdone` after SLEEP_SYSFAIL)."""
        try:
            await self._messdone(message)
        except Exception:
            log.exception("%s: queuing the bounce failed", message.qid)
            message.report_due = self.clock.now() + 60
        finally:
            self._settle(message)

    def _settle(self, message: _Message) -> None:
        """An attempt or a report has ended: forget the message when nothing
        is left of it, else wake up when its next recipient (or its report)
        is due."""
        message.busy -= 1
        if message.busy == 0:
            message.data = None
            message.signed = None
        if not message.rcpts and not message.failed:
            self._messages.pop(message.qid, None)
        elif not self._stopping:
            soonest = min((r.due for r in message.rcpts.values()), default=message.report_due)
            heapq.heappush(self._heap, (soonest, message.qid))
            self._wake.set()

    async def _data(self, message: _Message) -> bytes | None:
        if message.data is None:
            try:
                if self.queue.get_size(message.qid) <= _INLINE_READ:
                    # From the page cache in microseconds: cheaper than a thread hop.
                    message.data = self.queue.read_sync(message.qid)
                else:
                    message.data = await asyncio.to_thread(self.queue.read_sync, message.qid)
            except KeyError:  # deleted meanwhile
                message.rcpts.clear()
                message.failed.clear()
                return None
            except QueueError as exc:
                log.error("%s: %s", message.qid, exc.reason)
                for rcpt in message.rcpts.values():
                    rcpt.due = self.clock.now() + 300
                return None
        return message.data

    # -- local ------------------------------------------------------------

    def _mailbox(self, address: str) -> Mailbox | Outcome:
        """qmail-lspawn: who gets `address` (config.lspawn, the lookup the
        RCPT check makes too), as a Mailbox; a temporary Outcome where
        qmail-lspawn would defer."""
        local, _, domain = address.rpartition("@")
        if not local:
            local, domain = address, self.control.value("me") or "localhost"
        ldomain = domain.lower()
        try:
            found = assignment(self.control, local, ldomain)
            return mailbox_for(self.root, found, local, ldomain,
                               default_delivery=default_delivery(self.control))  # fmt: skip
        except LookupFailure as exc:
            return Outcome.temporary(str(exc))
        except OSError as exc:
            return Outcome.temporary(f"unable to look up the user: {exc} (#4.3.0)")

    async def _local_one(self, message: _Message, rcpt: _Rcpt, data: bytes) -> _Result:
        # The server's setting (control/junkfolder, on unless 0/no/off); the
        # domain's and the user's files override it (junk.junk_enabled).
        enabled = junk.switched_on(self.control.value("junkfolder") or "1")
        mailbox = self._mailbox(rcpt.address)
        if isinstance(mailbox, Outcome):
            return _Result(rcpt.index, mailbox.kind, mailbox.reason)
        if mailbox.uid is None and not mailbox.home.is_dir():
            # ROOT/alias or a vpasswd user's directory gone (a user's own
            # home is qmail-local's check_home: temporary).
            return _Result(rcpt.index, "permanent", "Sorry, no mailbox here by that name. (#5.1.1)")
        lf = data.replace(b"\r\n", b"\n")
        result = await deliver_local(
            mailbox, lf, sender=message.sender, junk_folder=enabled, lspawn=self._lspawn
        )
        outcome = result.outcome
        if outcome.is_ok and result.forwards:
            # qmail-local hands forwards to qmail-queue after the other lines
            # succeeded: queue them (with our Delivered-To, for loop
            # detection) before the recipient counts as delivered.
            forwarded = f"Delivered-To: {mailbox.recipient}\r\n".encode() + data
            try:
                await self.queue.put(
                    result.new_sender, list(result.forwards), forwarded,
                    meta={"client": "forward", "from": message.qid},
                )  # fmt: skip
            except QueueError as exc:
                outcome = Outcome.temporary(f"cannot queue the forward: {exc.reason}")
            except ValueError as exc:
                outcome = Outcome.permanent(f"cannot forward: {exc} (#5.1.3)")
        where = ", ".join(result.delivered)
        reason = outcome.reason if not outcome.is_ok else where or "forwarded"
        return _Result(rcpt.index, outcome.kind, reason)

    # -- remote -----------------------------------------------------------

    def _remote_settings(self) -> RemoteSettings:
        if self._settings is not None:
            return self._settings
        # Read again at most once a second: a changed smtproutes or
        # timeout counts from the next second, not the next restart.
        now = time.monotonic()
        if self._settings_cache is None or now - self._settings_cache[0] > 1.0:
            self._settings_cache = (now, RemoteSettings.from_control(self.control))
        return self._settings_cache[1]

    def _sign(self, message: _Message, data: bytes) -> tuple[bytes, str | None]:
        if message.signed is None:
            signed = sign_outgoing(data, self.root / "control")
            message.signed = (signed.fields, signed.temporary)
        return message.signed

    async def _remote_group(
        self, message: _Message, rcpts: list[_Rcpt], data: bytes
    ) -> list[_Result]:
        fields, problem = self._sign(message, data)
        if problem is not None:
            log.warning("%s: not sent, signing failed: %s", message.qid, problem)
            return [_Result(r.index, "temporary", f"signing: {problem}") for r in rcpts]
        domain = rcpts[0].domain
        addresses = [r.address for r in rcpts]
        payload = fields + data if fields else data
        outcomes = await self._send(domain, message.sender, addresses, payload)
        return [
            _Result(r.index, _KIND[o.status], o.reply, o.host)
            for r, o in zip(rcpts, outcomes, strict=True)
        ]

    async def _send(
        self, domain: str, sender: str, recipients: Sequence[str], data: bytes
    ) -> list[RecipientOutcome]:
        settings = self._remote_settings()
        session = self._take_idle(domain)
        reused = session is not None
        if session is None:
            try:
                session = await connect(domain, resolver=self.resolver, settings=settings)
            except DeliveryError as exc:
                return exc.outcomes(recipients)
        outcomes = await session.send(sender, recipients, data)
        if reused and not session.usable and all(o.status is Status.TEMPORARY for o in outcomes):
            # A kept connection the server had closed meanwhile: try once on
            # a fresh one rather than wait for the next retry.
            await session.close()
            try:
                session = await connect(domain, resolver=self.resolver, settings=settings)
            except DeliveryError as exc:
                return exc.outcomes(recipients)
            outcomes = await session.send(sender, recipients, data)
        if session.usable and not self._stopping:
            self._idle.setdefault(domain, []).append(_Idle(session, time.monotonic()))
        else:
            await session.close()
        return outcomes

    def _take_idle(self, domain: str) -> RemoteSession | None:
        idle = self._idle.get(domain)
        while idle:
            entry = idle.pop()
            if entry.session.usable:
                return entry.session
            self._close_later(entry.session)
        return None

    def _close_idle(self, now: float) -> None:
        for domain in list(self._idle):
            keep = []
            for entry in self._idle[domain]:
                if now - entry.since > IDLE_CONNECTION or not entry.session.usable:
                    self._close_later(entry.session)
                else:
                    keep.append(entry)
            if keep:
                self._idle[domain] = keep
            else:
                del self._idle[domain]

    def _close_later(self, session: RemoteSession) -> None:
        task = asyncio.get_running_loop().create_task(session.close())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- outcomes ---------------------------------------------------------

    async def _record(self, message: _Message, results: list[_Result]) -> None:
        """Mark the delivered done (fsynced); keep the failures for the
        message's one report (qmail's `addbounce`); set the deferred's retry."""
        now = self.clock.now()
        lifetime = float(self.control.int_value("queuelifetime", QUEUELIFETIME))
        delivered: list[int] = []
        failed: list[_Result] = []
        for result in results:
            rcpt = message.rcpts[result.index]
            if result.kind == "ok":
                log.info("%s %d <%s>: delivered: %s", message.qid, rcpt.index, rcpt.address,
                         result.reason)  # fmt: skip
                delivered.append(result.index)
            elif result.kind == "permanent":
                log.info("%s %d <%s>: failed: %s", message.qid, rcpt.index, rcpt.address,
                         result.reason)  # fmt: skip
                failed.append(result)
            elif expired(message.birth, now, lifetime):
                log.info("%s %d <%s>: failed, too old: %s", message.qid, rcpt.index,
                         rcpt.address, result.reason)  # fmt: skip
                status = _status_of(result.reason, False)
                reason = f"{result.reason} {TOO_OLD}"
                failed.append(_Result(result.index, "permanent", reason, result.host, status))
            else:
                rcpt.due = next_retry(message.birth, now, remote=not rcpt.local)
                log.info("%s %d <%s>: deferred: %s", message.qid, rcpt.index, rcpt.address,
                         result.reason)  # fmt: skip
        if delivered:
            await asyncio.gather(
                *(self.queue.mark_done(message.qid, i, Done.DELIVERED) for i in delivered)
            )
            for index in delivered:
                message.rcpts.pop(index, None)
        for result in failed:
            gone = message.rcpts.pop(result.index, None)
            if gone is None:
                continue  # deleted by request meanwhile
            status = result.status or _status_of(result.reason, True)
            failure = Failure(gone.address, status, result.reason, result.host or None)
            message.failed[result.index] = failure

    async def _messdone(self, message: _Message) -> None:
        """No recipient of the message is left to try: queue one report of
        every failure, then mark the failed recipients bounced.

        qmail-send's rule: a failure is appended to `bounce/ID` (`addbounce`)
        and the recipient marked done; `job_close` puts the message on
        `pqdone` only once no channel (local, remote) has a recipient left
        to try, deferred ones included; `messdone` then injects the one
        bounce (`injectbounce`).  So a failure waits for the deferred
        recipients of its message, until they are delivered or fail in
        turn (at the latest after `queuelifetime`), and the sender gets one
        report per message.

        We keep no `bounce/ID`: the failures are held in memory while their
        recipients stay pending in the queue, and are marked bounced only
        after the report is fsynced there.  A crash or restart in between
        loses no failure: the recipient is tried again and fails again.  The
        price is that attempt, repeated as a crash repeats any attempt under
        way (a remote that refused sees the message again, a `|program` that
        exited 100 runs again)."""
        if not message.failed:
            return
        data = await self._data(message)
        if data is None:  # deleted meanwhile, or unreadable for now
            message.report_due = self.clock.now() + 300
            return
        failed = dict(message.failed)
        # The report is durable before any recipient counts as bounced.
        await self._bounce(message, data, list(failed.values()))
        await asyncio.gather(*(self.queue.mark_done(message.qid, i, Done.BOUNCED) for i in failed))
        for index in failed:
            message.failed.pop(index, None)

    async def _bounce(self, message: _Message, data: bytes, failures: list[Failure]) -> None:
        """Queue the report of `failures` (durably) before they are marked."""
        sender = message.sender
        me = self.control.value("me") or "localhost"
        if wants_bounce(sender):
            to, from_ = [sender], ""
        elif sender in ("", "<>"):
            target = self.control.value("doublebounceto", "postmaster")
            if not target:
                log.info("%s: double bounce discarded (doublebounceto is empty)", message.qid)
                return
            host = self.control.value("doublebouncehost") or me
            to, from_ = [target if "@" in target else f"{target}@{host}"], DOUBLE_BOUNCE_SENDER
        else:
            log.info("%s: triple bounce discarded", message.qid)
            return
        report = make_bounce(
            original=data,
            sender=to[0],
            failures=failures,
            reporting_mta=me,
            arrival=datetime.fromtimestamp(message.birth, UTC),
            now=datetime.fromtimestamp(self.clock.now(), UTC),
            # qmail-send's injectbounce: From: bouncefrom@bouncehost
            from_address=f"{self.control.value('bouncefrom') or 'MAILER-DAEMON'}@"
            f"{self.control.value('bouncehost') or me}",
        )
        qid = await self.queue.put(from_, to, report, meta={"client": "bounce", "of": message.qid})
        log.info("%s: bounce %s queued to <%s> for %d recipient%s", message.qid, qid, to[0],
                 len(failures), "" if len(failures) == 1 else "s")  # fmt: skip

    # -- requests from `quail queue` and `quail inject` ---------------------

    @staticmethod
    def _mtime(path: Path) -> float | None:
        try:
            return path.stat().st_mtime
        except OSError:
            return None

    async def _requests(self) -> None:
        mtime = self._mtime(self._flush_path)
        if mtime != self._flush_mtime:
            self._flush_mtime = mtime
            log.info("flush requested")
            self.flush()
        await self._deletes()
        if self.worker == 0:
            await self._pickup()

    async def _deletes(self) -> None:
        requests = self.queue.path / "delete"
        try:
            names = os.listdir(requests)
        except (FileNotFoundError, NotADirectoryError):
            return
        for name in names:
            message = self._messages.get(name)
            try:
                queued = self.queue.get(name)
            except KeyError:
                queued = None
            if queued is not None:
                await asyncio.gather(
                    *(self.queue.mark_done(name, i, Done.BOUNCED) for i in queued.pending)
                )
                log.info("%s: deleted by request", name)
            if message is not None:
                message.rcpts.clear()
                message.failed.clear()
                if message.busy == 0:
                    self._messages.pop(name, None)
            (requests / name).unlink(missing_ok=True)

    async def _pickup(self) -> None:
        """Move what `quail inject` queued into our shard."""
        path = self.queue.path / INJECT
        try:
            segments, _ = list_files(path)
        except FileNotFoundError:
            return
        if not segments:
            return
        try:
            inject = await asyncio.to_thread(Queue.open, path)
        except QueueError:
            return  # an inject is writing it now: next time
        try:
            for message in list(inject.messages()):
                data = await asyncio.to_thread(inject.read_sync, message.id)
                rcpts = [message.recipients[i] for i in message.pending]
                meta = dict(message.meta)
                meta.setdefault("injected", message.id)
                await self.queue.put(message.sender, rcpts, data, meta=meta)
                await asyncio.gather(
                    *(inject.mark_done(message.id, i, Done.DELIVERED) for i in message.pending)
                )
        finally:
            await inject.close()


_KIND = {Status.DELIVERED: "ok", Status.TEMPORARY: "temporary", Status.PERMANENT: "permanent"}
