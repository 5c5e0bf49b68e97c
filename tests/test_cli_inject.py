"""`quail inject`: sendmail-compatible submission into the durable queue,
beside a running server."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from quailmail.queue import QueueSet

from serverfixtures import QUAIL, Running

# qmail-inject's variables: the tests that read them set them, the others
# must not see the runner's USER, NAME, ...
INJECT_VARIABLES = (
    "QMAILDEFAULTHOST", "QMAILDEFAULTDOMAIN", "QMAILPLUSDOMAIN", "QMAILIDHOST",
    "QMAILUSER", "MAILUSER", "USER", "LOGNAME", "QMAILHOST", "MAILHOST",
    "QMAILSUSER", "QMAILSHOST", "QMAILNAME", "MAILNAME", "NAME",
)  # fmt: skip


def inject(
    root: Path, *args: str, stdin: bytes, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    environ = {k: v for k, v in os.environ.items() if k not in INJECT_VARIABLES}
    environ.update({"USER": "tester"} if env is None else env)
    return subprocess.run(
        [QUAIL, "inject", "--root", str(root), *args],
        input=stdin,
        capture_output=True,
        check=False,
        env=environ,
    )


def messages(root: Path) -> list[tuple[str, list[str], bytes]]:
    queue = QueueSet(root / "queue")
    return [(m.sender, list(m.recipients), queue.read_sync(m.id)) for m in queue.messages()]


def test_sendmail_t_i_beside_a_running_server(server: Running) -> None:
    text = (
        b"To: Ann <ann@example.org>, bob@example.net\n"
        b"Bcc: hidden@example.com\n"
        b"Subject: from a web app\n"
        b"\n"
        b"line one\n.\nstill here with -i\n"
    )
    proc = inject(server.root, "-t", "-i", "-f", "app@mx.test", stdin=text)
    assert proc.returncode == 0, proc.stderr
    [(sender, recipients, data)] = messages(server.root)
    assert sender == "app@mx.test"
    assert recipients == ["ann@example.org", "bob@example.net", "hidden@example.com"]
    assert b"Bcc:" not in data and b"hidden@" not in data
    assert b"\r\nstill here with -i\r\n" in data
    for field in (b"From: app@mx.test\r\n", b"Date: ", b"Message-ID: <"):
        assert field in data


def test_dot_ends_the_message_without_i(server: Running) -> None:
    proc = inject(server.root, "joe@example.org", stdin=b"Subject: x\n\nkept\n.\ndropped\n")
    assert proc.returncode == 0, proc.stderr
    [(_, recipients, data)] = messages(server.root)
    assert recipients == ["joe@example.org"]
    assert data.endswith(b"kept\r\n") and b"dropped" not in data


def test_no_recipient_is_permanent(tmp_path: Path) -> None:
    (tmp_path / "control").mkdir()
    proc = inject(tmp_path, stdin=b"Subject: nobody\n\nx\n")
    assert proc.returncode == 100
    assert proc.stderr.count(b"\n") == 1 and b"no recipients" in proc.stderr


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root as a migrated qmail box has it: me, and qmail-inject's files."""
    control = tmp_path / "control"
    control.mkdir()
    for name, value in {
        "me": "mx.example.com",
        "defaulthost": "example.com",
        "defaultdomain": "corp.example.com",
        "plusdomain": "plus.example.com",
        "idhost": "id.example.com",
    }.items():
        (control / name).write_text(value + "\n")
    return tmp_path


def header(data: bytes, name: bytes) -> bytes:
    """The named field of a queued message, folding kept."""
    [field] = [f for f in data.split(b"\r\n\r\n")[0].split(b"\r\n") if f.startswith(name + b":")]
    return field


