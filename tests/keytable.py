"""Key tables (the shared test-data format) and an in-memory resolver over one.

Format (shared/testdata/README.md): one record per line, `NAME  VALUE`;
`NXDOMAIN` = no such name, `~~text~~` = a DNS error, `""` = one empty TXT
string, `#`/`;` comments.  Unit tests of pure code use `TableResolver`;
end-to-end tests serve the same tables from the loopback DNS server.
"""

from __future__ import annotations

from pathlib import Path

from quailmail.core.dns import DnsResult, DnsStatus, MxRecord


def load_keytable(path: Path | str) -> dict[str, str]:
    table: dict[str, str] = {}
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        name, _, value = line.partition(" ")
        if not _:
            name, _, value = line.partition("\t")
        value = value.strip()
        if value == '""':
            value = ""
        table[name.strip().lower().rstrip(".")] = value
    return table


class TableResolver:
    """A fake resolver for unit tests of pure code (ARCHITECTURE.md, Testing)."""

    def __init__(self, table: dict[str, str] | None = None) -> None:
        self.table = dict(table or {})
        self.queries: list[str] = []

    async def txt(self, name: str) -> DnsResult[bytes]:
        self.queries.append(name)
        value = self.table.get(name.lower().rstrip("."))
        if value is None or value == "NXDOMAIN":
            return DnsResult(DnsStatus.NXDOMAIN, reason="no such name")
        if value.startswith("~~"):
            return DnsResult(DnsStatus.TEMPFAIL, reason=value.strip("~"))
        return DnsResult(DnsStatus.ANSWER, (value.encode("utf-8"),))

    async def a(self, name: str) -> DnsResult[str]:
        return DnsResult(DnsStatus.NXDOMAIN)

    async def aaaa(self, name: str) -> DnsResult[str]:
        return DnsResult(DnsStatus.NXDOMAIN)

    async def mx(self, name: str) -> DnsResult[MxRecord]:
        return DnsResult(DnsStatus.NXDOMAIN)

    async def ptr(self, address: str) -> DnsResult[str]:
        return DnsResult(DnsStatus.NXDOMAIN)
