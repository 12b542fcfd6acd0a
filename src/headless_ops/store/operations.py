"""SQL for operations: insert, fetch, list with filters and a count, cancel."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select

from headless_ops.domain.lifecycle import TERMINAL, Status, allowed_sources
from headless_ops.store.records import OperationRecord
from headless_ops.store.schema import operations

__all__ = [
    "OperationFilter",
    "cancel_waiting",
    "count_active_for_device",
    "get_operation",
    "get_operations",
    "insert_operation",
    "list_operations",
    "new_operation_row",
    "to_record",
]

_FIELDS = [f.name for f in fields(OperationRecord)]


def to_record(row: Row[Any]) -> OperationRecord:
    """An ``OperationRecord`` from a row of the operations table."""
    m = row._mapping
    return OperationRecord(**{name: m[name] for name in _FIELDS})


@dataclass(frozen=True, slots=True)
class OperationFilter:
    """The list filters of the API; ``None`` means "any"."""

    id: str | None = None
    device_id: str | None = None
    status: str | None = None
    operation_type: str | None = None
    scheduled_after: datetime | None = None
    scheduled_before: datetime | None = None

    def apply(self, query: Select[Any], tenant_id: str) -> Select[Any]:
        """``query`` restricted to one tenant and these filters."""
        c = operations.c
        query = query.where(c.tenant_id == tenant_id)
        if self.id is not None:
            query = query.where(c.id == self.id)
        if self.device_id is not None:
            query = query.where(c.device_id == self.device_id)
        if self.status is not None:
            query = query.where(c.status == self.status)
        if self.operation_type is not None:
            query = query.where(c.operation_type == self.operation_type)
        if self.scheduled_after is not None:
            query = query.where(c.scheduled_at >= self.scheduled_after)
        if self.scheduled_before is not None:
            query = query.where(c.scheduled_at < self.scheduled_before)
        return query


_INSERT = insert(operations)


def new_operation_row(
    *,
    op_id: str,
    tenant_id: str,
    device_id: str,
    operation_type: str,
    scheduled_at: datetime,
    now: datetime,
    parameters: dict[str, Any],
    priority: int = 1,
    max_attempts: int = 3,
    expires_at: datetime | None = None,
    maintenance_window: str | None = None,
) -> dict[str, Any]:
    """Every column of a new ``scheduled`` operation (the one place that knows them all)."""
    return {
        "id": op_id,
        "tenant_id": tenant_id,
        "device_id": device_id,
        "operation_type": operation_type,
        "status": Status.SCHEDULED.value,
        "priority": priority,
        "scheduled_at": scheduled_at,
        "run_after": scheduled_at,
        "expires_at": expires_at,
        "maintenance_window": maintenance_window,
        "parameters": parameters,
        "result": None,
        "error": None,
        "attempts": 0,
        "max_attempts": max_attempts,
        "created_at": now,
        "updated_at": now,
        "started_at": None,
        "finished_at": None,
        "lease_owner": None,
        "lease_expires_at": None,
        "lease_version": 0,
        "cancel_requested": False,
        "wait_reason": None,
    }


async def insert_operation(conn: AsyncConnection, values: dict[str, Any]) -> None:
    """Insert one operation row (``values`` holds every column)."""
    # One statement object with bound parameters: compiled once, not rebuilt per request.
    await conn.execute(_INSERT, values)


async def get_operation(
    conn: AsyncConnection, tenant_id: str, op_id: str
) -> OperationRecord | None:
    """One operation of ``tenant_id``, or ``None`` (another tenant's is ``None`` too)."""
    row = (
        await conn.execute(
            select(operations).where(operations.c.id == op_id, operations.c.tenant_id == tenant_id)
        )
    ).first()
    return None if row is None else to_record(row)


async def get_operations(
    conn: AsyncConnection, tenant_id: str, ids: list[str]
) -> list[OperationRecord]:
    """Several operations of ``tenant_id`` by id, newest first."""
    if not ids:
        return []
    rows = (
        await conn.execute(
            select(operations)
            .where(operations.c.tenant_id == tenant_id, operations.c.id.in_(ids))
            .order_by(operations.c.id.desc())
        )
    ).all()
    return [to_record(r) for r in rows]


async def list_operations(
    conn: AsyncConnection, tenant_id: str, flt: OperationFilter, limit: int, offset: int
) -> tuple[int, list[OperationRecord]]:
    """``(count, page)``: the number matching ``flt`` and one page of them, newest first."""
    count_query = flt.apply(select(func.count()).select_from(operations), tenant_id)
    count = int((await conn.execute(count_query)).scalar_one())
    if count <= offset:
        return count, []
    page_query = (
        flt.apply(select(operations), tenant_id)
        .order_by(operations.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    rows = (await conn.execute(page_query)).all()
    return count, [to_record(r) for r in rows]


async def count_active_for_device(conn: AsyncConnection, tenant_id: str, device_id: str) -> int:
    """How many operations of the device have not finished."""
    query = select(func.count()).where(
        operations.c.tenant_id == tenant_id,
        operations.c.device_id == device_id,
        operations.c.status.not_in([s.value for s in TERMINAL]),
    )
    return int((await conn.execute(query)).scalar_one())


async def cancel_waiting(
    conn: AsyncConnection, tenant_id: str, op_id: str, now: datetime, reason: str
) -> bool:
    """Cancel a scheduled or pending operation at once; False if it was not waiting."""
    sources = [s.value for s in allowed_sources(Status.CANCELLED) if s is not Status.RUNNING]
    result = await conn.execute(
        update(operations)
        .where(
            operations.c.id == op_id,
            operations.c.tenant_id == tenant_id,
            operations.c.status.in_(sources),
        )
        .values(
            status=Status.CANCELLED.value,
            updated_at=now,
            finished_at=now,
            error={"code": "cancelled", "message": reason},
        )
    )
    return bool(result.rowcount)


async def request_cancel_running(
    conn: AsyncConnection, tenant_id: str, op_id: str, now: datetime
) -> bool:
    """Flag a running operation for cancellation; its worker ends it. False if not running."""
    result = await conn.execute(
        update(operations)
        .where(
            operations.c.id == op_id,
            operations.c.tenant_id == tenant_id,
            operations.c.status == Status.RUNNING.value,
        )
        .values(cancel_requested=True, updated_at=now)
    )
    return bool(result.rowcount)