def test_bare_names_are_rewritten_as_qmail_inject_does(root: Path) -> None:
    """The migration rehearsal's case: `joe` and `ann@mail+` and `From: root`."""
    text = b"To: joe, ann@mail+\nFrom: root\nCc: Ann B <ann@mail> (boss)\nSubject: x\n\nhi\n"
    proc = inject(root, "-t", stdin=text, env={"USER": "cron"})
    assert proc.returncode == 0, proc.stderr
    [(sender, recipients, data)] = messages(root)
    assert recipients == [
        "joe@example.com",  # defaulthost
        "ann@mail.plus.example.com",  # plusdomain for the `+`
        "ann@mail.corp.example.com",  # defaultdomain for a name without dots
    ]
    assert sender == "cron@example.com"
    assert header(data, b"To") == b"To: joe@example.com, ann@mail.plus.example.com"
    assert header(data, b"From") == b"From: root@example.com"
    assert header(data, b"Cc") == b"Cc: Ann B <ann@mail.corp.example.com> (boss)"
    assert header(data, b"Message-ID").endswith(b"@id.example.com>")


def test_argument_recipients_are_rewritten(root: Path) -> None:
    proc = inject(root, "joe", "ann@mail", "bob@mail+", "x@example.org", stdin=b"Subject: x\n\n.\n")
    assert proc.returncode == 0, proc.stderr
    [(_, recipients, data)] = messages(root)
    assert recipients == [
        "joe@example.com",
        "ann@mail.corp.example.com",
        "bob@mail.plus.example.com",
        "x@example.org",
    ]
    assert header(data, b"From") == b"From: tester@example.com"


def test_without_the_files_me_is_the_default(tmp_path: Path) -> None:
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / "me").write_text("mx.example.com\n")
    text = b"To: joe, ann@mail, bob@mail+\n\nx\n"
    proc = inject(tmp_path, "-t", stdin=text)
    assert proc.returncode == 0, proc.stderr
    [(sender, recipients, data)] = messages(tmp_path)
    assert sender == "tester@mx.example.com"
    assert recipients == [
        "joe@mx.example.com",
        "ann@mail.mx.example.com",
        "bob@mail.mx.example.com",
    ]
    assert header(data, b"Message-ID").endswith(b"@mx.example.com>")


def test_the_environment_overrides_the_files(root: Path) -> None:
    env = {
        "USER": "tester",
        "QMAILDEFAULTHOST": "env-host.test",
        "QMAILDEFAULTDOMAIN": "env-domain.test",
        "QMAILPLUSDOMAIN": "env-plus.test",
        "QMAILIDHOST": "env-id.test",
    }
    proc = inject(root, "-t", stdin=b"To: joe, ann@mail, bob@mail+\n\nx\n", env=env)
    assert proc.returncode == 0, proc.stderr
    [(sender, recipients, data)] = messages(root)
    assert sender == "tester@env-host.test"
    assert recipients == ["joe@env-host.test", "ann@mail.env-domain.test", "bob@mail.env-plus.test"]
    assert header(data, b"Message-ID").endswith(b"@env-id.test>")


@pytest.mark.parametrize(
    ("given", "sender"),
    [
        ("www", "www@example.com"),
        ("bounces@lists", "bounces@lists.corp.example.com"),
        ("bounces@lists+", "bounces@lists.plus.example.com"),
        ("<>", ""),  # sendmail's way of asking for the null sender
        ("<app@example.org>", "app@example.org"),
    ],
)
def test_dash_f_is_rewritten(root: Path, given: str, sender: str) -> None:
    proc = inject(root, "-f", given, "joe@example.org", stdin=b"Subject: x\n\nx\n")
    assert proc.returncode == 0, proc.stderr
    [(queued, _, data)] = messages(root)
    assert queued == sender
    if sender:  # -f also makes the From: (sendmail's way)
        assert header(data, b"From") == b"From: " + sender.encode()


