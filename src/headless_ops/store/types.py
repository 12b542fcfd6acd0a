"""Column types that behave the same on both engines."""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, String, literal_column
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator, TypeEngine

from headless_ops.timeutil import ensure_utc

__all__ = ["JsonType", "UtcDateTime", "json_dumps", "json_loads", "json_text"]

_scan = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # stub says class


def json_loads(text: str | bytes) -> Any:
    """``json.loads`` for what this store wrote, by the C scanner directly.

    The scheduler decodes a few JSON columns per operation; ``json.loads`` spends most of its
    time around its C scanner (type checks, a regular expression for leading and trailing
    blanks). Anything the fast path does not take whole goes to ``json.loads``. psycopg
    hands PostgreSQL's JSON over as UTF-8 bytes (``json.loads`` would first guess their
    encoding).
    """
    if isinstance(text, bytes):
        text = text.decode()
    if text == "{}":
        return {}
    if isinstance(text, str):
        try:
            value, end = _scan(text, 0)
        except StopIteration:
            pass
        else:
            if end == len(text):
                return value
    return json.loads(text)


def json_dumps(value: Any) -> str:
    """``json.dumps``, with the empty object (most results and labels) spelled at once."""
    if type(value) is dict and not value:
        return "{}"
    return json.dumps(value)


#: JSON everywhere; JSONB on PostgreSQL (smaller, indexable).
JsonType: TypeEngine[Any] = JSON().with_variant(JSONB(), "postgresql")


def _sqlite_bind(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime bound to a UtcDateTime column")
    # Exactly SQLAlchemy's SQLite DATETIME format, produced by C code in one call.
    return value.astimezone(UTC).isoformat(sep=" ", timespec="microseconds")[:26]


def _sqlite_result(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        # Parsed with its offset in one C call: ``.replace(tzinfo=…)`` costs 5x the parse.
        return datetime.fromisoformat(value + "+00:00")
    except ValueError:
        return datetime.fromisoformat(value).replace(tzinfo=UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out, on SQLite (text) and PostgreSQL (timestamptz).

    SQLite keeps ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC, which sorts and compares correctly
    as text; a naive value is refused rather than guessed. On SQLite the conversion is one
    C-level call each way (these columns are on the scheduler's hot path).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return _sqlite_bind
        return super().bind_processor(dialect)

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return _sqlite_result
        return super().result_processor(dialect, coltype)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime bound to a UtcDateTime column")
        return ensure_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else ensure_utc(value)


class json_text(FunctionElement[str]):
    """The text of a JSON column's top-level ``key``, with the key written into the SQL.

    ``column ->> 'key'`` on PostgreSQL, ``json_extract(column, '$."key"')`` on SQLite. An
    expression index on it is used by a query on it: SQLAlchemy's ``column["key"]`` binds
    the key as a parameter, which neither engine matches with an indexed expression.
    """

    type = String()
    inherit_cache = True
    name = "json_text"

    def __init__(self, column: ColumnElement[Any], key: str) -> None:
        if not key.isidentifier():
            raise ValueError(f"not a plain JSON key: {key!r}")
        # A literal column, not a bound value: the key is part of the statement's cache key.
        super().__init__(column, literal_column(key))


def _json_text_parts(element: json_text, compiler: SQLCompiler, **kw: Any) -> tuple[str, str]:
    column, key = element.clauses.clauses
    return compiler.process(column, **kw), str(getattr(key, "name", ""))


@compiles(json_text, "sqlite")
def _json_text_sqlite(element: json_text, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = _json_text_parts(element, compiler, **kw)
    return f"json_extract({column}, '$.\"{key}\"')"


@compiles(json_text, "postgresql")
def _json_text_postgresql(element: json_text, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = _json_text_parts(element, compiler, **kw)
    return f"({column} ->> '{key}')"
