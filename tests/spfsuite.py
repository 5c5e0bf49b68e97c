"""The openspf YAML suites (tests/data/spf) as zones for the loopback server.

Each YAML document is a scenario: `zonedata` (names to lists of records)
and `tests`.  `load_zone` reproduces what the suite's own driver (pyspf's
test/testspf.py) makes of the zonedata, over the wire:

- `SPF` entries are served as type SPF (99) and, unless the name has `TXT`
  entries of its own, also as TXT ("auto-magic duplication", see the
  comment at the top of rfc7208-tests.yml);
- `TXT: NONE` serves nothing but stops that duplication;
- a bare `TIMEOUT` item makes every question of a type with no record
  before it go unanswered; `TYPE: TIMEOUT` does so for that type;
- strings are taken byte for byte (`\\xEF` is the octet 0xEF), and an empty
  list of strings becomes one empty string, since DNS (and dnspython)
  cannot carry a TXT record with none.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from quailmail.dns.zone import Fault, Zone

DATA = Path(__file__).parent / "data" / "spf"
TYPES = ("A", "AAAA", "MX", "PTR", "TXT", "SPF", "CNAME")


@dataclass(frozen=True)
class Case:
    suite: str
    scenario: int  # index of the YAML document
    name: str
    helo: str
    host: str
    mailfrom: str
    results: tuple[str, ...]
    explanation: str | None
    spec: str


@cache
def scenarios(suite: str) -> list[dict[str, Any]]:
    with (DATA / f"{suite}-tests.yml").open("rb") as stream:
        return list(yaml.safe_load_all(stream))


def cases(suite: str) -> Iterator[Case]:
    for index, scenario in enumerate(scenarios(suite)):
        for name, case in scenario["tests"].items():
            results = case["result"]
            yield Case(
                suite=suite,
                scenario=index,
                name=name,
                helo=str(case["helo"]),
                host=str(case["host"]),
                mailfrom=str(case["mailfrom"]),
                results=tuple(results) if isinstance(results, list) else (results,),
                explanation=case.get("explanation"),
                spec=str(case.get("spec", "")),
            )


def octets(value: Any) -> bytes:
    text = str(value)
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def strings(value: Any) -> list[bytes]:
    if isinstance(value, list):
        return [octets(v) for v in value] or [b""]
    return [octets(value)]


def load_zone(zone: Zone, zonedata: dict[str, list[Any]]) -> None:
    for owner, entries in zonedata.items():
        name = str(owner)
        has_txt = any(isinstance(e, dict) and "TXT" in e for e in entries)
        seen: set[str] = set()
        for entry in entries:
            if entry == "TIMEOUT":
                for kind in TYPES:
                    if kind not in seen:
                        zone.set_fault(name, Fault.TIMEOUT, kind)
                break  # the suite's driver stops reading the name here
            for kind, value in entry.items():
                if value == "NONE":
                    continue  # not a record: it did not come "before" a TIMEOUT
                seen.add(kind)
                if value == "TIMEOUT":
                    zone.set_fault(name, Fault.TIMEOUT, kind)
                elif kind == "A":
                    zone.add_a(name, str(value))
                elif kind == "AAAA":
                    zone.add_aaaa(name, str(value))
                elif kind == "MX":
                    preference, exchange = value
                    zone.add_mx(name, int(preference), str(exchange))
                elif kind == "PTR":
                    zone.add_ptr(name, str(value))
                elif kind == "CNAME":
                    zone.add_cname(name, str(value))
                elif kind == "TXT":
                    zone.add_txt(name, strings(value))
                elif kind == "SPF":
                    zone.add_spf(name, strings(value))
                    if not has_txt:
                        zone.add_txt(name, strings(value))
                else:
                    raise ValueError(f"unknown record type {kind} at {name}")
