"""`quail init`: a new root, and `--existing` over a qmail tree moved over,
which gets only what it lacks and keeps every file that is there."""

from __future__ import annotations

import smtplib
import subprocess
import sys
from pathlib import Path

from serverfixtures import Running, _wait_ready, free_port

QUAIL = str(Path(sys.executable).with_name("quail"))


def quail(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([QUAIL, *args], capture_output=True, text=True, check=False, timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def qmail_tree(root: Path) -> None:
    """What a patched qmail's /var/qmail holds that matters here."""
    control = root / "control"
    control.mkdir(parents=True)
    (control / "me").write_text("mail.sample.com\n")
    (control / "rcpthosts").write_text("sample.com\nmail.sample.com\n")
    (control / "locals").write_text("mail.sample.com\n")
    (control / "databytes").write_text("1000000\n")
    (control / "tcp.smtp").write_text('127.:allow,RELAYCLIENT="",RBLSMTPD=""\n:allow\n')
    (root / "alias").mkdir()
    (root / "alias" / ".qmail-postmaster").write_text("&admin@sample.com\n")


def test_existing_adds_only_what_is_missing(tmp_path: Path) -> None:
    root = tmp_path / "var-qmail"
    qmail_tree(root)
    kept = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    ports = [str(free_port()) for _ in range(3)]
    done = quail("init", str(root), "--existing", "--hostname", "ignored.test",
                 "--ports", ",".join(ports))  # fmt: skip
    assert done.returncode == 0, done.stderr
    for path, data in kept.items():
        assert path.read_bytes() == data, path  # nothing that was there is changed
    added = done.stdout.split("added ", 1)[1].strip().split(", ")
    for name in ("control/listeners", "control/servercert.pem", "control/tcp.smtp.cdb",
                 "control/tcp.submission", "alias/.qmail-root"):  # fmt: skip
        assert name in added, added
    assert "control/me" not in added and "control/tcp.smtp" not in added
    # ... and it serves with the tree's own settings
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [QUAIL, "serve", "--root", str(root), "--receive-only"],
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    running = Running(root, *(int(p) for p in ports), process, log)
    try:
        _wait_ready(int(ports[0]), process)
        with smtplib.SMTP("127.0.0.1", int(ports[0]), timeout=10) as client:
            code, banner = client.ehlo("client.test")
            assert code == 250 and banner.startswith(b"mail.sample.com")
            assert client.esmtp_features["size"] == "1000000"
    finally:
        running.stop()
    # a second run adds nothing
    again = quail("init", str(root), "--existing")
    assert again.returncode == 0 and again.stdout.endswith("added nothing\n"), again


def test_existing_wants_a_control_directory_and_plain_init_a_new_root(tmp_path: Path) -> None:
    done = quail("init", str(tmp_path / "nothing"), "--existing")
    assert done.returncode == 1 and "not a directory" in done.stderr
    qmail_tree(tmp_path / "q")
    done = quail("init", str(tmp_path / "q"))
    assert done.returncode == 1 and "--existing adds what is missing" in done.stderr
    (tmp_path / "q" / "control" / "tcp.smtp").write_text("this is not a rule\n")
    done = quail("init", str(tmp_path / "q"), "--existing")
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr


def test_existing_without_databytes_keeps_qmails_no_limit(tmp_path: Path) -> None:
    # qmail-smtpd's databytes is 0 (no limit) when the file is missing; a tree
    # moved over must not get the 25 MiB limit that a new root is given.
    root = tmp_path / "var-qmail"
    qmail_tree(root)
    (root / "control" / "databytes").unlink()
    done = quail("init", str(root), "--existing")
    assert done.returncode == 0, done.stderr
    assert "control/databytes" not in done.stdout
    assert not (root / "control" / "databytes").exists()
