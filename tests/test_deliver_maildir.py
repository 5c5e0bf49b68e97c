"""Maildir delivery (maildir(5), qmail-local(8)) on real directories."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from quailmail.config.users import make_maildir
from quailmail.deliver.maildir import deliver_maildir, unique_name

MSG = b"Subject: hi\n\nbody\n"


def _maildir(tmp_path: Path) -> Path:
    md = tmp_path / "Maildir"
    make_maildir(md)
    return md


def test_delivers_into_new_with_return_path_and_delivered_to(tmp_path: Path) -> None:
    md = _maildir(tmp_path)
    out = deliver_maildir(md, [MSG], delivered_to="joe@example.org", return_path="a@b.example")
    assert out.kind == "ok"
    files = list((md / "new").iterdir())
    assert [str(f) for f in files] == [out.reason]
    assert files[0].read_bytes() == (
        b"Return-Path: <a@b.example>\nDelivered-To: joe@example.org\n" + MSG
    )
    assert list((md / "tmp").iterdir()) == []
    assert list((md / "cur").iterdir()) == []


def test_null_sender_and_chunks(tmp_path: Path) -> None:
    md = _maildir(tmp_path)
    out = deliver_maildir(md, [b"Subject: x\n", b"\n", b"y\n"], delivered_to=None, return_path="")
    assert Path(out.reason).read_bytes() == b"Return-Path: <>\nSubject: x\n\ny\n"


def test_unique_name_form() -> None:
    name = unique_name(1700000000.25)
    assert re.fullmatch(r"1700000000\.M250000P\d+Q\d+\.[^/:]+", name)


def test_names_unique_under_concurrency(tmp_path: Path) -> None:
    md = _maildir(tmp_path)
    with ThreadPoolExecutor(16) as pool:
        outs = list(
            pool.map(
                lambda _: deliver_maildir(md, [MSG], delivered_to=None, return_path=None),
                range(200),
            )
        )
    assert all(o.kind == "ok" for o in outs)
    assert len(list((md / "new").iterdir())) == 200


def test_missing_maildir_is_temporary(tmp_path: Path) -> None:
    out = deliver_maildir(tmp_path / "nope", [MSG], delivered_to=None, return_path=None)
    assert out.kind == "temporary"
    assert "does not exist" in out.reason