@pytest.mark.parametrize(
    ("env", "sender", "shown"),
    [
        ({"USER": "ann"}, "ann@example.com", b"ann@example.com"),
        ({"LOGNAME": "ann"}, "ann@example.com", b"ann@example.com"),
        ({"MAILUSER": "m", "USER": "u"}, "m@example.com", b"m@example.com"),
        ({"QMAILUSER": "web", "QMAILHOST": "www+"}, "web@www.plus.example.com",
         b"web@www.plus.example.com"),
        ({"USER": "u", "MAILHOST": "box"}, "u@box.corp.example.com", b"u@box.corp.example.com"),
        # QMAILSUSER/QMAILSHOST change the envelope sender, not the From:
        ({"USER": "u", "QMAILSUSER": "bounce", "QMAILSHOST": "lists"},
         "bounce@lists.corp.example.com", b"u@example.com"),
        ({"USER": "u", "QMAILNAME": 'Cron "Daemon"'}, "u@example.com",
         b'"Cron \\"Daemon\\"" <u@example.com>'),
    ],
)  # fmt: skip
def test_sender_from_the_environment(
    root: Path, env: dict[str, str], sender: str, shown: bytes
) -> None:
    proc = inject(root, "joe@example.org", stdin=b"Subject: x\n\nx\n", env=env)
    assert proc.returncode == 0, proc.stderr
    [(queued, _, data)] = messages(root)
    assert queued == sender
    assert header(data, b"From") == b"From: " + shown


def test_complete_addresses_and_other_fields_are_untouched(root: Path) -> None:
    fields = (
        b'From: "Smith, John" <john@example.org>\r\n'
        b"To: Ann <ann@example.net>,\r\n  team: bob@example.net, carol@[192.0.2.7];\r\n"
        b"Cc: undisclosed-recipients:;\r\n"
        b"Mail-Followup-To: joe\r\n"  # qmail-inject does not rewrite it
        b"X-Note: joe, ann@mail+\r\n"
        b"Subject: joe\r\n"
    )
    proc = inject(root, "-t", stdin=fields + b"\r\nbody\r\n")
    assert proc.returncode == 0, proc.stderr
    [(_, recipients, data)] = messages(root)
    assert recipients == ["ann@example.net", "bob@example.net", "carol@[192.0.2.7]"]
    assert fields in data


def test_a_field_that_does_not_parse_is_kept_byte_for_byte(root: Path) -> None:
    fields = (
        b"To: team: joe, ann\r\n"  # a group never closed: qmail-inject refuses it
        b"Reply-To: x <y\r\n"  # `<` without `>`
        b'Cc: "unclosed <ann@mail>\r\n'
        b"From: \xff\xfe (not UTF-8) <root>\r\n"  # this one parses: 8-bit kept
    )
    proc = inject(root, "joe@example.org", stdin=fields + b"\r\nbody\r\n")
    assert proc.returncode == 0, proc.stderr
    [(_, recipients, data)] = messages(root)
    assert recipients == ["joe@example.org"]
    assert fields.replace(b"<root>", b"<root@example.com>") in data


def test_resent_message_goes_to_the_resent_recipients(root: Path) -> None:
    """qmail-header(5): a resent message's recipients are Resent-To, -Cc,
    -Bcc; Resent-Bcc is removed, as Bcc is."""
    text = b"To: old@example.org\nResent-To: joe\nResent-Bcc: hidden\nSubject: fwd\n\nx\n"
    proc = inject(root, "-t", stdin=text)
    assert proc.returncode == 0, proc.stderr
    [(_, recipients, data)] = messages(root)
    assert recipients == ["joe@example.com", "hidden@example.com"]
    assert header(data, b"Resent-To") == b"Resent-To: joe@example.com"
    assert b"Resent-Bcc" not in data and b"hidden" not in data


def test_a_bad_control_value_is_one_line(root: Path) -> None:
    (root / "control" / "defaulthost").write_text("not a host\n")
    proc = inject(root, "joe", stdin=b"Subject: x\n\nx\n")
    assert proc.returncode == 111
    assert proc.stderr == b"quail inject: control/defaulthost: not a host name: 'not a host'\n"
    assert not (root / "queue").exists()


def test_full_name_cannot_add_fields(root: Path) -> None:
    proc = inject(root, "-F", 'Web "App"\nBcc: evil@example.net', "joe", stdin=b"\nx\n")
    assert proc.returncode == 0, proc.stderr
    [(_, recipients, data)] = messages(root)
    assert recipients == ["joe@example.com"]
    shown = b'"Web \\"App\\" Bcc: evil@example.net" <tester@example.com>'
    assert header(data, b"From") == b"From: " + shown
