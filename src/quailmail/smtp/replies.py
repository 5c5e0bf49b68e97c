"""The replies the session writes itself, in one place (RFC 5321 §4.2,
enhanced codes from RFC 3463 and the IANA registry of RFC 5248)."""

from __future__ import annotations

from quailmail.core.reply import Reply

OK = Reply(250, "2.0.0", "ok")
# Replies a driver commonly gives (it may give any other).
MAIL_OK = Reply(250, "2.1.0", "sender ok")
RCPT_OK = Reply(250, "2.1.5", "recipient ok")
GO_AHEAD = Reply(354, None, "go ahead, end with <CR><LF>.<CR><LF>")
TLS_GO_AHEAD = Reply(220, "2.0.0", "ready to start TLS")
AUTH_OK = Reply(235, "2.7.0", "authentication successful")
AUTH_FAILED = Reply(535, "5.7.8", "authentication credentials invalid")

HELP = Reply(214, "2.0.0", "see RFC 5321")
VRFY = Reply(252, "2.0.0", "cannot VRFY user, but will accept message and attempt delivery")
EXPN = Reply(502, "5.5.1", "EXPN not available")

LINE_TOO_LONG = Reply(500, "5.5.6", "line too long")  # RFC 5321 §4.5.3.1.4
BAD_UTF8 = Reply(500, "5.5.2", "command is not UTF-8")
CONTROL_CHARS = Reply(500, "5.5.2", "control characters in command")
UNKNOWN = Reply(502, "5.5.1", "unrecognized command")
HTTP = Reply(421, "4.7.0", "this is an SMTP server, not HTTP; closing")

NEED_HELO = Reply(503, "5.5.1", "send HELO or EHLO first")
NESTED_MAIL = Reply(503, "5.5.1", "nested MAIL command")
NEED_MAIL = Reply(503, "5.5.1", "need MAIL before RCPT")
NEED_MAIL_DATA = Reply(503, "5.5.1", "need MAIL and RCPT before DATA")
NO_VALID_RCPT = Reply(554, "5.5.1", "no valid recipients")  # RFC 5321 §3.3
BINARYMIME_DATA = Reply(503, "5.5.1", "BODY=BINARYMIME requires BDAT")  # RFC 3030 §3
DATA_AFTER_BDAT = Reply(503, "5.5.1", "DATA after BDAT in one transaction")
NO_CHUNKING = Reply(502, "5.5.1", "BDAT not available")
BAD_SEQUENCE_REJECTED = Reply(503, "5.5.1", "connection refused; only QUIT")
TOO_MANY_RCPTS = Reply(452, "4.5.3", "too many recipients")  # RFC 5321 §4.5.3.1.10

SYNTAX_HELO = Reply(501, "5.5.4", "syntax: HELO/EHLO hostname")
SYNTAX_MAIL = Reply(501, "5.5.4", "syntax: MAIL FROM:<address>")
SYNTAX_RCPT = Reply(501, "5.5.4", "syntax: RCPT TO:<address>")
SYNTAX_NOARGS = Reply(501, "5.5.4", "no arguments allowed")
SYNTAX_VRFY = Reply(501, "5.5.4", "syntax: VRFY address")
SYNTAX_BDAT = Reply(501, "5.5.4", "syntax: BDAT size [LAST]; closing")
SYNTAX_PARAM = Reply(501, "5.5.4", "syntax error in parameters")
UNKNOWN_PARAM = Reply(555, "5.5.4", "unsupported parameter")  # RFC 5321 §4.1.1.11
NEED_SMTPUTF8 = Reply(553, "5.6.7", "non-ASCII address requires SMTPUTF8")  # RFC 6531 §3.7.4.1
TOO_BIG_DECLARED = Reply(552, "5.3.4", "message size exceeds fixed maximum")  # RFC 1870 §6.2

MESSAGE_TOO_BIG = Reply(552, "5.3.4", "message size exceeds fixed maximum")  # RFC 1870 §6.3
# RFC 5321 §2.3.8: CR and LF appear only as CRLF.  Refusing is the
# remedy for SMTP smuggling (Postfix's smtpd_forbid_bare_newline=reject says
# "bare <LF> received"); 5.6.0 is "other or undefined media error" (RFC 3463 §3.7).
BARE_LINE_END = Reply(550, "5.6.0", "message refused: bare CR or LF received")
NUL_IN_DATA = Reply(550, "5.6.0", "message refused: NUL character received")

STARTTLS_UNAVAILABLE = Reply(502, "5.5.1", "STARTTLS not available")
TLS_ACTIVE = Reply(503, "5.5.1", "TLS already active")

AUTH_UNAVAILABLE = Reply(503, "5.5.1", "authentication not enabled")
AUTH_ALREADY = Reply(503, "5.5.1", "already authenticated")  # RFC 4954 §4
AUTH_IN_TRANSACTION = Reply(503, "5.5.1", "AUTH not allowed during a mail transaction")
AUTH_NEEDS_EHLO = Reply(503, "5.5.1", "send EHLO first")
AUTH_MECHANISM = Reply(504, "5.5.4", "unrecognized authentication type")  # RFC 4954 §6
AUTH_CANCELLED = Reply(501, "5.0.0", "authentication cancelled")  # RFC 4954 §4
AUTH_BAD_BASE64 = Reply(501, "5.5.2", "cannot decode response")  # RFC 4954 §4
AUTH_SYNTAX = Reply(501, "5.5.4", "syntax: AUTH mechanism [initial-response]")

TOO_MANY_ERRORS = Reply(421, "4.7.0", "too many errors; closing")
EARLY_TALKER = Reply(554, "5.5.0", "SMTP protocol violation: talked before the greeting")


def timeout(hostname: str) -> Reply:
    return Reply(421, "4.4.2", f"{hostname} timeout exceeded; closing")  # RFC 5321 §4.5.3.2


def closing(hostname: str) -> Reply:
    return Reply(221, "2.0.0", f"{hostname} closing connection")


def bdat_ok(size: int) -> Reply:
    return Reply(250, "2.0.0", f"{size} octets received")
