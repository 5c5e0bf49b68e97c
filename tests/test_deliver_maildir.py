"""Maildir delivery (maildir(5), qmail-local(8)) on real directories."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

from quailmail.config.users import make_maildir
from quailmail.core.outcome import Outcome
from quailmail.deliver.maildir import deliver_maildir, unique_name

MSG = b"Subject: hi\n\nbody\n"


def deliver(md: Path, chunks: list[bytes], **kw: str | None) -> Outcome:
    return asyncio.run(deliver_maildir(md, chunks, **kw))  # type: ignore[arg-type]


def _maildir(tmp_path: Path) -> Path:
    md = tmp_path / "Maildir"
    make_maildir(md)
    return md


def test_delivers_into_new_with_return_path_and_delivered_to(tmp_path: Path) -> None:
    md = _maildir(tmp_path)
    out = deliver(md, [MSG], delivered_to="joe@example.org", return_path="a@b.example")
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
    out = deliver(md, [b"Subject: x\n", b"\n", b"y\n"], delivered_to=None, return_path="")
    assert Path(out.reason).read_bytes() == b"Return-Path: <>\nSubject: x\n\ny\n"


def test_unique_name_form() -> None:
    name = unique_name(1700000000.25)
    assert re.fullmatch(r"1700000000\.M250000P\d+Q\d+\.[^/:]+", name)


def test_names_unique_under_concurrency(tmp_path: Path) -> None:
    md = _maildir(tmp_path)

    async def many() -> list[Outcome]:
        return await asyncio.gather(
            *(deliver_maildir(md, [MSG], delivered_to=None, return_path=None) for _ in range(200))
        )

    outs = asyncio.run(many())
    assert all(o.kind == "ok" for o in outs)
    assert len(list((md / "new").iterdir())) == 200


def test_missing_maildir_is_temporary(tmp_path: Path) -> None:
    out = deliver(tmp_path / "nope", [MSG], delivered_to=None, return_path=None)
    assert out.kind == "temporary"
    assert "does not exist" in out.reason


def test_concurrent_deliveries_share_the_fsync_of_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deliveries into one Maildir at once share fsyncs of new/, and each
    returns only after a sync that began after its own link."""
    import time

    from quailmail.core import syncer as sy

    box = tmp_path / "Maildir"
    for sub in ("tmp", "new", "cur"):
        (box / sub).mkdir(parents=True)
    syncs: list[set[str]] = []
    real = sy.fsync_dir

    def slow_sync(path: str) -> None:
        time.sleep(0.02)  # a disk: long enough for others to pile up
        syncs.append(set(os.listdir(path)))
        real(path)

    monkeypatch.setattr(sy, "fsync_dir", slow_sync)
    names: dict[int, str] = {}
    unsynced: list[int] = []

    async def one(i: int) -> None:
        outcome = await deliver_maildir(box, [b"m %d\n" % i], delivered_to=None, return_path=None)
        names[i] = Path(outcome.reason).name if outcome.is_ok else ""
        # durable: a sync that saw the file had finished before we returned
        if not any(names[i] in seen for seen in syncs):
            unsynced.append(i)

    async def deliver_all() -> None:
        await asyncio.gather(*(one(i) for i in range(20)))

    asyncio.run(deliver_all())
    assert all(names.values()) and len(os.listdir(box / "new")) == 20
    assert unsynced == []
    assert len(syncs) < 20
    assert all((box / "new" / name).read_bytes() == b"m %d\n" % i for i, name in names.items())


def test_a_failed_write_leaves_nothing_in_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk full while writing: temporary, nothing linked, tmp/ cleaned."""
    import errno

    from quailmail.core import syncer as sy

    md = _maildir(tmp_path)

    def full(fd: int, chunks: object) -> None:
        os.close(fd)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sy, "_write_file", full)
    out = deliver(md, [MSG], delivered_to=None, return_path=None)
    assert out.kind == "temporary" and "disk full" in out.reason
    assert os.listdir(md / "new") == [] and os.listdir(md / "tmp") == []
