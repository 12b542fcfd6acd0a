"""Create, read, list and cancel operations; idempotency; the per-type capability check."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from headless_ops.artifacts.backups import check_location
from headless_ops.config import Settings
from headless_ops.domain.devices import DEFAULT_CAPABILITIES, Protocol
from headless_ops.domain.lifecycle import TERMINAL, Status
from headless_ops.domain.operations import (
    OperationType,
    normalize_operation_type,
    validate_parameters,
)
from headless_ops.errors import Conflict, FieldError, IdempotencyMismatch, InvalidInput, NotFound
from headless_ops.helpers.registry import HelperRegistry
from headless_ops.ids import new_sortable_id
from headless_ops.services.requests import NewOperation
from headless_ops.store import devices as device_store
from headless_ops.store import operations as op_store
from headless_ops.store.db import Database
from headless_ops.store.records import DeviceRecord, OperationRecord
from headless_ops.store.scheduling import WAKE_CHANNEL, insert_events
from headless_ops.store.schema import idempotency_keys, maintenance_windows, operation_events
from headless_ops.timeutil import utcnow

__all__ = ["CreateResult", "OperationService", "OperationView"]


@dataclass(frozen=True, slots=True)
class OperationView:
    """An operation with its device's name (for the by-name endpoint)."""

    op: OperationRecord
    device_name: str | None = None
    #: Transitions and attempts, oldest first (only when asked for).
    history: list[dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class CreateResult:
    """A created operation, or the original one when an Idempotency-Key repeated."""

    view: OperationView
    replayed: bool


def supported_operations(registry: HelperRegistry, protocol: str) -> frozenset[OperationType]:
    """What ``protocol`` can perform: its helper's declaration, else the built-in default."""
    helper = registry.get(protocol)
    if helper is not None:
        return helper.supported_operations
    return DEFAULT_CAPABILITIES.get(Protocol(protocol), frozenset())


class OperationService:
    """Operations use cases over one database."""

    def __init__(
        self,
        db: Database,
        registry: HelperRegistry,
        settings: Settings,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.registry = registry
        self.settings = settings
        self.clock = clock
        #: Called after a change the scheduler should notice (new or cancelled operation).
        self.listeners: list[Callable[[], None]] = []
        #: Called with the id of a running operation whose cancellation was asked.
        self.cancel_listeners: list[Callable[[str], None]] = []

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()

    def notify_listeners(self) -> None:
        """Tell this process's scheduler that operations changed (e.g. a CPE showed up)."""
        self._changed()

    async def _notify_workers(self, conn: AsyncConnection) -> None:
        # Other processes' schedulers LISTEN on this channel (PostgreSQL only).
        if self.db.dialect == "postgresql":
            await conn.execute(select(func.pg_notify(WAKE_CHANNEL, "")))

    async def create(
        self,
        tenant_id: str,
        request: NewOperation,
        *,
        idempotency_key: str | None = None,
    ) -> CreateResult:
        """Validate and store a new ``scheduled`` operation.

        Raises InvalidInput (400), NotFound (404, device), IdempotencyMismatch (422).
        """
        op_type = normalize_operation_type(request.operation_type)
        parameters = validate_parameters(op_type, request.parameters)
        if op_type is OperationType.BACKUP_CONFIGURATION:
            check_location(str(parameters["backup_location"]), self.settings)
        request_hash = None
        if idempotency_key is not None:
            canonical = request.model_dump(mode="json")
            canonical["operation_type"] = op_type.value
            canonical["parameters"] = parameters
            request_hash = hashlib.sha256(
                json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
            ).hexdigest()
        for attempt in range(2):
            try:
                return await self._create_once(
                    tenant_id, request, op_type, parameters, idempotency_key, request_hash
                )
            except IntegrityError:
                # Another request with the same Idempotency-Key won the race: replay it.
                if attempt or idempotency_key is None:
                    raise
        raise AssertionError("unreachable")

    async def _create_once(
        self,
        tenant_id: str,
        request: NewOperation,
        op_type: OperationType,
        parameters: dict[str, object],
        idempotency_key: str | None,
        request_hash: str | None,
    ) -> CreateResult:
        now = self.clock()
        async with self.db.write() as conn:
            if idempotency_key is not None:
                replay = await self._replay(conn, tenant_id, idempotency_key, request_hash, now)
                if replay is not None:
                    return CreateResult(replay, replayed=True)
            device = await self._device(conn, tenant_id, request)
            supported = supported_operations(self.registry, device.protocol)
            if op_type not in supported:
                raise InvalidInput(
                    f"protocol {device.protocol} cannot perform {op_type.value}",
                    [
                        FieldError(
                            "operation_type",
                            f"device {device.id} uses protocol {device.protocol}, which supports: "
                            + ", ".join(sorted(t.value for t in supported)),
                        )
                    ],
                )
            if request.maintenance_window is not None:
                await self._check_window(conn, tenant_id, request.maintenance_window)
            scheduled_at = request.scheduled_at or now
            if request.expires_at is not None and request.expires_at <= scheduled_at:
                raise InvalidInput(
                    "invalid operation",
                    [FieldError("expires_at", "must be later than scheduled_at")],
                )
            op_id = new_sortable_id("op")
            values = op_store.new_operation_row(
                op_id=op_id,
                tenant_id=tenant_id,
                device_id=device.id,
                operation_type=op_type.value,
                scheduled_at=scheduled_at,
                now=now,
                parameters=parameters,
                priority=request.priority.rank,
                max_attempts=request.max_attempts or self.settings.default_max_attempts,
                expires_at=request.expires_at,
                maintenance_window=request.maintenance_window,
            )
            await op_store.insert_operation(conn, values)
            await self._notify_workers(conn)
            if idempotency_key is not None:
                await conn.execute(
                    insert(idempotency_keys).values(
                        tenant_id=tenant_id,
                        key=idempotency_key,
                        request_hash=request_hash,
                        operation_id=op_id,
                        created_at=now,
                    )
                )
        self._changed()
        record = OperationRecord(**values)
        return CreateResult(OperationView(record, device.name), replayed=False)

    async def _check_window(self, conn: AsyncConnection, tenant_id: str, name: str) -> None:
        mw = maintenance_windows.c
        found = (
            await conn.execute(select(mw.name).where(mw.tenant_id == tenant_id, mw.name == name))
        ).first()
        if found is None:
            raise InvalidInput(
                "unknown maintenance window",
                [FieldError("maintenance_window", f"no maintenance window is named {name!r}")],
            )

    async def _device(
        self, conn: AsyncConnection, tenant_id: str, request: NewOperation
    ) -> DeviceRecord:
        if request.device_id is not None:
            device = await device_store.get_device(conn, tenant_id, request.device_id)
            if device is None:
                raise NotFound(f"device {request.device_id} does not exist")
        else:
            assert request.device_name is not None
            device = await device_store.get_device_by_name(conn, tenant_id, request.device_name)
            if device is None:
                raise NotFound(f"no device is named {request.device_name!r}")
        return device

    async def _replay(
        self,
        conn: AsyncConnection,
        tenant_id: str,
        key: str,
        request_hash: str | None,
        now: datetime,
    ) -> OperationView | None:
        c = idempotency_keys.c
        row = (
            await conn.execute(
                select(c.request_hash, c.operation_id, c.created_at).where(
                    c.tenant_id == tenant_id, c.key == key
                )
            )
        ).first()
        if row is None:
            return None
        if row.created_at < now - timedelta(hours=self.settings.idempotency_ttl_hours):
            await conn.execute(
                delete(idempotency_keys).where(c.tenant_id == tenant_id, c.key == key)
            )
            return None
        if row.request_hash != request_hash:
            raise IdempotencyMismatch(
                "this Idempotency-Key was already used with a different request body",
                [FieldError("Idempotency-Key", f"already used for operation {row.operation_id}")],
            )
        op = await op_store.get_operation(conn, tenant_id, row.operation_id)
        if op is None:  # pragma: no cover - keys are only written with their operation
            raise NotFound("the operation of this Idempotency-Key no longer exists")
        device = await device_store.get_device(conn, tenant_id, op.device_id)
        return OperationView(op, device.name if device else None)

    async def rescue_expired_leases(self) -> int:
        """Run the reaper once (operations whose worker stopped renewing its lease)."""
        from headless_ops.store.scheduling import SchedulerStore

        store = SchedulerStore(self.db, "api")
        rescued = await store.reap(self.clock(), self.settings.retry_policy())
        if rescued:
            self._changed()
        return len(rescued)

    async def purge_idempotency_keys(self) -> int:
        """Forget keys older than the configured retention; returns how many."""
        cutoff = self.clock() - timedelta(hours=self.settings.idempotency_ttl_hours)
        async with self.db.write() as conn:
            result = await conn.execute(
                delete(idempotency_keys).where(idempotency_keys.c.created_at < cutoff)
            )
        return int(result.rowcount or 0)

    async def get(self, tenant_id: str, op_id: str, *, history: bool = False) -> OperationView:
        """One operation (with its history when asked); NotFound also for another tenant's."""
        async with self.db.read() as conn:
            op = await op_store.get_operation(conn, tenant_id, op_id)
            if op is None:
                raise NotFound(f"operation {op_id} does not exist")
            device = await device_store.get_device(conn, tenant_id, op.device_id)
            events = None
            if history:
                ev = operation_events.c
                rows = (
                    await conn.execute(
                        select(operation_events).where(ev.operation_id == op_id).order_by(ev.id)
                    )
                ).all()
                events = [dict(r._mapping) for r in rows]
        return OperationView(op, device.name if device else None, events)

    async def list(
        self,
        tenant_id: str,
        flt: op_store.OperationFilter,
        limit: int,
        offset: int,
    ) -> tuple[int, list[OperationView]]:
        """``(count, page)`` newest first."""
        async with self.db.read() as conn:
            count, page = await op_store.list_operations(conn, tenant_id, flt, limit, offset)
            names = await device_store.get_devices(conn, tenant_id, {op.device_id for op in page})
        return count, [
            OperationView(op, names[op.device_id].name if op.device_id in names else None)
            for op in page
        ]

    async def resolve_device_name(self, tenant_id: str, name: str) -> str | None:
        """The id of the device called ``name``, if any."""
        async with self.db.read() as conn:
            device = await device_store.get_device_by_name(conn, tenant_id, name)
        return None if device is None else device.id

    async def cancel(self, tenant_id: str, op_id: str) -> OperationView:
        """Cancel: at once when waiting; a running one is asked to stop (its worker ends it).

        Conflict (409) once the operation is terminal.
        """
        now = self.clock()
        async with self.db.write() as conn:
            op = await op_store.get_operation(conn, tenant_id, op_id)
            if op is None:
                raise NotFound(f"operation {op_id} does not exist")
            if Status(op.status) in TERMINAL:
                raise Conflict(f"operation {op_id} is already {op.status} and cannot be cancelled")
            if await op_store.cancel_waiting(conn, tenant_id, op_id, now, "cancelled by request"):
                event = "cancelled"
            else:
                await op_store.request_cancel_running(conn, tenant_id, op_id, now)
                event = "cancel_requested"
            await insert_events(
                conn,
                [
                    {
                        "operation_id": op_id,
                        "at": now,
                        "event": event,
                        "attempt": op.attempts,
                        "error_code": "cancelled" if event == "cancelled" else None,
                        "message": "cancelled by request"
                        if event == "cancelled"
                        else "cancellation asked while running",
                        "worker": None,
                    }
                ],
            )
            await self._notify_workers(conn)
        self._changed()
        if event == "cancel_requested":
            for listener in self.cancel_listeners:
                listener(op_id)
        return await self.get(tenant_id, op_id)
