"""Real system users for the tests of qmail-getpw and delivery as a user.

`system_user` creates users with `useradd` (unique names, removed with
`userdel` at teardown, even when the test fails) whose homes live in a
directory every user may traverse (pytest's tmp_path is root's 0700).
Needs root; skipped otherwise.  Ask for it before `server_factory`, so the
server stops before its users go.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from quailmail.config.lspawn import forget_passwords


@dataclass(frozen=True)
class SystemUser:
    name: str
    uid: int
    gid: int
    home: Path

    def maildir(self) -> Path:
        """`~/Maildir/` made as the user's own (maildirmake run by the user)."""
        md = self.home / "Maildir"
        for path in (md, md / "tmp", md / "new", md / "cur"):
            path.mkdir(mode=0o700, exist_ok=True)
            os.chown(path, self.uid, self.gid)
        return md

    def write(self, name: str, text: str) -> Path:
        """A file in the home, owned by the user (a `.qmail` file, say)."""
        path = self.home / name
        path.write_text(text)
        os.chown(path, self.uid, self.gid)
        return path


def unique_name(prefix: str = "qt") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture
def system_user() -> Iterator[Callable[..., SystemUser]]:
    if os.geteuid() != 0:
        pytest.skip("creating system users needs root")
    if shutil.which("useradd") is None:
        pytest.skip("no useradd")
    base = Path(tempfile.mkdtemp(prefix="quailhomes-"))
    os.chmod(base, 0o755)
    made: list[str] = []

    def make(
        name: str | None = None, *, home_owner: int | None = None, make_home: bool = True
    ) -> SystemUser:
        name = name or unique_name()
        home = base / name
        subprocess.run(
            ["useradd", "-M", "-d", str(home), "-s", "/bin/sh", "-U", name],
            check=True,
            capture_output=True,
        )
        made.append(name)
        pw = pwd.getpwnam(name)
        if make_home:
            home.mkdir(mode=0o755)
            os.chown(home, pw.pw_uid if home_owner is None else home_owner, pw.pw_gid)
        forget_passwords()
        return SystemUser(name, pw.pw_uid, pw.pw_gid, home)

    try:
        yield make
    finally:
        for name in made:
            # -f: even while a delivery the test left behind runs as the user
            subprocess.run(["userdel", "-f", name], check=False, capture_output=True)
        forget_passwords()
        shutil.rmtree(base, ignore_errors=True)
