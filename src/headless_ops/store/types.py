"""Column types that behave the same on both engines."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from headless_ops.timeutil import ensure_utc

__all__ = ["JsonType", "UtcDateTime"]

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
