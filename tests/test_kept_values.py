"""Pure parses kept by their input text (a sender's fields repeat), but
never a long one: a client must not fill memory with huge header fields."""

from __future__ import annotations

from quailmail.auth.dmarc.author import from_value_domain
from quailmail.auth.dmarc.record import KEPT_RECORD_MAX, parse_record
from quailmail.auth.message import KEPT_FIELD_MAX, address_domain
from quailmail.auth.spf import evaluate


def test_a_from_field_is_kept_by_its_text() -> None:
    value = " Joe <joe@example.com>"
    assert address_domain(value) == ("joe", "example.com")
    assert address_domain(value) is address_domain(value)
    assert from_value_domain(value).domain == "example.com"
    assert from_value_domain(value) is from_value_domain(value)


def test_a_long_field_is_parsed_but_never_kept() -> None:
    long_value = "x" * KEPT_FIELD_MAX + " <joe@example.com>"
    kept = address_domain.cache_info().currsize
    kept_authors = from_value_domain.cache_info().currsize
    assert address_domain(long_value) == ("joe", "example.com")
    assert from_value_domain(long_value).domain == "example.com"
    assert address_domain.cache_info().currsize == kept
    assert from_value_domain.cache_info().currsize == kept_authors


def test_a_big_dns_record_is_parsed_but_never_kept() -> None:
    big = "v=DMARC1; p=reject; rua=" + ",".join(
        f"mailto:r{i}@example.com" for i in range(KEPT_RECORD_MAX // 20)
    )
    kept = parse_record.cache_info().currsize
    assert parse_record(big).p.value == "reject"
    assert parse_record.cache_info().currsize == kept
    txts = (b"v=spf1 -all", b"x" * evaluate._KEPT_TXT_MAX)
    spf_kept = len(evaluate._records)
    assert evaluate._record_for("mailfrom", txts) is not None
    assert len(evaluate._records) == spf_kept
