"""A scripted SMTP server on loopback: the remote MTA of the internet that
the tests cannot reach, answering as told (4xx, 5xx, slowly) and keeping
what it accepted.  Real sockets; one thread per connection."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Script:
    """`rcpt(address)` and `final(n)` (n: the transaction's number, from 0)
    give reply lines; `delay` seconds before each final reply."""

    rcpt: Callable[[str], str] = lambda _address: "250 2.1.5 ok"
    final: Callable[[int], str] = lambda _n: "250 2.0.0 queued"
    delay: float = 0.0
    transactions: int = 0
    connections: int = 0
    accepted: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        with contextlib.suppress(OSError):  # the client closed or reset the connection
            self._converse()

    def _converse(self) -> None:
        script = self.server.script
        with script.lock:
            script.connections += 1
        self.reply("220 scripted.test ESMTP")
        sender, rcpts = "", []
        while line := self.rfile.readline():
            command = line.decode("utf-8", "replace").rstrip("\r\n")
            verb = command[:4].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250-scripted.test\r\n250-PIPELINING\r\n250 8BITMIME")
            elif verb == "MAIL":
                sender, rcpts = command[10:].split(">")[0].lstrip("<"), []
                self.reply("250 2.1.0 ok")
            elif verb == "RCPT":
                address = command[8:].split(">")[0].lstrip("<")
                answer = script.rcpt(address)
                if answer.startswith("2"):
                    rcpts.append(address)
                self.reply(answer)
            elif verb == "DATA":
                if not rcpts:
                    self.reply("554 5.5.1 no valid recipients")
                    continue
                self.reply("354 go ahead")
                data = bytearray()
                while (chunk := self.rfile.readline()) != b".\r\n":
                    if not chunk:
                        return  # the client went away mid-message: nothing taken
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                with script.lock:
                    n = script.transactions
                    script.transactions += 1
                time.sleep(script.delay)
                answer = script.final(n)
                if answer.startswith("2"):
                    with script.lock:
                        script.accepted.append((sender, list(rcpts), bytes(data)))
                self.reply(answer)
            elif verb == "RSET":
                sender, rcpts = "", []
                self.reply("250 2.0.0 ok")
            elif verb == "QUIT":
                self.reply("221 2.0.0 bye")
                return
            else:
                self.reply("502 5.5.2 unknown command")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 overflows when a restarted
    # scheduler opens its whole concurrencyremote at once; the kernel then
    # drops the handshake's last ACK and the client waits for a greeting
    # that never comes (timeoutremote).  Real MTAs listen with far more.
    request_queue_size = 128
    script: Script


class ScriptedSmtp:
    def __init__(self, script: Script, host: str = "127.0.0.1", port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("_Family", (_Server,), {"address_family": family})
        self.server: _Server = server_class((host, port), _Handler)
        self.server.script = script
        self.script = script
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
