"""Socket options every TCP connection we open sets.

TCP_NODELAY: SMTP and filter protocols write a command and wait for its
answer.  With Nagle's algorithm a small write that follows another not yet
acknowledged waits for the peer's delayed ACK, up to 40 ms on Linux: a
loopback milter without it was measured here at 40 ms a message (11
messages a second).  asyncio and uvloop set it on TCP transports since
Python 3.7; we set it again so that no event loop or socket path of ours
depends on that.
"""

from __future__ import annotations

import asyncio
import socket


def set_nodelay(writer: asyncio.StreamWriter | asyncio.BaseTransport) -> bool:
    """Set TCP_NODELAY on the socket under `writer`; False when there is none
    (a unix socket, a pipe) or the system refuses."""
    sock = writer.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        return False
    return True
