"""config.control: qmail's control files, parsed as qmail parses them, cached by stat."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from quailmail.config.control import Control, FileCache, FileReadError, parse_lines, parse_value


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "control").mkdir()
    return tmp_path


def write(root: Path, name: str, text: str) -> None:
    (root / "control" / name).write_text(text)


def test_value_is_first_line_trailing_space_stripped(root: Path) -> None:
    write(root, "me", "mx.example.com \t\nsecond line\n")
    c = Control(root)
    assert c.value("me") == "mx.example.com"
    assert c.value("missing") is None
    assert c.value("missing", "dflt") == "dflt"


def test_value_keeps_a_hash_as_qmail_does() -> None:
    assert parse_value(b"#notacomment\n") == "#notacomment"
    assert parse_value(b"") == ""


def test_int_value_and_flag(root: Path) -> None:
    write(root, "databytes", "1000\n")
    write(root, "bad", "lots\n")
    write(root, "on", "1\n")
    write(root, "off", "0\n")
    c = Control(root)
    assert c.int_value("databytes", 0) == 1000
    assert c.int_value("bad", 7) == 7
    assert c.int_value("missing", 7) == 7
    assert c.flag("on")
    assert not c.flag("off")
    assert not c.flag("missing")


def test_numbers_are_read_as_control_readint_reads_them(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(root, "databytes", "2000 # bytes\n")  # the digits it starts with
    write(root, "timeoutsmtpd", "-5\n")  # no digit first: the default
    write(root, "queuelifetime", "9" * 5000 + "\n")  # saturates, no traceback
    write(root, "zero", "0\n")
    c = Control(root)
    with caplog.at_level("WARNING", logger="quailmail.control"):
        assert c.int_value("databytes", 0) == 2000
        for _ in range(3):
            assert c.int_value("timeoutsmtpd", 1200) == 1200
        assert c.int_value("queuelifetime", 1) == 10**19
        assert c.int_value("zero", 1200) == 0
        assert c.int_value("zero", 1200, minimum=1) == 1200
    said = [r.getMessage() for r in caplog.records]
    assert said == [  # once per version of each file
        "control/timeoutsmtpd: '-5' is not a number; the default is used",
        "control/zero: 0 is below 1; the default is used",
    ]


def test_lists_skip_comments_and_blanks() -> None:
    data = b"# hosted\nexample.com\n\n  example.net  \r\n#example.org\n"
    assert parse_lines(data) == ("example.com", "example.net")


def test_domains_are_case_insensitive(root: Path) -> None:
    write(root, "rcpthosts", "Example.COM\n")
    c = Control(root)
    assert c.rcpthosts_match("example.com")
    assert c.rcpthosts_match("EXAMPLE.com")
    assert not c.rcpthosts_match("example.org")


def test_rcpthosts_wildcards_and_morercpthosts(root: Path) -> None:
    write(root, "rcpthosts", ".sub.example.com\n")
    write(root, "morercpthosts", "example.net\n")
    c = Control(root)
    assert c.rcpthosts_match("a.sub.example.com")
    assert c.rcpthosts_match("b.a.sub.example.com")
    assert not c.rcpthosts_match("sub.example.com")  # qmail: ".x" is subdomains only
    assert not c.rcpthosts_match("evilsub.example.com")
    assert c.rcpthosts_match("example.net")
    assert not c.rcpthosts_match("example.net.evil.org")


def test_missing_rcpthosts_accepts_nothing(root: Path) -> None:
    assert not Control(root).rcpthosts_match("example.com")


def test_locals_exact(root: Path) -> None:
    write(root, "locals", "Mx.Example.com\n")
    c = Control(root)
    assert c.is_local("mx.example.com")
    assert not c.is_local("a.mx.example.com")


def test_virtualdomains_lookup_order(root: Path) -> None:
    write(
        root,
        "virtualdomains",
        "\n".join(
            [
                ":catchall",
                ".example.com:wild",
                ".b.example.com:wildb",
                "a.b.example.com:exact",
                "joe@a.b.example.com:joe-prefix",
                "Except.Example.com:",
                "# comment:ignored",
                "no colon line",
            ]
        ),
    )
    c = Control(root)
    assert c.virtualdomain("joe", "a.b.example.com") == "joe-prefix"
    assert c.virtualdomain("JOE", "A.B.example.com") == "joe-prefix"
    assert c.virtualdomain("ann", "a.b.example.com") == "exact"
    assert c.virtualdomain("ann", "c.b.example.com") == "wildb"  # longest suffix first
    assert c.virtualdomain("ann", "x.example.com") == "wild"
    assert c.virtualdomain("ann", "except.example.com") == ""  # an exception line
    assert c.virtualdomain("ann", "example.org") == "catchall"
    assert c.virtualdomain("ann", "example.com") == "catchall"  # ".example.com" is subdomains


def test_virtualdomains_none_when_no_line(root: Path) -> None:
    write(root, "virtualdomains", "example.com:example.com\n")
    c = Control(root)
    assert c.virtualdomain("x", "example.org") is None
    assert Control(root / "nowhere").virtualdomain("x", "example.com") is None


def test_an_edit_is_seen_without_restart(root: Path) -> None:
    c = Control(root)
    write(root, "rcpthosts", "example.com\n")
    assert c.rcpthosts_match("example.com")
    path = root / "control" / "rcpthosts"
    # Same size, same second: the inode or mtime_ns still differs.  Force the
    # worst case: same size, mtime set back to the old value, new content.
    st = path.stat()
    path.write_text("example.org\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert not c.rcpthosts_match("example.com")
    assert c.rcpthosts_match("example.org")


def test_a_replacement_by_rename_is_seen(root: Path) -> None:
    c = Control(root)
    write(root, "locals", "a.example\n")
    assert c.is_local("a.example")
    tmp = root / "control" / "locals.tmp"
    tmp.write_text("b.example\n")
    st = (root / "control" / "locals").stat()
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime and size
    tmp.replace(root / "control" / "locals")
    assert c.is_local("b.example")
    assert not c.is_local("a.example")


def test_cache_parses_once(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("x\n")
    calls: list[bytes] = []

    def parse(data: bytes) -> int:
        calls.append(data)
        return len(calls)

    cache = FileCache()
    assert cache.get(path, parse, 0) == 1
    assert cache.get(path, parse, 0) == 1
    assert len(calls) == 1
    path.unlink()
    assert cache.get(path, parse, 0) == 0


def test_unreadable_file_is_an_error_not_empty(tmp_path: Path) -> None:
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / "rcpthosts").mkdir()  # a directory: cannot be read
    with pytest.raises(FileReadError, match=r"cannot read .*/rcpthosts: Is a directory"):
        Control(tmp_path).rcpthosts_match("example.com")
