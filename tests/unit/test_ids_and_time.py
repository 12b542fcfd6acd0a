"""Identifiers (ids.py) and UTC time rendering (timeutil.py).

Ids carry their prefix and a fixed-length Crockford-base32 body; sortable ids sort by
creation time (so "newest first" is a primary-key scan); ids do not repeat. ``iso`` renders
UTC with ``Z``, microseconds only when present, four-digit years.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headless_ops.ids import new_id, new_sortable_id
from headless_ops.timeutil import ensure_utc, iso, utcnow

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford: no i, l, o, u
BODY = re.compile(f"^[{ALPHABET}]+$")


def _millis(sortable: str) -> int:
    """The creation time encoded in the first 10 characters (48 bits) of the body."""
    body = sortable.split("_", 1)[1]
    value = 0
    for ch in body:
        value = value * 32 + ALPHABET.index(ch)
    return value >> 80


@pytest.mark.parametrize("prefix", ["op", "dev", "tok", "ten"])
def test_prefixes_and_shape(prefix: str) -> None:
    sortable = new_sortable_id(prefix)
    random_id = new_id(prefix)
    for value, length in ((sortable, 26), (random_id, 20)):
        head, _, body = value.partition("_")
        assert head == prefix
        assert len(body) == length
        assert BODY.match(body), value


def test_new_id_length_follows_bytes() -> None:
    # 8 random bytes = 64 bits = 13 base32 characters.
    assert len(new_id("ten", 8)) == len("ten_") + 13


def test_sortable_id_encodes_the_creation_time() -> None:
    before = time.time_ns() // 1_000_000
    value = new_sortable_id("op")
    after = time.time_ns() // 1_000_000
    assert before <= _millis(value) <= after


def test_sortable_ids_sort_by_creation_time() -> None:
    made = []
    for _ in range(8):
        made.append(new_sortable_id("op"))
        time.sleep(0.002)  # distinct milliseconds; within one the order is random
    assert sorted(made) == made
    assert sorted(made, reverse=True)[0] == made[-1]


def test_alphabet_is_in_ascii_order() -> None:
    # So that string order of the fixed-length body equals numeric (time) order.
    assert list(ALPHABET) == sorted(ALPHABET)


@pytest.mark.parametrize(
    "make", [lambda: new_sortable_id("op"), lambda: new_id("dev")], ids=["sortable", "random"]
)
def test_ids_are_unique(make: Callable[[], str]) -> None:
    ids = [make() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)


# --- time ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (datetime(2024, 1, 15, 10, 30, tzinfo=UTC), "2024-01-15T10:30:00Z"),
        (datetime(2024, 1, 15, 10, 30, 0, 500_000, tzinfo=UTC), "2024-01-15T10:30:00.5Z"),
        (datetime(2024, 1, 15, 10, 30, 0, 123_456, tzinfo=UTC), "2024-01-15T10:30:00.123456Z"),
        (datetime(2024, 1, 15, 10, 30, 0, 1, tzinfo=UTC), "2024-01-15T10:30:00.000001Z"),
        # Offsets are converted to UTC.
        (
            datetime(2024, 1, 16, 4, 0, tzinfo=timezone(timedelta(hours=2))),
            "2024-01-16T02:00:00Z",
        ),
        (
            datetime(2024, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),
            "2023-12-31T23:30:00Z",
        ),
        # Naive values (SQLite hands them back) are UTC.
        (datetime(2024, 1, 15, 10, 30), "2024-01-15T10:30:00Z"),
        # Years before 1000 keep four digits, as ISO 8601 requires.
        (datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00Z"),
        (datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC), "0999-12-31T23:59:59Z"),
        (datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), "9999-12-31T23:59:59.999999Z"),
    ],
)
def test_iso(value: datetime, text: str) -> None:
    assert iso(value) == text


def test_iso_none() -> None:
    assert iso(None) is None


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.builds(
            timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
        ),
    )
)
def test_iso_round_trips_to_the_same_instant(value: datetime) -> None:
    text = iso(value)
    assert text is not None
    assert text.endswith("Z")
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$", text), text
    assert datetime.fromisoformat(text.replace("Z", "+00:00")) == value


def test_utcnow_is_aware_utc() -> None:
    now = utcnow()
    assert now.tzinfo is UTC
    assert abs(now.timestamp() - time.time()) < 5


def test_ensure_utc() -> None:
    naive = datetime(2024, 1, 15, 10, 30)
    assert ensure_utc(naive) == datetime(2024, 1, 15, 10, 30, tzinfo=UTC)
    aware = datetime(2024, 1, 15, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    converted = ensure_utc(aware)
    assert converted.utcoffset() == timedelta(0)
    assert converted == aware
