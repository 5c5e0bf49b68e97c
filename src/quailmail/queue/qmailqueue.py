"""The qmail-queue protocol (qmail-queue(8)): how `QMAILQUEUE` programs talk.

- The message on descriptor 0, lines ending in LF: qmail-smtpd drops the CR
  of every CRLF before it hands a message on, and filters written for qmail
  (simscan, qmail-dkverify, which "enhances the message by the required CR
  characters", ../shared/seeds/004_*) expect that.
- The envelope on descriptor 1: `F` sender NUL, then `T` recipient NUL for
  each recipient, then one more NUL.  End of file before that last NUL means
  "abort, queue nothing".
- The exit code: 0 queued; 11 to 40 permanent; anything else temporary.  The
  texts are qmail-smtpd's (qmail.c `qmail_close`), with the enhanced code
  qmail put in its `(#x.y.z)` suffix.
- Descriptor 4, the "qmail-queue-custom-error" patch (Flavio Curti; also in
  indimail's qmail.c), which simscan's `--enable-custom-smtp-reject` writes
  to: a program that wants its own answer writes `D` (permanent) or `Z`
  (temporary) and the text there, then exits 82; qmail-smtpd answers `554`
  or `451` with that text (`custom_reply`).  Exit 82 without one is the
  ordinary "qq temporary problem".

Pure: no I/O.  The server's side is `server/qmailqueue.py`, the programs'
`cli/qmailqueue.py` (`quail qmail-queue`) and `cli/dkverify.py`.
"""

from __future__ import annotations

import re

from quailmail.core.reply import Reply

# Exit codes of qmail-queue(8), with the names its manual gives them.
EXIT_OK = 0
EXIT_ADDRESS_TOO_LONG = 11
EXIT_REFUSED = 31  # "permanently refuses to send the message to any recipients"
EXIT_NOMEM = 51
EXIT_TIMEOUT = 52
EXIT_WRITE = 53  # write error, e.g. disk full
EXIT_READ = 54  # unable to read the message or envelope
EXIT_CONFIG = 55  # unable to read a configuration file
EXIT_NETWORK = 56
EXIT_HOME = 61  # problem with the home directory
EXIT_QUEUE = 62  # problem with the queue directory
EXIT_TEMP_REFUSED = 71  # "temporarily refuses to send the message"
EXIT_BUG = 81
EXIT_CUSTOM = 82  # qmail-queue-custom-error: the reply's text is on CUSTOM_FD
EXIT_ENVELOPE = 91  # envelope format error
EXIT_EXEC = 120  # qmail.c: the child could not exec the program

# The custom-error patch's descriptor, and how much of it is read: indimail's
# qmail.c keeps 1,023 bytes (`errstr[1024]`); the rest is read and dropped.
CUSTOM_FD = 4
CUSTOM_KEPT = 1024

# qmail-queue.c's ADDR: an address this long or longer is refused (exit 11).
MAX_ADDRESS = 1003


class EnvelopeError(ValueError):
    """An envelope that is not `F…\\0(T…\\0)*\\0`; `code` is the exit code
    qmail-queue gives it (54 cut short, 91 malformed, 11 address too long)."""

    def __init__(self, reason: str, code: int) -> None:
        super().__init__(reason)
        self.code = code


def _bytes(address: str) -> bytes:
    return address.encode("utf-8", "surrogateescape")


def encode_envelope(sender: str, recipients: list[str] | tuple[str, ...]) -> bytes:
    """`F<sender>\\0T<rcpt>\\0…\\0`.  A NUL inside an address cannot be
    written (the SMTP session refuses them long before)."""
    parts = [b"F", _bytes(sender), b"\0"]
    for recipient in recipients:
        parts += [b"T", _bytes(recipient), b"\0"]
    parts.append(b"\0")
    return b"".join(parts)


def parse_envelope(data: bytes) -> tuple[str, list[str]] | None:
    """The sender and recipients of a complete envelope; None while the
    final NUL has not come (read on).  Bytes after it are ignored, as
    qmail-queue stops reading there.  Raises EnvelopeError."""
    if not data:
        return None
    if data[:1] != b"F":
        raise EnvelopeError("envelope does not start with F", EXIT_ENVELOPE)
    end = data.find(b"\0")
    if end < 0:
        _check_length(len(data) - 1)
        return None
    _check_length(end - 1)
    sender = data[1:end].decode("utf-8", "surrogateescape")
    recipients: list[str] = []
    pos = end + 1
    while True:
        if pos >= len(data):
            return None
        kind = data[pos : pos + 1]
        if kind == b"\0":
            return sender, recipients
        if kind != b"T":
            raise EnvelopeError(f"envelope item starts with {kind!r}, not T", EXIT_ENVELOPE)
        end = data.find(b"\0", pos)
        if end < 0:
            _check_length(len(data) - pos - 1)
            return None
        _check_length(end - pos - 1)
        recipients.append(data[pos + 1 : end].decode("utf-8", "surrogateescape"))
        pos = end + 1


