"""SQL for devices."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from headless_ops.store.records import DeviceRecord
from headless_ops.store.schema import devices

__all__ = [
    "DeviceFilter",
    "delete_device",
    "get_device",
    "get_device_by_name",
    "get_devices",
    "insert_device",
    "list_devices",
    "set_status",
    "stale_devices",
    "update_device",
]

_FIELDS = [f.name for f in fields(DeviceRecord)]


def _record(row: Row[Any]) -> DeviceRecord:
    m = row._mapping
    return DeviceRecord(**{name: m[name] for name in _FIELDS})


@dataclass(frozen=True, slots=True)
class DeviceFilter:
    """Device list filters."""

    name: str | None = None
    protocol: str | None = None
    status: str | None = None
    label: tuple[str, str] | None = None


# Built once: every operation created looks its device up (statement building and its cache
# key cost more than the indexed read itself).
_GET_DEVICE = select(devices).where(
    devices.c.tenant_id == bindparam("tenant_id"), devices.c.id == bindparam("device_id")
)


async def get_device(conn: AsyncConnection, tenant_id: str, device_id: str) -> DeviceRecord | None:
    """One device of ``tenant_id`` by id."""
    params = {"tenant_id": tenant_id, "device_id": device_id}
    row = (await conn.execute(_GET_DEVICE, params)).first()
    return None if row is None else _record(row)


async def get_device_by_name(
    conn: AsyncConnection, tenant_id: str, name: str
) -> DeviceRecord | None:
    """One device of ``tenant_id`` by name."""
    row = (
        await conn.execute(
            select(devices).where(devices.c.tenant_id == tenant_id, devices.c.name == name)
        )
    ).first()
    return None if row is None else _record(row)


async def get_devices(
    conn: AsyncConnection, tenant_id: str, ids: set[str]
) -> dict[str, DeviceRecord]:
    """Devices of ``tenant_id`` by id."""
    if not ids:
        return {}
    rows = (
        await conn.execute(
            select(devices).where(devices.c.tenant_id == tenant_id, devices.c.id.in_(sorted(ids)))
        )
    ).all()
    return {r.id: _record(r) for r in rows}


async def list_devices(
    conn: AsyncConnection, tenant_id: str, flt: DeviceFilter, limit: int, offset: int
) -> tuple[int, list[DeviceRecord]]:
    """``(count, page)`` of devices, by name."""

    def where(query: Any) -> Any:
        query = query.where(devices.c.tenant_id == tenant_id)
        if flt.name is not None:
            query = query.where(devices.c.name == flt.name)
        if flt.protocol is not None:
            query = query.where(devices.c.protocol == flt.protocol)
        if flt.status is not None:
            query = query.where(devices.c.status == flt.status)
        if flt.label is not None:
            key, value = flt.label
            query = query.where(devices.c.labels[key].as_string() == value)
        return query

    count = int((await conn.execute(where(select(func.count()).select_from(devices)))).scalar_one())
    if count <= offset:
        return count, []
    page = where(select(devices)).order_by(devices.c.name).limit(limit).offset(offset)
    return count, [_record(r) for r in (await conn.execute(page)).all()]


async def count_devices(conn: AsyncConnection, tenant_id: str) -> int:
    """How many devices ``tenant_id`` has."""
    query = select(func.count()).where(devices.c.tenant_id == tenant_id)
    return int((await conn.execute(query)).scalar_one())


async def insert_device(conn: AsyncConnection, values: dict[str, Any]) -> None:
    """Insert one device row."""
    await conn.execute(insert(devices).values(**values))


async def update_device(
    conn: AsyncConnection, tenant_id: str, device_id: str, values: dict[str, Any]
) -> None:
    """Update columns of one device."""
    await conn.execute(
        update(devices)
        .where(devices.c.tenant_id == tenant_id, devices.c.id == device_id)
        .values(**values)
    )


async def delete_device(conn: AsyncConnection, tenant_id: str, device_id: str) -> bool:
    """Delete one device; False if there was none."""
    result = await conn.execute(
        delete(devices).where(devices.c.tenant_id == tenant_id, devices.c.id == device_id)
    )
    return bool(result.rowcount)


async def set_status(
    conn: AsyncConnection,
    tenant_id: str,
    device_id: str,
    *,
    status: str,
    detail: str | None,
    seen_at: datetime | None,
    firmware_version: str | None,
    now: datetime,
) -> None:
    """Record a status report (``seen_at``/``firmware_version`` kept when not reported)."""
    values: dict[str, Any] = {"status": status, "status_detail": detail, "updated_at": now}
    if seen_at is not None:
        values["last_seen_at"] = seen_at
    if firmware_version is not None:
        values["firmware_version"] = firmware_version
    await update_device(conn, tenant_id, device_id, values)


async def stale_devices(
    conn: AsyncConnection, protocol: str, seen_before: datetime, limit: int
) -> list[DeviceRecord]:
    """Devices of ``protocol`` (every tenant) not seen since ``seen_before``, least recently
    seen first (never seen: first of all)."""
    rows = await conn.execute(
        select(devices)
        .where(
            devices.c.protocol == protocol,
            or_(devices.c.last_seen_at.is_(None), devices.c.last_seen_at < seen_before),
        )
        .order_by(devices.c.last_seen_at.is_not(None), devices.c.last_seen_at)
        .limit(limit)
    )
    return [_record(r) for r in rows.all()]
