"""A real `quail serve` on loopback for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

QUAIL = str(Path(sys.executable).with_name("quail"))


def free_port() -> int:
    """A port free on both 127.0.0.1 and ::1 (listeners bind both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s4:
            s4.bind(("127.0.0.1", 0))
            port = s4.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s6:
                    s6.bind(("::1", port))
            except OSError:
                continue
            return int(port)
    raise RuntimeError("no free port")


@dataclass
class Running:
    root: Path
    smtp: int
    smtps: int
    submission: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def quail(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [QUAIL, *args, "--root", str(self.root)], input=stdin, capture_output=True, check=False
        )

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        assert self.process.stderr is not None
        return (
            self.process.stderr.read().decode(errors="replace")
            if self.process.poll() is not None
            else ""
        )


def _wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("quail serve exited at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("quail serve did not listen")


def start_server(
    root: Path,
    setup: Callable[[Path], None] | None = None,
    *,
    deliver: bool = False,
    env: dict[str, str] | None = None,
) -> Running:
    """`quail serve` on a new root; receive-only unless `deliver` (the
    receiver's tests look at what stays in the queue); `env`: variables
    added to its environment, as a run script sets them."""
    ports = [free_port() for _ in range(3)]
    subprocess.run(
        [QUAIL, "init", str(root), "--hostname", "mx.test", "--ports", ",".join(map(str, ports))],
        check=True,
        capture_output=True,
    )
    if setup is not None:
        setup(root)
    log_path = root.parent / f"{root.name}-serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [QUAIL, "serve", "--root", str(root), *([] if deliver else ["--receive-only"])],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    running = Running(root, ports[0], ports[1], ports[2], process, log_path)
    try:
        _wait_ready(ports[0], process)
    except RuntimeError:
        running.stop()
        raise
    return running


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Running]:
    running = start_server(tmp_path / "root")
    yield running
    running.stop()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def make(
        setup: Callable[[Path], None] | None = None,
        name: str = "root",
        *,
        deliver: bool = False,
        env: dict[str, str] | None = None,
    ) -> Running:
        running = start_server(tmp_path / name, setup, deliver=deliver, env=env)
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def maildir(path: Path) -> list[bytes]:
    new = path / "new"
    if not new.is_dir():
        return []
    return [p.read_bytes() for p in sorted(new.iterdir())]