def _check_length(length: int) -> None:
    if length >= MAX_ADDRESS:
        raise EnvelopeError("envelope address too long", EXIT_ADDRESS_TOO_LONG)


def reply_for_exit(
    code: int | None, *, write_failed: bool = False, custom: bytes = b""
) -> Reply | None:
    """qmail-smtpd's answer to a queue program's exit: None for success.

    `code` None: the program was killed by a signal ("qq crashed").
    `write_failed`: we could not hand it the whole message or envelope; an
    exit 0 then still means "qq read error", as in qmail.c.
    `custom`: what the program wrote on CUSTOM_FD, answered on exit 82.
    """
    if code is None:
        return Reply(451, "4.3.0", "qq crashed")
    if code == EXIT_CUSTOM:
        reply = custom_reply(custom)
        if reply is not None:
            return reply
    if code == EXIT_OK:
        if not write_failed:
            return None
        code = EXIT_READ
    fixed = _TABLE.get(code)
    if fixed is not None:
        return fixed
    if 11 <= code <= 40:
        return Reply(554, "5.3.0", "qq permanent problem")
    return Reply(451, "4.3.0", "qq temporary problem")


# RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets with its CRLF;
# the code and the longest enhanced code (RFC 3463: 5.999.999) go first.
_CUSTOM_TEXT_MAX = 512 - len("554 5.999.999 ") - len("\r\n")
_LINE_END = re.compile(rb"[\r\n]")
# qmail's way of giving an enhanced code: a `(#5.7.1)` at the end of the text.
_QMAIL_ENHANCED = re.compile(r"\(#([245]\.\d{1,3}\.\d{1,3})\)\Z")


def custom_reply(data: bytes) -> Reply | None:
    """The answer a program asked for on CUSTOM_FD before exit 82; None when
    there is none to use.

    qmail.c takes the message when more than 2 bytes came; qmail-smtpd
    answers `554` when the first is `D`, `451` for anything else (`Z`), then
    the rest as it is.  Here the rest is made one safe reply line: cut at
    the first CR or LF, every byte outside printable ASCII a `?`, at most
    `_CUSTOM_TEXT_MAX` characters.  A trailing `(#X.Y.Z)` of the right
    class gives the enhanced code (the text keeps it, as qmail shows it);
    else 5.3.0 or 4.3.0, qmail_close's codes for the unspecified refusal.
    """
    if len(data) <= 2:
        return None
    code = 554 if data[:1] == b"D" else 451
    line = _LINE_END.split(data[1:], maxsplit=1)[0]
    text = "".join(chr(b) if 32 <= b < 127 else "?" for b in line).strip()
    if not text:
        return None
    found = _QMAIL_ENHANCED.search(text)
    if found is not None and found.group(1)[0] == str(code)[0]:
        enhanced = found.group(1)
    else:
        enhanced = "5.3.0" if code == 554 else "4.3.0"
    return Reply(code, enhanced, text[:_CUSTOM_TEXT_MAX].rstrip())


def permanent(code: int) -> bool:
    """qmail-queue(8): error codes 11 to 40 are permanent, all others temporary."""
    return 11 <= code <= 40


# qmail.c `qmail_close`, code by code (115 is qmail 0.9x's "too long").
_TABLE: dict[int, Reply] = {
    115: Reply(554, "5.1.3", "envelope address too long for qq"),
    EXIT_ADDRESS_TOO_LONG: Reply(554, "5.1.3", "envelope address too long for qq"),
    EXIT_REFUSED: Reply(554, "5.3.0", "mail server permanently rejected message"),
    EXIT_NOMEM: Reply(451, "4.3.0", "qq out of memory"),
    EXIT_TIMEOUT: Reply(451, "4.3.0", "qq timeout"),
    EXIT_WRITE: Reply(451, "4.3.0", "qq write error or disk full"),
    EXIT_READ: Reply(451, "4.3.0", "qq read error"),
    EXIT_CONFIG: Reply(451, "4.3.0", "qq unable to read configuration"),
    EXIT_NETWORK: Reply(451, "4.3.0", "qq trouble making network connection"),
    EXIT_HOME: Reply(451, "4.3.0", "qq trouble in home directory"),
    **{c: Reply(451, "4.3.0", "qq trouble creating files in queue") for c in range(62, 67)},
    EXIT_TEMP_REFUSED: Reply(451, "4.3.0", "mail server temporarily rejected message"),
    72: Reply(451, "4.4.1", "connection to mail server timed out"),
    73: Reply(451, "4.4.1", "connection to mail server rejected"),
    74: Reply(451, "4.4.2", "communication with mail server failed"),
    EXIT_BUG: Reply(451, "4.3.0", "qq internal bug"),
    EXIT_ENVELOPE: Reply(451, "4.3.0", "qq internal bug"),
    EXIT_EXEC: Reply(451, "4.3.0", "unable to exec qq"),
}
