"""Maintenance windows: CRUD, validation through the domain type, and re-evaluation of the
operations waiting for a window when it changes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError
from sqlalchemy import delete, func, insert, select, update

from headless_ops.domain.lifecycle import Status
from headless_ops.domain.operations import field_errors
from headless_ops.domain.windows import MaintenanceWindow, WindowError
from headless_ops.errors import Conflict, FieldError, InvalidInput, NotFound
from headless_ops.services.requests import UtcTimestamp, WindowName
from headless_ops.store.db import Database
from headless_ops.store.scheduling import window_from_row
from headless_ops.store.schema import devices, maintenance_windows, operations
from headless_ops.timeutil import iso, utcnow

__all__ = ["NewWindow", "WindowService", "WindowUpdate"]


class WindowRange(BaseModel):
    """``{"start": "2026-12-01T01:00:00Z", "end": "2026-12-01T05:00:00Z"}``"""

    model_config = ConfigDict(extra="forbid", strict=True)

    start: UtcTimestamp
    end: UtcTimestamp


class NewWindow(BaseModel):
    """A recurring window ``{"name": "nightly", "timezone": "Europe/Paris", "cron": "0 2 * * *",
    "duration_minutes": 120}`` or one-off ranges ``{"name": "freeze-lift", "ranges": [...]}``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: WindowName
    timezone: Annotated[StrictStr, Field(min_length=1, max_length=64)] = "UTC"
    cron: Annotated[StrictStr, Field(min_length=9, max_length=128)] | None = None
    duration_minutes: Annotated[StrictInt, Field(ge=1, le=60 * 24 * 31)] | None = None
    ranges: Annotated[list[WindowRange], Field(max_length=1000)] = Field(default_factory=list)


