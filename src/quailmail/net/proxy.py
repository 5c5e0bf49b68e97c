"""The HAProxy PROXY protocol, versions 1 and 2, sans I/O.

A load balancer in front of quailmail prepends the client's real address to
the TCP stream.  Only connections from addresses listed in
`control/proxyfrom` may do so (anyone else could claim any address); for
them the header is required, and tests use it to present any client address,
IPv4 or IPv6, over loopback.

Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt (v1 §2.1:
one text line of at most 107 bytes; v2 §2.2: a 16-byte binary header and an
address block).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107


class ProxyError(ValueError):
    """The header is malformed; the connection is dropped (no SMTP reply:
    the peer is a load balancer, not a mail client)."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    source: str | None  # None: LOCAL / UNKNOWN (a health check): keep the socket's
    source_port: int | None
    destination: str | None
    destination_port: int | None
    consumed: int  # bytes of the stream taken by the header


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of `data`, or None if more bytes are needed."""
    if data[:12] == V2_SIGNATURE[: min(12, len(data))] and len(data) < 12:
        return None
    if data.startswith(V2_SIGNATURE):
        return _v2(data)
    if b"PROXY "[: len(data)] == data[:6] and len(data) < 6:
        return None
    if data.startswith(b"PROXY "):
        return _v1(data)
    raise ProxyError("no PROXY protocol header from a trusted proxy")


def _v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX + 1)
    if end < 0:
        if len(data) > V1_MAX:
            raise ProxyError("PROXY v1 line longer than 107 bytes")
        return None
    fields = data[:end].decode("ascii", "replace").split(" ")
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        return ProxyHeader(None, None, None, None, end + 2)
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyError("malformed PROXY v1 line")
    try:
        source = ipaddress.ip_address(fields[2])
        destination = ipaddress.ip_address(fields[3])
        sport, dport = int(fields[4]), int(fields[5])
    except ValueError:
        raise ProxyError("bad address or port in PROXY v1 line") from None
    family = 4 if fields[1] == "TCP4" else 6
    if source.version != family or destination.version != family:
        raise ProxyError("PROXY v1 address does not match its family")
    if not (0 <= sport <= 65535 and 0 <= dport <= 65535):
        raise ProxyError("PROXY v1 port out of range")
    return ProxyHeader(str(source), sport, str(destination), dport, end + 2)


def _v2(data: bytes) -> ProxyHeader | None:
    if len(data) < 16:
        return None
    version_command, family_protocol, length = struct.unpack("!BBH", data[12:16])
    if version_command >> 4 != 2:
        raise ProxyError("PROXY v2 header with a bad version")
    total = 16 + length
    if len(data) < total:
        return None
    command = version_command & 0x0F
    if command == 0:  # LOCAL: the proxy's own connection (health check)
        return ProxyHeader(None, None, None, None, total)
    if command != 1:
        raise ProxyError("PROXY v2 header with an unknown command")
    block = data[16:total]
    family = family_protocol >> 4
    if family == 1 and length >= 12:  # AF_INET
        src, dst, sport, dport = struct.unpack("!4s4sHH", block[:12])
        return ProxyHeader(
            str(ipaddress.IPv4Address(src)), sport, str(ipaddress.IPv4Address(dst)), dport, total
        )
    if family == 2 and length >= 36:  # AF_INET6
        src, dst, sport, dport = struct.unpack("!16s16sHH", block[:36])
        return ProxyHeader(
            str(ipaddress.IPv6Address(src)), sport, str(ipaddress.IPv6Address(dst)), dport, total
        )
    if family == 0:  # AF_UNSPEC
        return ProxyHeader(None, None, None, None, total)
    raise ProxyError("PROXY v2 header with an unsupported address family")


def v1_header(source: str, source_port: int, destination: str, destination_port: int) -> bytes:
    """What a load balancer sends (tests and tools use it)."""
    family = "TCP6" if ":" in source else "TCP4"
    return f"PROXY {family} {source} {destination} {source_port} {destination_port}\r\n".encode()


def v2_header(source: str, source_port: int, destination: str, destination_port: int) -> bytes:
    src = ipaddress.ip_address(source)
    dst = ipaddress.ip_address(destination)
    if src.version == 4:
        block = struct.pack("!4s4sHH", src.packed, dst.packed, source_port, destination_port)
        family = 0x11
    else:
        block = struct.pack("!16s16sHH", src.packed, dst.packed, source_port, destination_port)
        family = 0x21
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, family, len(block)) + block
