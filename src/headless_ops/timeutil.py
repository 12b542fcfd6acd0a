"""UTC time: one clock for the whole program, ISO 8601 with ``Z`` on the wire."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["ensure_utc", "iso", "utcnow"]


def utcnow() -> datetime:
    """Timezone-aware now in UTC (microsecond precision, bound from Python, never SQL)."""
    return datetime.now(UTC)


def ensure_utc(value: datetime) -> datetime:
    """Attach UTC to a naive value read back from SQLite, or convert an aware one."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    """``2024-01-15T10:30:00Z``; microseconds only when present."""
    if value is None:
        return None
    value = ensure_utc(value)
    # strftime's %Y does not pad years before 1000 on glibc ("1-01-01").
    text = f"{value.year:04d}" + value.strftime("-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"
