"""A client of SpamAssassin's spamd: the SPAMC/SPAMD protocol, as spamc speaks it.

The protocol (spamd's own `spamd/PROTOCOL`, version 1.5) is HTTP-shaped:

    SYMBOLS SPAMC/1.5\\r\\n            TELL SPAMC/1.5\\r\\n
    Content-length: 1234\\r\\n         Message-class: spam\\r\\n
    [User: name\\r\\n]                 Set: local\\r\\n
    \\r\\n                              Content-length: 1234\\r\\n
    <the message>                      \\r\\n<the message>

and spamd answers one request per connection, then closes:

    SPAMD/1.1 0 EX_OK\\r\\n             SPAMD/1.1 0 EX_OK\\r\\n
    Content-length: 41\\r\\n            DidSet: local\\r\\n
    Spam: True ; 1005.2 / 5.0\\r\\n     \\r\\n
    \\r\\n
    GTUBE,MISSING_DATE,NO_RELAYS

A status other than 0 is a sysexits code (76 EX_PROTOCOL, 69
EX_UNAVAILABLE for a TELL that `--allow-tell` did not enable, …).

Why our own and not `aiospamc` (which works with Debian's spamd 4.0.1, we
tried): it brings typer, click, rich and loguru (ten packages) for a
protocol of a hundred lines, logs through loguru beside our `logging`, and
hides its socket, so TCP_NODELAY could not be checked.

Pure parts (`build_request`, `parse_response`, `parse_spam_header`,
`parse_endpoint`) are separate from the one coroutine that talks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass, field

PROTOCOL = "SPAMC/1.5"
DEFAULT_PORT = 783  # spamd's, spamc's -p
# spamc -s: "messages larger than this are not scanned" (500 KB in spamc 4.0).
DEFAULT_MAX_SIZE = 500 * 1024
DEFAULT_TIMEOUT = 30.0
# What we read back at most: SYMBOLS and TELL answers are a few hundred bytes.
MAX_RESPONSE = 1 << 20

EX_OK = 0


class SpamdError(Exception):
    """spamd could not be reached, did not answer in time, or refused."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where spamd listens: a TCP host and port, or a unix socket path."""

    host: str | None = None
    port: int = DEFAULT_PORT
    path: str | None = None

    def __str__(self) -> str:
        if self.path is not None:
            return self.path
        host = self.host or "127.0.0.1"
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


def parse_endpoint(text: str) -> Endpoint:
    """`control/spamd`: `/path/to/socket` (absolute: a unix socket, as
    spamd's `--socketpath`), `host:port`, `[ipv6]:port`, or a bare host or
    IPv6 address (port 783).  ValueError for anything else."""
    spec = text.strip()
    if not spec:
        raise ValueError("empty spamd address")
    if spec.startswith("/"):
        return Endpoint(path=spec)
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?", spec)
    if m:
        return Endpoint(m.group(1), _port(m.group(2)))
    if spec.count(":") > 1:  # a bare IPv6 address
        try:
            return Endpoint(str(ipaddress.IPv6Address(spec)))
        except ValueError:
            raise ValueError(f"not a spamd address: {spec!r}") from None
    host, colon, port = spec.partition(":")
    if not host or not re.fullmatch(r"[A-Za-z0-9._-]+", host):
        raise ValueError(f"not a spamd address: {spec!r}")
    return Endpoint(host, _port(port if colon else None))


def _port(text: str | None) -> int:
    if text is None:
        return DEFAULT_PORT
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"not a port: {text!r}")
    return int(text)


@dataclass(frozen=True, slots=True)
class SpamdResponse:
    code: int  # sysexits: 0 EX_OK
    message: str  # "EX_OK", "PONG", or spamd's complaint
    headers: dict[str, str] = field(default_factory=dict)  # names as spamd writes them
    body: bytes = b""

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)


@dataclass(frozen=True, slots=True)
class SpamVerdict:
    """spamd's answer to CHECK or SYMBOLS: `Spam: True ; 15.0 / 5.0`."""

    spam: bool
    score: str  # as spamd wrote it ("1005.2", "-0.1"): shown, never re-rounded
    required: str
    tests: tuple[str, ...] = ()

    @property
    def score_value(self) -> float:
        return float(self.score)


def build_request(
    command: str, message: bytes, *, user: str | None = None, headers: dict[str, str] | None = None
) -> bytes:
    """One request, the message after the empty line."""
    lines = [f"{command} {PROTOCOL}", f"Content-length: {len(message)}"]
    if user:
        # spamd refuses control characters in User: (got_user_header).
        lines.append("User: " + re.sub(r"[\x00-\x1f\x7f]", "", user))
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + message


_STATUS = re.compile(rb"SPAMD/(\d+\.\d+) +(\d+) *(.*)")


