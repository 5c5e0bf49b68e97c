"""Pure parses kept by their input text, but never a long one.

A sender's header fields and a domain's DNS records repeat from message to
message, so parsing them once per text pays; the texts come from clients
and from other people's zones, so only texts up to a bound are kept: huge
ones are parsed each time and cannot fill memory through a full cache.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class KeptByText(Generic[T]):
    """`parse(text)`, kept (least recently used first out) when `text` has
    at most `limit` characters."""

    def __init__(self, parse: Callable[[str], T], limit: int, maxsize: int) -> None:
        self._parse = parse
        self._limit = limit
        self._kept = functools.lru_cache(maxsize=maxsize)(parse)
        functools.update_wrapper(self, parse)

    def __call__(self, text: str) -> T:
        if len(text) > self._limit:
            return self._parse(text)
        return self._kept(text)

    def cache_info(self) -> Any:
        return self._kept.cache_info()


def kept_by_text(limit: int, maxsize: int = 4096) -> Callable[[Callable[[str], T]], KeptByText[T]]:
    """Decorate a pure `str -> T` parse: see KeptByText."""

    def wrap(parse: Callable[[str], T]) -> KeptByText[T]:
        return KeptByText(parse, limit, maxsize)

    return wrap
