"""An SMTP client session on asyncio streams (qmail-remote's conversation).

Our own small client rather than aiosmtplib: we need PIPELINING of MAIL,
every RCPT and DATA in one write (RFC 2920 §3.1), per-recipient replies,
dot-stuffing in blocks of the message we already hold, and opportunistic
STARTTLS that records what was negotiated.  That is about as much code as
driving aiosmtplib around its own pipelining-free `sendmail`.

One `SmtpClient` is one connection: `start()` reads the greeting, says EHLO
(HELO if refused), and upgrades with STARTTLS when offered; `send()` delivers
one message and may be called again for the next (RSET between them);
`quit()` ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from quailmail.auth.message import to_crlf
from quailmail.deliver.remote.outcome import RecipientOutcome, Status
from quailmail.deliver.remote.routes import Destination
from quailmail.net.tcp import set_nodelay

# RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets; be lenient, but
# bound what one line may cost us.
MAX_REPLY_LINE = 4096
MAX_REPLY_LINES = 100
DOT_BLOCK = 64 * 1024


class SmtpError(Exception):
    """The conversation broke: timeout, closed connection, garbage reply."""


@dataclass(frozen=True, slots=True)
class SmtpReply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return f"{self.code} " + " / ".join(self.lines)

    @property
    def status(self) -> Status:
        return Status.from_code(self.code)


@dataclass(slots=True)
class ServerInfo:
    """What EHLO told us, and what STARTTLS negotiated."""

    esmtp: bool = False
    extensions: dict[str, str] = field(default_factory=dict)  # keyword → parameters
    tls_version: str | None = None
    tls_cipher: str | None = None

    def offers(self, keyword: str) -> bool:
        return keyword in self.extensions

    @property
    def size_limit(self) -> int:
        """RFC 1870 §4: SIZE's parameter, 0 when none is announced."""
        value = self.extensions.get("SIZE", "")
        return int(value) if value.isdigit() else 0


