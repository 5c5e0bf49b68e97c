"""A control file that is there but cannot be read (a directory, a symlink
loop): the client gets a temporary failure with an enhanced code, the log
and a command's stderr one line naming the file, never a traceback, and
the server keeps serving once the file is mended."""

from __future__ import annotations

import smtplib
import subprocess
import sys
from pathlib import Path

from serverfixtures import Running

QUAIL = str(Path(sys.executable).with_name("quail"))


def test_unreadable_control_files_are_one_log_line_and_451(server: Running) -> None:
    control = server.root / "control"
    (control / "badmailfrom").mkdir()  # read at MAIL
    (control / "badrcptto").symlink_to("badrcptto")  # a loop, read at RCPT
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=10) as client:
        client.ehlo("client.test")
        assert client.docmd("MAIL FROM:<joe@example.com>") == (
            451, b"4.3.0 temporary failure, try again later")  # fmt: skip
        (control / "badmailfrom").rmdir()
        assert client.docmd("MAIL FROM:<joe@example.com>")[0] == 250
        assert client.docmd("RCPT TO:<postmaster@mx.test>") == (
            451, b"4.3.0 temporary failure, try again later")  # fmt: skip
        (control / "badrcptto").unlink()
        assert client.docmd("RCPT TO:<postmaster@mx.test>")[0] == 250
        client.docmd("RSET")
    log = server.log_path.read_text()
    assert "Traceback" not in log
    assert f"cannot read {control / 'badmailfrom'}: Is a directory" in log
    assert f"cannot read {control / 'badrcptto'}: Too many levels of symbolic links" in log


def test_a_command_says_it_in_one_line_and_exits_111(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "control" / "me").mkdir(parents=True)
    command = [QUAIL, "spf", "--root", str(root), "--ip", "192.0.2.1",
               "--sender", "joe@example.com", "--dns", "127.0.0.1:9"]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 111, proc.stderr
    assert proc.stderr == f"quail spf: cannot read {root / 'control' / 'me'}: Is a directory\n"
