"""badmailfrom, badrcptto, BADMIMETYPE and BADLOADERTYPE: the scanner alone
on messages the standard library's email package builds, then end to end
over SMTP against a real `quail serve`."""

from __future__ import annotations

import base64
import smtplib
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quailmail.config.tcprules import compile_rules
from quailmail.policy.content import Finding, Rules, scan
from quailmail.queue import QueueSet

from serverfixtures import Running


def windows_executable() -> bytes:
    """The first bytes of every PE file: an MZ header and the DOS stub."""
    header = bytearray(64)
    header[0:6] = b"MZ\x90\x00\x03\x00"
    header[8:10] = b"\x04\x00"
    header[12:14] = b"\xff\xff"
    header[16:18] = b"\xb8\x00"
    header[24:26] = b"\x40\x00"
    header[60:64] = b"\x80\x00\x00\x00"
    stub = b"\x0e\x1f\xba\x0e\x00\xb4\x09\xcd\x21\xb8\x01\x4c\xcd\x21"
    stub += b"This program cannot be run in DOS mode.\r\r\n$" + b"\0" * 7
    return bytes(header) + stub + b"\0" * 200


def mail(attachment: bytes | None, *, name: str = "file.bin", text: str = "hello") -> bytes:
    message = EmailMessage()
    message["From"] = "a@example.com"
    message["To"] = "postmaster@mx.test"
    message["Subject"] = "attachment"
    message.set_content(text)
    if attachment is not None:
        message.add_attachment(
            attachment, maintype="application", subtype="octet-stream", filename=name
        )
    return message.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


EXE_PREFIX = b"TVqQAAMAA"  # base64 of MZ\x90\0\x03\0: how every PE file starts
STUB = b"M0hVG"  # base64 of the DOS stub's "\xcd!This", where every PE file has it
RULES = Rules(frozenset({EXE_PREFIX}), frozenset({STUB}))


def test_scanner_finds_the_executable_by_its_first_characters() -> None:
    assert scan(mail(windows_executable()), RULES) == Finding("Bad_MIME", "TVqQAAMAA")
    assert scan(mail(b"%PDF-1.4 harmless " * 20), RULES) is None
    assert scan(mail(None), RULES) is None


def test_scanner_finds_the_loader_inside_the_content() -> None:
    loader_only = Rules(frozenset(), frozenset({STUB}))
    assert scan(mail(windows_executable()), loader_only) == Finding("Bad_Loader", "M0hVG")
    # An executable behind 3 bytes of padding starts differently in base64,
    # but its stub still encodes the same way somewhere: the loader finds it.
    padded = mail(b"PK\x03" + windows_executable())
    assert scan(padded, Rules(frozenset({EXE_PREFIX}), frozenset())) is None
    assert scan(padded, loader_only) == Finding("Bad_Loader", "M0hVG")


def test_scanner_reads_only_base64_content() -> None:
    # The same characters in a text part or a header are not an attachment.
    text = mail(None, text="TVqQAAMAAAAEAAAA and M0hVG in plain text\n" * 3)
    assert scan(text, RULES) is None
    quoted = (
        b"Subject: TVqQAAMAAAAE\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"TVqQAAMAAAAEAAAA M0hVG\r\n"
    )
    assert scan(quoted, RULES) is None
    single = b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(
        windows_executable()
    ).replace(b"\n", b"\r\n")
    assert scan(single, RULES) == Finding("Bad_MIME", "TVqQAAMAA")


def test_blank_in_base64_with_bang() -> None:
    body = b"Content-Transfer-Encoding: base64\r\n\r\nSGVsbG8gd29y bGQ=\r\n"
    assert scan(body, Rules(frozenset(), frozenset())) is None
    assert scan(body, Rules(frozenset(), frozenset(), refuse_blanks=True)) == Finding(
        "Bad_MIME", "blank in base64"
    )


@given(
    st.lists(
        st.sampled_from([
            b"Content-Transfer-Encoding: base64\r\n", b"\r\n", b"--b\r\n", b"TVqQAAMAAAAE\r\n",
            b"M0hVG\r\n", b"x y\r\n", b"\n", b"content-transfer-encoding:base64\n", b"-",
        ]),
        max_size=30,
    ),
    st.binary(max_size=40),
)  # fmt: skip
def test_scanner_takes_any_message(parts: list[bytes], noise: bytes) -> None:
    data = b"".join(parts) + noise
    finding = scan(data, Rules(frozenset({EXE_PREFIX}), frozenset({STUB}), refuse_blanks=True))
    assert finding is None or finding.kind in ("Bad_MIME", "Bad_Loader")


# -- end to end ----------------------------------------------------------------------------


def setup_with(rules: str, files: dict[str, str]) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        for name, text in files.items():
            (root / "control" / name).write_text(text)
        (root / "control" / "tcp.smtp").write_text(rules)
        (root / "control" / "tcp.smtp.cdb").write_bytes(compile_rules(rules))

    return setup


