"""Parsing the arguments of MAIL, RCPT, BDAT and AUTH into values or replies.

Pure functions: each returns what it parsed or the `Reply` that refuses it
(chasquid's handlers return their answer).  Which parameters are known depends
on what was advertised, handed in as a `SessionConfig` and flags.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from quailmail.core.reply import Reply
from quailmail.smtp import replies
from quailmail.smtp.config import SessionConfig
from quailmail.smtp.events import Params
from quailmail.smtp.paths import Path, PathError, parse_path

# esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"); esmtp-value =
# 1*(%d33-60 / %d62-126), widened to UTF-8 by RFC 6531 §3.3.
_PARAM = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*)(?:=([\x21-\x3c\x3e-\x7e\u0080-\U0010ffff]+))?\Z")
_BDAT = re.compile(r"(\d{1,18})(?: +(LAST))? *\Z", re.IGNORECASE)
_BODY_VALUES = frozenset({"7BIT", "8BITMIME", "BINARYMIME"})


@dataclass(frozen=True, slots=True)
class MailArgs:
    path: Path
    params: Params
    smtputf8: bool
    body: str  # "7BIT", "8BITMIME" or "BINARYMIME"


def _params(text: str) -> Params | Reply:
    params: Params = {}
    if text and not text.startswith(" "):
        return replies.SYNTAX_PARAM
    for word in text.split():
        m = _PARAM.match(word)
        if m is None:
            return replies.SYNTAX_PARAM
        key = m[1].upper()
        if key in params:
            return replies.SYNTAX_PARAM
        params[key] = m[2]
    return params


def _path(text: str, prefix: str, *, mail: bool) -> tuple[Path, Params] | Reply:
    """``FROM:<path> params`` / ``TO:<path> params``.  A space after the colon
    is tolerated (common, harmless); the angle brackets are required (RFC 5321
    §4.1.2, Postfix's strict_rfc821_envelopes)."""
    syntax = replies.SYNTAX_MAIL if mail else replies.SYNTAX_RCPT
    if text[: len(prefix)].upper() != prefix:
        return syntax
    rest = text[len(prefix) :].lstrip(" ")
    try:
        path, tail = parse_path(rest, null_ok=mail, postmaster_ok=not mail)
    except PathError as e:
        # RFC 3463: X.1.7 bad sender mailbox syntax, X.1.3 bad destination.
        return Reply(501, "5.1.7" if mail else "5.1.3", f"bad address syntax: {e}")
    params = _params(tail)
    if isinstance(params, Reply):
        return params
    return path, params


def mail_args(text: str, config: SessionConfig, *, extended: bool, auth: bool) -> MailArgs | Reply:
    """The argument of MAIL (``FROM:<…> [params]``).  ``auth``: AUTH was
    advertised, so its ``AUTH=`` parameter is known (RFC 4954 §5)."""
    parsed = _path(text, "FROM:", mail=True)
    if isinstance(parsed, Reply):
        return parsed
    path, params = parsed
    if params and not extended:  # parameters are ESMTP (RFC 5321 §4.1.1.2)
        return replies.UNKNOWN_PARAM
    body = "7BIT"
    for key, value in params.items():
        if key == "SIZE" and config.size:
            if value is None or not value.isdigit() or len(value) > 18:
                return replies.SYNTAX_PARAM
            if config.max_message_size and int(value) > config.max_message_size:
                return replies.TOO_BIG_DECLARED
        elif key == "BODY" and config.eightbitmime:
            body = (value or "").upper()
            if body not in _BODY_VALUES:
                return replies.SYNTAX_PARAM
            if body == "BINARYMIME" and not (config.chunking and config.binarymime):
                return replies.UNKNOWN_PARAM
        elif key == "SMTPUTF8" and config.smtputf8:
            if value is not None:
                return replies.SYNTAX_PARAM
        elif key == "AUTH" and auth:
            if value is None:
                return replies.SYNTAX_PARAM
        else:
            return replies.UNKNOWN_PARAM
    smtputf8 = "SMTPUTF8" in params
    if path.utf8 and not smtputf8:
        return replies.NEED_SMTPUTF8
    return MailArgs(path, params, smtputf8, body)


def rcpt_args(text: str, *, smtputf8: bool) -> tuple[Path, Params] | Reply:
    """The argument of RCPT (``TO:<…>``).  No RCPT parameter is supported
    (DSN is not advertised), so any is 555."""
    parsed = _path(text, "TO:", mail=False)
    if isinstance(parsed, Reply):
        return parsed
    path, params = parsed
    if params:
        return replies.UNKNOWN_PARAM
    if path.utf8 and not smtputf8:
        return replies.NEED_SMTPUTF8
    return path, params


def bdat_args(text: str) -> tuple[int, bool] | None:
    """``size [LAST]`` (RFC 3030 §2); None when unparseable."""
    m = _BDAT.match(text)
    if m is None:
        return None
    return int(m[1]), m[2] is not None


def ehlo_keywords(config: SessionConfig, *, tls_active: bool, auth: list[str]) -> list[str]:
    """The EHLO reply's keyword lines (RFC 5321 §4.1.1.1); ``auth``: the
    mechanisms to offer now (none before TLS if it is required, none once
    authenticated)."""
    c = config
    words = []
    if c.pipelining:
        words.append("PIPELINING")
    if c.size:
        words.append(f"SIZE {c.max_message_size}")  # 0: no fixed maximum (RFC 1870 §4)
    if c.eightbitmime:
        words.append("8BITMIME")
    if c.smtputf8:
        words.append("SMTPUTF8")
    if c.enhancedstatuscodes:
        words.append("ENHANCEDSTATUSCODES")
    if c.chunking:
        words.append("CHUNKING")
        if c.binarymime:
            words.append("BINARYMIME")
    if c.tls_available and not tls_active:
        words.append("STARTTLS")
    if auth:
        words.append("AUTH " + " ".join(auth))
    return words
