"""What every connection of a running server shares: the root's settings,
the queue, the TLS context, the connection counts."""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quailmail.config.control import Control, scan_ulong
from quailmail.core.dns import Resolver
from quailmail.net.addresses import Network
from quailmail.queue import Queue

# qmail-smtpd's defaults: control/databytes 0 (no limit; we set one in
# `quail init`), control/timeoutsmtpd 1200 s.
DEFAULT_TIMEOUT = 1200
DEFAULT_CONCURRENCY = 2000  # tcpserver -c: well above 1,000 idle clients


@dataclass
class ServerState:
    root: Path
    control: Control
    queue: Queue
    tls: ssl.SSLContext | None
    proxy_from: list[Network]
    hostname: str
    resolver: Resolver
    max_connections: int = DEFAULT_CONCURRENCY
    max_per_ip: int = 0  # 0: no per-address limit
    connections: int = 0
    per_ip: dict[str, int] = field(default_factory=dict)
    in_transaction: int = 0  # connections between MAIL and the end of DATA
    stopping: bool = False
    connections_set: set[Any] = field(default_factory=set)  # live SmtpConnection objects
    # `quail serve`'s own environment, the run script's variables: every
    # connection starts from it, as tcpserver hands its environment to
    # qmail-smtpd, and a matching rule's variables override it.
    base_env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def databytes(self, env: Mapping[str, str]) -> int:
        """Largest message, 0 for no limit: `DATABYTES` from the rules wins
        over control/databytes, as in qmail-smtpd (its leading digits,
        scan_ulong's way: none is 0)."""
        given = env.get("DATABYTES")
        if given is None:
            return self.control.int_value("databytes", 0)
        return scan_ulong(given.strip()) or 0  # no digits: 0, no limit

    def timeout(self) -> int:
        return self.control.int_value("timeoutsmtpd", DEFAULT_TIMEOUT, minimum=1)

    def greeting(self) -> str | None:
        """``control/smtpgreeting`` (qmail-smtpd's ``smtp_greet``: the text of
        the 220, of HELO's and EHLO's 250 and of the 221), or None when absent."""
        return self.control.value("smtpgreeting") or None
