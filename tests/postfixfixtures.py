"""Postfix fixtures: private Postfix instances on loopback (tests/peers/postfix.py).

- `postfix_factory(**options)`: start one (options as `start_postfix`'s:
  `domain`, `users`, `relay`, `recipient_access`, `tls`, `ipv6`), stopped at
  teardown; its log and config are kept in `tmp_path/postfix-N`.  Skips the
  test, with the reason, when not root or Postfix is not installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from peers._base import skip_missing
from peers.postfix import Postfix, start_postfix


@pytest.fixture
def postfix_factory(tmp_path: Path) -> Iterator[Callable[..., Postfix]]:
    started: list[Postfix] = []

    def start(**options: Any) -> Postfix:
        with skip_missing():
            instance = start_postfix(tmp_path / f"postfix-{len(started)}", **options)
        started.append(instance)
        return instance

    yield start
    for instance in started:
        instance.stop()
