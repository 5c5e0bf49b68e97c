"""The one place that talks to DNS servers.

`DnsResolver` (dnspython's asyncio resolver behind a TTL cache) implements
`quailmail.core.dns.Resolver`; `make_resolver` builds it the way the CLI does
(`--dns`, then `control/dnsservers`, then /etc/resolv.conf).  The test DNS
server lives in `quailmail.dns.zoneserver` and is imported only by tests,
benchmarks and its own command line.
"""

from quailmail.dns.resolver import (
    DEFAULT_TIMEOUT,
    DnsResolver,
    DnsServer,
    make_resolver,
    parse_server,
    servers_from_control,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "DnsResolver",
    "DnsServer",
    "make_resolver",
    "parse_server",
    "servers_from_control",
]