def queued(server: Running) -> list[bytes]:
    queue = QueueSet(server.root / "queue")
    return [queue.read_sync(m.id) for m in queue.messages()]


def test_badmailfrom_refuses_at_mail(server_factory: Callable[..., Running]) -> None:
    server = server_factory(
        setup_with(":allow\n", {"badmailfrom": "spammer@example.com\n@junk.example\n"})
    )
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30) as client:
        client.ehlo("client.test")
        for sender in ("Spammer@Example.COM", "anyone@JUNK.example"):
            code, text = client.mail(sender)
            assert (code, text) == (553, b"5.7.1 sorry, your envelope sender is in my "
                                          b"badmailfrom list")  # fmt: skip
            assert client.rcpt("postmaster@mx.test")[0] == 503  # no transaction
        for sender in ("friend@example.com", "anyone@sub.junk.example", ""):
            assert client.mail(sender)[0] == 250
            assert client.rcpt("postmaster@mx.test")[0] == 250
            assert client.data(b"Subject: ok\r\n\r\nok\r\n")[0] == 250
    assert len(queued(server)) == 3
    assert "MAIL <Spammer@Example.COM> refused by badmailfrom" in server.log_path.read_text()


def test_badrcptto_refuses_that_recipient_only(server_factory: Callable[..., Running]) -> None:
    def setup(root: Path) -> None:
        setup_with(
            '127.:allow,RELAYCLIENT=""\n', {"badrcptto": "spamtrap@mx.test\n@old.example\n"}
        )(root)
        (root / "alias" / ".qmail-spamtrap").write_text("./Maildir/\n")  # an address that exists

    server = server_factory(setup)
    brt = (553, b"5.7.1 sorry, your envelope recipient is in my badrcptto list")
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30) as client:
        client.ehlo("client.test")
        client.mail("friend@example.com")
        assert client.rcpt("SpamTrap@mx.test") == brt
        assert client.rcpt("anyone@OLD.example") == brt
        assert client.rcpt("anyone@new.old.example")[0] == 250  # @host is that host only
        assert client.rcpt("postmaster@mx.test")[0] == 250
        assert client.data(b"Subject: ok\r\n\r\nok\r\n")[0] == 250
    [message] = queued(server)
    assert message.endswith(b"Subject: ok\r\n\r\nok\r\n")
    assert "RCPT <SpamTrap@mx.test> refused by badrcptto" in server.log_path.read_text()


SEEDS_RULE = ':allow,BADMIMETYPE="",BADLOADERTYPE="M"\n'  # the seeds' tcp.smtp (002_*, 003_*)
CONTENT_FILES = {
    "badmimetypes": "# Windows executables (MZ)\nTVqQAAMAA\n",
    "badloadertypes": "# the DOS stub's \\xcd!This\nM0hVG\n",
}


def send(server: Running, data: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30) as client:
        client.ehlo("client.test")
        client.mail("friend@example.com")
        client.rcpt("postmaster@mx.test")
        return client.data(data)


def test_seeds_rules_refuse_an_executable(server_factory: Callable[..., Running]) -> None:
    server = server_factory(setup_with(SEEDS_RULE, CONTENT_FILES))
    refused = send(server, mail(windows_executable(), name="invoice.pdf"))
    assert refused == (554, b"5.7.1 sorry, invalid message content (attachment type refused)")
    padded = send(server, mail(b"PK\x03" + windows_executable(), name="invoice.zip"))
    assert padded == (554, b"5.7.1 sorry, invalid message content (executable content refused)")
    assert send(server, mail(b"%PDF-1.4 harmless " * 20, name="real.pdf"))[0] == 250
    assert len(queued(server)) == 1
    log = server.log_path.read_text()
    assert "Reject::DATA::Bad_MIME F:<friend@example.com> 'TVqQAAMAA'" in log
    assert "Reject::DATA::Bad_Loader F:<friend@example.com> 'M0hVG'" in log


@pytest.mark.parametrize(
    ("rule", "refused"),
    [
        ('127.:allow,RELAYCLIENT="",BADMIMETYPE="+",BADLOADERTYPE="+"\n', False),  # relay: spared
        ('127.:allow,RELAYCLIENT="",BADMIMETYPE="",BADLOADERTYPE="M"\n', True),
        (':allow,BADMIMETYPE="-",BADLOADERTYPE="-"\n', False),
        (":allow\n", False),
    ],
)
def test_plus_minus_and_unset(
    server_factory: Callable[..., Running], rule: str, refused: bool
) -> None:
    server = server_factory(setup_with(rule, CONTENT_FILES))
    code, _ = send(server, mail(windows_executable()))
    assert code == (554 if refused else 250)
