"""The store's fast value codecs agree with the slow, obvious ones: SQLite timestamps and
the JSON of the JSON columns."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headless_ops.store.types import _sqlite_bind, _sqlite_result, json_dumps, json_loads

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300)
@given(JSON_VALUES)
def test_json_round_trip_matches_the_standard_library(value: object) -> None:
    text = json_dumps(value)
    assert text == json.dumps(value)
    assert json_loads(text) == json.loads(text)
    # As psycopg hands PostgreSQL's JSON over: UTF-8 bytes.
    assert json_loads(text.encode()) == json.loads(text)
    assert json_loads(json.dumps(value, ensure_ascii=False).encode()) == json.loads(text)


@pytest.mark.parametrize("text", [" {}", "{} ", "\n[1, 2]\n", '"x"', "1e3", "null", "[]"])
def test_json_loads_takes_what_json_loads_takes(text: str) -> None:
    assert json_loads(text) == json.loads(text)
    assert json_loads(text.encode()) == json.loads(text)


@pytest.mark.parametrize("text", ["", "{", '{"a": 1}x', "{} {}", "NaNx"])
def test_json_loads_refuses_what_json_loads_refuses(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    with pytest.raises(json.JSONDecodeError):
        json_loads(text)


@settings(max_examples=300)
@given(
    st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
    )
)
def test_sqlite_timestamps_round_trip_as_aware_utc(value: datetime) -> None:
    back = _sqlite_result(_sqlite_bind(value))
    assert back == value
    assert back is not None and back.utcoffset() == timedelta(0)


def test_sqlite_timestamps_written_by_others_are_read() -> None:
    # Without microseconds (SQLite's own CURRENT_TIMESTAMP) and with an explicit offset.
    assert _sqlite_result("2026-11-26 07:35:27") == datetime(2026, 11, 26, 7, 35, 27, tzinfo=UTC)
    assert _sqlite_result("2026-11-26 07:35:27.5+00:00") == datetime(
        2026, 11, 26, 7, 35, 27, 500000, tzinfo=UTC
    )
    assert _sqlite_result(None) is None


def test_json_text_writes_its_key_into_the_sql_on_both_engines() -> None:
    from sqlalchemy import column, select
    from sqlalchemy.dialects import postgresql, sqlite

    from headless_ops.store.types import json_text

    query = select(column("x")).where(json_text(column("connection"), "serial_number") == "A")
    assert "json_extract(connection, '$.\"serial_number\"') = ?" in str(
        query.compile(dialect=sqlite.dialect())
    )
    assert "(connection ->> 'serial_number') = %(param_1)s" in str(
        query.compile(dialect=postgresql.dialect())
    )
    # Two keys, two statements (the key is part of the cache key, not a parameter).
    other = select(column("x")).where(json_text(column("connection"), "oui") == "A")
    assert "'oui'" in str(other.compile(dialect=postgresql.dialect()))
    key, other_key = query._generate_cache_key(), other._generate_cache_key()
    assert key is not None and other_key is not None and key.key != other_key.key
    for bad in ("a'b", "a.b", ""):
        with pytest.raises(ValueError, match="not a plain JSON key"):
            json_text(column("connection"), bad)