class WindowUpdate(BaseModel):
    """Replace the schedule of a window (every field as in :class:`NewWindow` but ``name``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    timezone: Annotated[StrictStr, Field(min_length=1, max_length=64)] = "UTC"
    cron: Annotated[StrictStr, Field(min_length=9, max_length=128)] | None = None
    duration_minutes: Annotated[StrictInt, Field(ge=1, le=60 * 24 * 31)] | None = None
    ranges: Annotated[list[WindowRange], Field(max_length=1000)] = Field(default_factory=list)


def _domain(name: str, body: NewWindow | WindowUpdate) -> MaintenanceWindow:
    try:
        return MaintenanceWindow(
            name=name,
            timezone=body.timezone,
            cron=body.cron,
            duration=timedelta(minutes=body.duration_minutes) if body.duration_minutes else None,
            ranges=tuple((r.start, r.end) for r in body.ranges),
        )
    except WindowError as exc:
        # The API's names for the definition's fields (400s name each bad field).
        names = [{"duration": "duration_minutes"}.get(f, f) for f in exc.fields] or [""]
        raise InvalidInput(
            f"invalid maintenance window: {exc}", [FieldError(n, str(exc)) for n in names]
        ) from None


def _check_margin(window: MaintenanceWindow, margin: timedelta) -> None:
    # A recurring window shorter than the start margin would never let anything start.
    if window.duration is not None and window.duration <= margin:
        minutes = margin.total_seconds() / 60
        raise InvalidInput(
            "invalid maintenance window",
            [
                FieldError(
                    "duration_minutes",
                    f"must be longer than the start margin ({minutes:g} minutes): "
                    "no operation starts with less than the margin left",
                )
            ],
        )


def _values(window: MaintenanceWindow) -> dict[str, Any]:
    return {
        "timezone": window.timezone,
        "cron": window.cron,
        "duration_s": int(window.duration.total_seconds()) if window.duration else None,
        "ranges": [[iso(a), iso(b)] for a, b in window.ranges],
    }


@dataclass
class WindowService:
    """Maintenance window use cases."""

    db: Database
    margin: timedelta = timedelta(0)
    clock: Callable[[], datetime] = utcnow
    listeners: list[Callable[[], None]] = field(default_factory=list)

    @staticmethod
    def parse(model: type[NewWindow] | type[WindowUpdate], payload: object) -> Any:
        """Validate a body."""
        if not isinstance(payload, dict):
            raise InvalidInput("expected a JSON object", [FieldError("", "expected an object")])
        try:
            return model.model_validate(payload)
        except ValidationError as exc:
            raise InvalidInput("invalid maintenance window", field_errors(exc)) from None

    def render(self, row: Any) -> dict[str, Any]:
        """The JSON of a window, with whether it is open and when operations may next start."""
        window = window_from_row(row)
        now = self.clock()
        return {
            "name": row.name,
            "timezone": row.timezone,
            "cron": row.cron,
            "duration_minutes": row.duration_s // 60 if row.duration_s else None,
            "ranges": [{"start": a, "end": b} for a, b in row.ranges or []],
            "open_now": window.can_start(now),
            "next_start": iso(window.next_start(now, self.margin)),
            "created_at": iso(row.created_at),
            "updated_at": iso(row.updated_at),
        }

    async def create(self, tenant_id: str, body: NewWindow) -> Any:
        """Store a window; Conflict when the name is taken."""
        window = _domain(body.name, body)
        _check_margin(window, self.margin)
        now = self.clock()
        async with self.db.write() as conn:
            if await self._row(conn, tenant_id, body.name) is not None:
                raise Conflict(f"a maintenance window named {body.name!r} already exists")
            await conn.execute(
                insert(maintenance_windows).values(
                    tenant_id=tenant_id,
                    name=body.name,
                    created_at=now,
                    updated_at=now,
                    **_values(window),
                )
            )
            return await self._row(conn, tenant_id, body.name)

    async def list(self, tenant_id: str, limit: int, offset: int) -> tuple[int, list[Any]]:
        """``(count, page)`` by name."""
        mw = maintenance_windows.c
        async with self.db.read() as conn:
            count = (
                await conn.execute(select(func.count()).where(mw.tenant_id == tenant_id))
            ).scalar_one()
            rows = (
                await conn.execute(
                    select(maintenance_windows)
                    .where(mw.tenant_id == tenant_id)
                    .order_by(mw.name)
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
        return int(count), list(rows)

    async def get(self, tenant_id: str, name: str) -> Any:
        """One window; NotFound for another tenant's."""
        async with self.db.read() as conn:
            row = await self._row(conn, tenant_id, name)
        if row is None:
            raise NotFound(f"maintenance window {name!r} does not exist")
        return row

    async def update(self, tenant_id: str, name: str, body: WindowUpdate) -> Any:
        """Replace a window's schedule; operations waiting for it are re-evaluated at once."""
        window = _domain(name, body)
        _check_margin(window, self.margin)
        now = self.clock()
        async with self.db.write() as conn:
            if await self._row(conn, tenant_id, name) is None:
                raise NotFound(f"maintenance window {name!r} does not exist")
            mw = maintenance_windows.c
            await conn.execute(
                update(maintenance_windows)
                .where(mw.tenant_id == tenant_id, mw.name == name)
                .values(updated_at=now, **_values(window))
            )
            o = operations.c
            await conn.execute(
                update(operations)
                .where(
                    o.tenant_id == tenant_id,
                    o.status == Status.PENDING.value,
                    o.wait_reason == "maintenance_window",
                )
                .values(run_after=now)
            )
            row = await self._row(conn, tenant_id, name)
        for listener in self.listeners:
            listener()
        return row

    async def delete(self, tenant_id: str, name: str) -> None:
        """Delete; Conflict while devices or unfinished operations name it."""
        async with self.db.write() as conn:
            if await self._row(conn, tenant_id, name) is None:
                raise NotFound(f"maintenance window {name!r} does not exist")
            used = (
                await conn.execute(
                    select(func.count()).where(
                        devices.c.tenant_id == tenant_id, devices.c.maintenance_window == name
                    )
                )
            ).scalar_one()
            o = operations.c
            waiting = (
                await conn.execute(
                    select(func.count()).where(
                        o.tenant_id == tenant_id,
                        o.maintenance_window == name,
                        o.status.in_(["scheduled", "pending", "running"]),
                    )
                )
            ).scalar_one()
            if used or waiting:
                raise Conflict(
                    f"maintenance window {name!r} is used by {used} device(s) and "
                    f"{waiting} unfinished operation(s)"
                )
            mw = maintenance_windows.c
            await conn.execute(
                delete(maintenance_windows).where(mw.tenant_id == tenant_id, mw.name == name)
            )

    async def exists(self, tenant_id: str, name: str) -> bool:
        """Whether the tenant has a window called ``name``."""
        async with self.db.read() as conn:
            return await self._row(conn, tenant_id, name) is not None

    @staticmethod
    async def _row(conn: Any, tenant_id: str, name: str) -> Any:
        mw = maintenance_windows.c
        return (
            await conn.execute(
                select(maintenance_windows).where(mw.tenant_id == tenant_id, mw.name == name)
            )
        ).first()
