"""Remote delivery: find the destinations, connect to the first that answers,
send.  qmail-remote's job, as a library the scheduler calls.

`connect()` returns a session that can carry several messages to the same
destination (one connection, RSET between them); `deliver_remote()` is the
one-message shortcut.  Only a failure to reach a server moves on to the next
address (RFC 5321 §5.1: AAAA before A for each host, then the next MX); once
a server has taken the conversation, its replies decide.
"""

from __future__ import annotations

import ipaddress
import random
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from quailmail.config.control import Control
from quailmail.core.dns import Resolver
from quailmail.deliver.remote.client import (
    SmtpClient,
    SmtpError,
    opportunistic_tls_context,
)
from quailmail.deliver.remote.outcome import DeliveryError, RecipientOutcome, Status
from quailmail.deliver.remote.routes import (
    SMTP_PORT,
    Destination,
    Routes,
    destinations,
    parse_smtproutes,
)

TIMEOUT_CONNECT = 60.0  # qmail-remote's defaults (control/timeoutconnect, timeoutremote)
TIMEOUT_REMOTE = 1200.0


@dataclass(frozen=True, slots=True)
class RemoteSettings:
    """Everything delivery reads from the control directory."""

    helo: str
    routes: Routes = field(default_factory=Routes)
    timeout_connect: float = TIMEOUT_CONNECT
    timeout_remote: float = TIMEOUT_REMOTE
    outgoing_ip: str | None = None
    outgoing_ip6: str | None = None
    port: int = SMTP_PORT
    tls: ssl.SSLContext | None = field(default_factory=opportunistic_tls_context)

    @classmethod
    def from_control(cls, control: Control) -> RemoteSettings:
        """`helohost` (else `me`), `smtproutes`, `timeoutconnect`,
        `timeoutremote`, `outgoingip`, `outgoingip6`."""
        me = control.value("me") or "localhost"
        helo = control.value("helohost") or me
        routes = control.parsed("smtproutes", parse_smtproutes, Routes())
        return cls(
            helo=helo,
            routes=routes,
            timeout_connect=_seconds(control, "timeoutconnect", TIMEOUT_CONNECT),
            timeout_remote=_seconds(control, "timeoutremote", TIMEOUT_REMOTE),
            outgoing_ip=_source(control.value("outgoingip"), 4),
            outgoing_ip6=_source(control.value("outgoingip6"), 6),
        )

    def source_for(self, address: str) -> str | None:
        version = ipaddress.ip_address(address).version
        return self.outgoing_ip6 if version == 6 else self.outgoing_ip


def _seconds(control: Control, name: str, default: float) -> float:
    value = control.int_value(name, 0)
    return float(value) if value > 0 else default


def _source(value: str | None, version: int) -> str | None:
    """An `outgoingip` value that is an address of the right family, else None
    (qmail-remote's `0.0.0.0` means "let the system choose")."""
    if not value:
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if address.version != version or address.is_unspecified:
        return None
    return str(address)


@dataclass(slots=True)
class Attempt:
    """One address tried and why it did not take the conversation."""

    destination: Destination
    reason: str


async def open_session(
    targets: Sequence[Destination], settings: RemoteSettings
) -> tuple[SmtpClient | None, list[Attempt]]:
    """The first destination that greets and accepts our EHLO, with TLS when
    offered.  A server refusing at greeting or EHLO counts as unreachable:
    RFC 5321 §3.8 (554 greeting) lets us try the next."""
    attempts: list[Attempt] = []
    for target in targets:
        try:
            client = await SmtpClient.connect(
                target,
                timeout_connect=settings.timeout_connect,
                timeout_remote=settings.timeout_remote,
                source=settings.source_for(target.address),
            )
        except TimeoutError:
            attempts.append(Attempt(target, "connection timed out"))
            continue
        except OSError as exc:
            attempts.append(Attempt(target, exc.strerror or str(exc)))
            continue
        try:
            refused = await client.start(settings.helo, settings.tls)
        except SmtpError as exc:
            attempts.append(Attempt(target, str(exc)))
            await client.quit()
            continue
        if refused is not None:
            attempts.append(Attempt(target, refused.text))
            await client.quit()
            continue
        return client, attempts
    return None, attempts


def _unreachable(domain: str, attempts: Sequence[Attempt]) -> DeliveryError:
    tried = "; ".join(
        f"{a.destination.host} [{a.destination.address}]:{a.destination.port}: {a.reason}"
        for a in attempts
    )
    return DeliveryError(f"no server for {domain} took the connection ({tried})")


class RemoteSession:
    """A connection to one of a domain's servers, reusable for several
    messages.  `send()` never raises: a broken connection makes the
    message's recipients temporary and the session `closed`."""

    def __init__(self, client: SmtpClient, attempts: list[Attempt]) -> None:
        self.client = client
        self.attempts = attempts  # the addresses that failed before this one

    @property
    def destination(self) -> Destination:
        return self.client.destination

    @property
    def tls_version(self) -> str | None:
        return self.client.info.tls_version

    @property
    def tls_cipher(self) -> str | None:
        return self.client.info.tls_cipher

    @property
    def usable(self) -> bool:
        return not self.client.broken

    async def send(
        self, sender: str, recipients: Sequence[str], data: bytes
    ) -> list[RecipientOutcome]:
        host = self.destination.host
        if not self.usable:
            return DeliveryError("connection already broken").outcomes(recipients, host)
        try:
            return await self.client.send(sender, recipients, data)
        except SmtpError as exc:
            # The server may have the message; a duplicate beats a loss.
            return [RecipientOutcome(r, Status.TEMPORARY, str(exc), host) for r in recipients]

    async def close(self) -> None:
        await self.client.quit()

    async def __aenter__(self) -> RemoteSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def connect(
    domain: str,
    *,
    resolver: Resolver,
    settings: RemoteSettings,
    rng: random.Random | None = None,
) -> RemoteSession:
    """A session with the first reachable server for `domain`.  Raises
    `DeliveryError` (permanent: null MX, no such domain, no address;
    temporary: DNS failures, nothing reachable)."""
    targets = await destinations(domain, resolver, settings.routes, rng, port=settings.port)
    client, attempts = await open_session(targets, settings)
    if client is None:
        raise _unreachable(domain, attempts)
    return RemoteSession(client, attempts)


async def deliver_remote(
    domain: str,
    sender: str,
    recipients: Sequence[str],
    data: bytes,
    *,
    resolver: Resolver,
    settings: RemoteSettings,
    rng: random.Random | None = None,
) -> list[RecipientOutcome]:
    """Deliver one message to recipients of one domain; an outcome per
    recipient, in order."""
    try:
        session = await connect(domain, resolver=resolver, settings=settings, rng=rng)
    except DeliveryError as exc:
        return exc.outcomes(recipients)
    async with session:
        return await session.send(sender, recipients, data)


def settings_for(root: Path | str) -> RemoteSettings:
    """The settings of a root's control directory."""
    return RemoteSettings.from_control(Control(root))


__all__ = [
    "RemoteSession",
    "RemoteSettings",
    "connect",
    "deliver_remote",
    "settings_for",
]