def parse_response(data: bytes) -> SpamdResponse:
    """A whole response as read up to EOF.  ValueError if it is not one."""
    head, sep, rest = data.partition(b"\r\n")
    m = _STATUS.fullmatch(head.strip())
    if m is None:
        raise ValueError(f"not a spamd response: {head[:60]!r}")
    code, message = int(m.group(2)), m.group(3).decode("utf-8", "replace").strip()
    headers: dict[str, str] = {}
    if not sep:
        return SpamdResponse(code, message)
    if rest.startswith(b"\r\n"):  # no headers
        block, body = b"", rest[2:]
    else:
        block, _, body = rest.partition(b"\r\n\r\n")
    for line in block.split(b"\r\n"):
        name, colon, value = line.decode("utf-8", "replace").partition(":")
        if colon and name.strip():
            headers[name.strip()] = value.strip()
    length = next((v for k, v in headers.items() if k.lower() == "content-length"), None)
    if length is not None:
        if not length.isdigit() or int(length) > len(body):
            raise ValueError(f"spamd response shorter than its Content-length ({length})")
        body = body[: int(length)]
    return SpamdResponse(code, message, headers, body)


_SPAM = re.compile(r"(True|False|Yes|No)\s*;\s*(-?[0-9.]+)\s*/\s*(-?[0-9.]+)", re.IGNORECASE)


def parse_spam_header(value: str) -> tuple[bool, str, str]:
    """`True ; 1005.2 / 5.0` → (True, "1005.2", "5.0")."""
    m = _SPAM.fullmatch(value.strip())
    if m is None:
        raise ValueError(f"not a Spam: header: {value[:60]!r}")
    try:
        float(m.group(2)), float(m.group(3))
    except ValueError:
        raise ValueError(f"not a Spam: header: {value[:60]!r}") from None
    return m.group(1).lower() in ("true", "yes"), m.group(2), m.group(3)


@dataclass
class SpamdClient:
    """Talks to one spamd; a new connection per request, as spamc does."""

    endpoint: Endpoint
    timeout: float = DEFAULT_TIMEOUT
    user: str | None = None

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection with TCP_NODELAY on TCP: a message goes out in several
        segments, and with Nagle's algorithm a small last one waits for the
        peer's delayed ACK (40 ms on Linux loopback; a milter measured without
        it managed 11 messages a second)."""
        if self.endpoint.path is not None:
            return await asyncio.open_unix_connection(self.endpoint.path)
        reader, writer = await asyncio.open_connection(
            self.endpoint.host or "127.0.0.1", self.endpoint.port
        )
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # asyncio and uvloop set it already; said here so it stays true.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return reader, writer

    async def request(
        self, command: str, message: bytes, headers: dict[str, str] | None = None
    ) -> SpamdResponse:
        """Send one request; the response, or SpamdError (unreachable, timed
        out, not a spamd, or a status other than EX_OK)."""
        payload = build_request(command, message, user=self.user, headers=headers)
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await self.connect()
                try:
                    writer.write(payload)
                    if writer.can_write_eof():
                        writer.write_eof()  # as spamc's shutdown(SHUT_WR)
                    await writer.drain()
                    data = b""
                    while chunk := await reader.read(65536):
                        data += chunk
                        if len(data) > MAX_RESPONSE:
                            raise SpamdError(
                                f"spamd {self.endpoint}: response over {MAX_RESPONSE} bytes"
                            )
                finally:
                    writer.close()
        except TimeoutError:
            raise SpamdError(f"spamd {self.endpoint}: no answer in {self.timeout:g} s") from None
        except OSError as exc:
            raise SpamdError(f"spamd {self.endpoint}: {exc.strerror or exc}") from None
        if not data:
            raise SpamdError(f"spamd {self.endpoint}: closed the connection without answering")
        try:
            response = parse_response(data)
        except ValueError as exc:
            raise SpamdError(f"spamd {self.endpoint}: {exc}") from None
        if response.code != EX_OK:
            raise SpamdError(f"spamd {self.endpoint}: {response.code} {response.message}")
        return response

    async def ping(self) -> str:
        response = await self.request("PING", b"")
        return response.message

    async def symbols(self, message: bytes) -> SpamVerdict:
        """SYMBOLS: the verdict with the names of the rules that hit."""
        response = await self.request("SYMBOLS", message)
        verdict = self._verdict(response)
        text = response.body.decode("ascii", "replace").strip()
        tests = tuple(t.strip() for t in text.split(",") if t.strip())
        return SpamVerdict(verdict.spam, verdict.score, verdict.required, tests)

    async def check(self, message: bytes) -> SpamVerdict:
        return self._verdict(await self.request("CHECK", message))

    async def tell(self, message: bytes, message_class: str = "spam") -> frozenset[str]:
        """TELL Message-class: spam|ham, Set: local (spamd's Bayes, as
        `spamc -L spam`); what spamd says it did (`DidSet: local`), empty when
        it had learnt this message already.  spamd needs `--allow-tell`."""
        response = await self.request(
            "TELL", message, {"Message-class": message_class, "Set": "local"}
        )
        did = response.header("DidSet") or ""
        return frozenset(part.strip() for part in did.split(",") if part.strip())

    def _verdict(self, response: SpamdResponse) -> SpamVerdict:
        value = response.header("Spam")
        if value is None:
            raise SpamdError(f"spamd {self.endpoint}: answer without a Spam: header")
        try:
            spam, score, required = parse_spam_header(value)
        except ValueError as exc:
            raise SpamdError(f"spamd {self.endpoint}: {exc}") from None
        return SpamVerdict(spam, score, required)
