"""Remote delivery (qmail-remote): smtproutes and MX, AAAA before A,
opportunistic STARTTLS, pipelined SMTP, one outcome per recipient."""

from quailmail.deliver.remote.deliver import (
    RemoteSession,
    RemoteSettings,
    connect,
    deliver_remote,
    settings_for,
)
from quailmail.deliver.remote.outcome import DeliveryError, RecipientOutcome, Status
from quailmail.deliver.remote.routes import (
    Destination,
    Route,
    Routes,
    destinations,
    parse_smtproutes,
)

__all__ = [
    "DeliveryError",
    "Destination",
    "RecipientOutcome",
    "RemoteSession",
    "RemoteSettings",
    "Route",
    "Routes",
    "Status",
    "connect",
    "deliver_remote",
    "destinations",
    "parse_smtproutes",
    "settings_for",
]