@functools.cache
def opportunistic_tls_context() -> ssl.SSLContext:
    """RFC 7435 opportunistic security: encrypt, but accept any certificate,
    as qmail's TLS patch and Postfix's `smtp_tls_security_level = may` do.
    A certificate failure would otherwise send the mail in plain text.
    One context per process: building one loads the CA store (~20 ms)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def needs_smtputf8(sender: str, recipients: Sequence[str]) -> bool:
    """RFC 6531 §3.4: an envelope address beyond ASCII needs SMTPUTF8."""
    return not sender.isascii() or any(not r.isascii() for r in recipients)


def dot_stuffed(data: bytes, block: int = DOT_BLOCK) -> Iterator[bytes]:
    """The DATA payload of CRLF-ended `data`, terminator included, in blocks.

    RFC 5321 §4.5.2: a line starting with "." gets one more.  Each block ends
    just after a LF, so a CRLF "." never straddles two blocks except as a
    block beginning with "." right after the previous one's CRLF.
    """
    start, n = 0, len(data)
    while start < n:
        end = data.find(b"\n", min(start + block, n) - 1)
        end = n if end < 0 else end + 1
        chunk = data[start:end]
        if chunk.startswith(b".") and (start == 0 or data[start - 2 : start] == b"\r\n"):
            chunk = b"." + chunk
        yield chunk.replace(b"\r\n.", b"\r\n..")
        start = end
    yield b".\r\n" if n == 0 or data.endswith(b"\r\n") else b"\r\n.\r\n"


def _address(address: str) -> str:
    return f"<{address}>"


class SmtpClient:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        destination: Destination,
        *,
        timeout: float,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.destination = destination
        self.timeout = timeout
        self.info = ServerInfo()
        self.messages = 0  # messages sent on this connection (RSET before the next)
        self.broken = False

    @classmethod
    async def connect(
        cls,
        destination: Destination,
        *,
        timeout_connect: float,
        timeout_remote: float,
        source: str | None = None,
    ) -> SmtpClient:
        """Open the TCP connection (OSError or TimeoutError on failure)."""
        local = (source, 0) if source else None
        async with asyncio.timeout(timeout_connect):
            reader, writer = await asyncio.open_connection(
                destination.address, destination.port, local_addr=local, limit=MAX_REPLY_LINE
            )
        set_nodelay(writer)  # a command waits for its reply: no Nagle delay (net/tcp.py)
        sockname, peername = writer.get_extra_info("sockname"), writer.get_extra_info("peername")
        if sockname is not None and sockname[:2] == (peername or ())[:2]:
            # TCP simultaneous open: a port nobody listens on, in the
            # ephemeral range, can connect to itself; it would wait for a
            # greeting until timeoutremote.
            writer.close()
            raise ConnectionRefusedError(111, "connected to itself (nobody listens there)")
        return cls(reader, writer, destination, timeout=timeout_remote)

    @property
    def host(self) -> str:
        return self.destination.host

    async def read_reply(self) -> SmtpReply:
        lines: list[str] = []
        code = 0
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    raw = await self.reader.readline()
                    if not raw.endswith(b"\n"):
                        raise SmtpError("connection closed by the server")
                    line = raw.rstrip(b"\r\n").decode("utf-8", errors="replace")
                    if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in ("", " ", "-"):
                        raise SmtpError(f"malformed reply line {line[:80]!r}")
                    this = int(line[:3])
                    if lines and this != code:
                        raise SmtpError("reply code changed within a multi-line reply")
                    code = this
                    lines.append(line[4:])
                    if line[3:4] != "-":
                        break
                    if len(lines) > MAX_REPLY_LINES:
                        raise SmtpError("reply too long")
        except TimeoutError as exc:
            self.broken = True
            raise SmtpError(f"timeout waiting for {self.host}") from exc
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            # ValueError: asyncio's LimitOverrunError for an over-long line.
            self.broken = True
            raise SmtpError(f"reading from {self.host}: {exc}") from exc
        except SmtpError:
            self.broken = True
            raise
        if not 200 <= code <= 599:
            self.broken = True
            raise SmtpError(f"reply code out of range: {code}")
        return SmtpReply(code, tuple(lines))

    async def write(self, *chunks: bytes) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                for chunk in chunks:
                    self.writer.write(chunk)
                    await self.writer.drain()
        except (OSError, TimeoutError) as exc:
            self.broken = True
            raise SmtpError(f"writing to {self.host}: {exc or 'timeout'}") from exc

    async def command(self, line: str) -> SmtpReply:
        await self.write(line.encode("utf-8") + b"\r\n")
        return await self.read_reply()

    async def start(self, helo: str, tls: ssl.SSLContext | None) -> SmtpReply | None:
        """Greeting, EHLO/HELO, STARTTLS when offered.  Returns None when the
        session is ready, or the refusing reply (the next host should be tried)."""
        greeting = await self.read_reply()
        if greeting.code != 220:
            return greeting
        refused = await self._hello(helo)
        if refused is not None:
            return refused
        if tls is not None and self.info.offers("STARTTLS"):
            reply = await self.command("STARTTLS")
            if reply.code != 220:
                return reply
            try:
                async with asyncio.timeout(self.timeout):
                    await self.writer.start_tls(tls, server_hostname=self._sni())
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                self.broken = True
                raise SmtpError(f"TLS with {self.host} failed: {exc}") from exc
            ssl_object = self.writer.get_extra_info("ssl_object")
            if isinstance(ssl_object, ssl.SSLObject):
                cipher = ssl_object.cipher()
                self.info.tls_version = ssl_object.version()
                self.info.tls_cipher = cipher[0] if cipher else None
            tls_version, tls_cipher = self.info.tls_version, self.info.tls_cipher
            # RFC 3207 §4.2: forget what was learnt before TLS, ask again.
            refused = await self._hello(helo)
            self.info.tls_version, self.info.tls_cipher = tls_version, tls_cipher
            if refused is not None:
                return refused
        return None

    def _sni(self) -> str | None:
        host = self.destination.host
        return None if host == self.destination.address else host

    async def _hello(self, helo: str) -> SmtpReply | None:
        reply = await self.command(f"EHLO {helo}")
        if reply.code == 250:
            extensions: dict[str, str] = {}
            for line in reply.lines[1:]:
                keyword, _, params = line.strip().partition(" ")
                extensions[keyword.upper()] = params
            self.info = ServerInfo(esmtp=True, extensions=extensions)
            return None
        if reply.code in (421,):
            return reply
        reply = await self.command(f"HELO {helo}")
        self.info = ServerInfo()
        return None if reply.code == 250 else reply

    async def send(
        self, sender: str, recipients: Sequence[str], data: bytes
    ) -> list[RecipientOutcome]:
        """One transaction: an outcome for every recipient, in order.  Raises
        SmtpError when the connection breaks (outcomes unknown: temporary)."""
        host = self.host
        if self.messages:
            reply = await self.command("RSET")
            if reply.code != 250:
                self.broken = True
                raise SmtpError(f"RSET refused: {reply.text}")
        self.messages += 1

        def everyone(status: Status, text: str) -> list[RecipientOutcome]:
            return [RecipientOutcome(r, status, text, host) for r in recipients]

        utf8 = needs_smtputf8(sender, recipients)
        if utf8 and not self.info.offers("SMTPUTF8"):
            # RFC 6531 §3.2: without SMTPUTF8 the message cannot be sent as is.
            return everyone(Status.PERMANENT, f"5.6.7 {host} does not support SMTPUTF8 (RFC 6531)")
        data = to_crlf(data)
        limit = self.info.size_limit
        if limit and len(data) > limit:
            text = f"5.3.4 message of {len(data)} bytes exceeds {host}'s SIZE {limit}"
            return everyone(Status.PERMANENT, text)
        mail = f"MAIL FROM:{_address(sender)}"
        if self.info.offers("SIZE"):
            mail += f" SIZE={len(data)}"
        if not data.isascii() and self.info.offers("8BITMIME"):
            # RFC 6152.  Without 8BITMIME we send the bytes as they are, as
            # qmail-remote does; converting to 7 bit would break signatures.
            mail += " BODY=8BITMIME"
        if utf8:
            mail += " SMTPUTF8"
        rcpts = [f"RCPT TO:{_address(r)}" for r in recipients]

        if self.info.offers("PIPELINING"):
            # RFC 2920 §3.1: MAIL, every RCPT and DATA in one group.
            lines = [mail, *rcpts, "DATA"]
            await self.write("".join(f"{line}\r\n" for line in lines).encode("utf-8"))
            mail_reply = await self.read_reply()
            rcpt_replies = [await self.read_reply() for _ in rcpts]
            data_reply = await self.read_reply()
        else:
            mail_reply = await self.command(mail)
            if mail_reply.code != 250:
                return everyone(mail_reply.status, mail_reply.text)
            rcpt_replies = [await self.command(line) for line in rcpts]
            if not any(r.code // 100 == 2 for r in rcpt_replies):
                return self._rcpt_outcomes(recipients, rcpt_replies, None)
            data_reply = await self.command("DATA")

        accepted = any(r.code // 100 == 2 for r in rcpt_replies)
        if data_reply.code == 354 and not (mail_reply.code == 250 and accepted):
            # RFC 2920 §3.1: the server went into DATA although nothing is to
            # be delivered; end the empty message, and ignore its reply.
            await self.write(b".\r\n")
            await self.read_reply()
        if mail_reply.code != 250:
            return everyone(mail_reply.status, mail_reply.text)
        if not accepted:
            return self._rcpt_outcomes(recipients, rcpt_replies, None)
        if data_reply.code != 354:
            return self._rcpt_outcomes(recipients, rcpt_replies, data_reply)
        await self.write(*dot_stuffed(data))
        final = await self.read_reply()
        return self._rcpt_outcomes(recipients, rcpt_replies, final)

    def _rcpt_outcomes(
        self,
        recipients: Sequence[str],
        rcpt_replies: Sequence[SmtpReply],
        final: SmtpReply | None,
    ) -> list[RecipientOutcome]:
        """A refused RCPT keeps its own reply; the accepted ones share the
        reply to DATA (or to the message's end)."""
        out = []
        for recipient, reply in zip(recipients, rcpt_replies, strict=True):
            said = final if reply.code // 100 == 2 and final is not None else reply
            out.append(RecipientOutcome(recipient, said.status, said.text, self.host))
        return out

    async def quit(self) -> None:
        """QUIT politely when the connection still works, then close."""
        try:
            if not self.broken and not self.writer.is_closing():
                await asyncio.wait_for(self.command("QUIT"), timeout=min(self.timeout, 10))
        except (SmtpError, TimeoutError):
            pass
        finally:
            self.writer.close()
            with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
                await asyncio.wait_for(self.writer.wait_closed(), timeout=5)
