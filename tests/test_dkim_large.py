"""A large message is hashed as a stream: never a second copy of it in memory."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Callable

import pytest

from quailmail.auth.dkim import sign_dkim, verify_dkim
from quailmail.auth.domainkeys import sign_domainkeys, verify_domainkeys
from quailmail.auth.message import parse_message

from dkimcases import MESSAGE, RSA_KEY, RSA_RECORD, resolver

SIZE = 16 * 1024 * 1024
BUFFERS = 8 * 1024 * 1024  # chunk buffers: well under half the message


def _peak(work: Callable[[], object]) -> tuple[object, int]:
    tracemalloc.start()
    try:
        result = work()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("linesep", [b"\r\n", b"\n"])
def test_sign_and_verify_16_mb_without_copying_it(linesep: bytes) -> None:
    line = b"All work and no play makes Jack a dull boy.  \t All work.\r\n"
    data = (MESSAGE + line * (SIZE // len(line))).replace(b"\r\n", linesep)
    res = resolver(test=RSA_RECORD, **{"_domainkey.football.example.com": "o=~"})

    def sign() -> bytes:
        message = parse_message(data)
        return sign_dkim(message, RSA_KEY, selector="test") + sign_domainkeys(
            message, RSA_KEY, selector="test", canon="nofws"
        )

    fields, peak_sign = _peak(sign)
    assert isinstance(fields, bytes)
    signed = parse_message(fields + data)

    async def verify() -> tuple[str, str]:
        dkim = await verify_dkim(signed, res)
        dk = await verify_domainkeys(signed, res)
        return dkim.code, dk.status.letter

    verdicts, peak_verify = _peak(lambda: asyncio.run(verify()))
    assert verdicts == ("A", "A")
    assert peak_sign < BUFFERS, peak_sign
    assert peak_verify < BUFFERS, peak_verify
