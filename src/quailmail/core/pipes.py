"""Writing to a program's pipe that the program may have stopped reading.

A program may exit, or close its input, before it has read what we write
(`|exit 100`, a filter refusing at once, a helper that died): that is an
answer, not our error, and its exit code says the rest.  asyncio reports
it as BrokenPipeError or ConnectionResetError; uvloop, once the process
is gone and the pipe's transport closed with it, as a RuntimeError.
"""

from __future__ import annotations

import asyncio


async def write_to_pipe(writer: asyncio.StreamWriter, data: bytes) -> bool:
    """Write `data` and wait until it is taken; False when the reader is
    gone first (any other error propagates)."""
    try:
        writer.write(data)
        await writer.drain()
    except ConnectionError:  # BrokenPipeError, ConnectionResetError
        return False
    except RuntimeError:
        if not writer.transport.is_closing():
            raise
        return False
    return True
