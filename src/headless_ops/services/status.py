"""Device status refresh through the helpers, bounded in time and concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import structlog

from headless_ops.crypto import SecretBox
from headless_ops.domain.devices import DeviceStatus
from headless_ops.helpers.base import StatusReport
from headless_ops.helpers.registry import HelperRegistry
from headless_ops.services.devices import device_view
from headless_ops.store import devices as device_store
from headless_ops.store.db import Database
from headless_ops.store.records import DeviceRecord
from headless_ops.timeutil import utcnow

__all__ = ["refresh_devices"]

log = structlog.get_logger(__name__)

#: Refreshes cancelled at the deadline that have not finished unwinding yet.
_lingering: set[asyncio.Future[Any]] = set()


async def refresh_devices(
    db: Database,
    registry: HelperRegistry,
    box: SecretBox,
    devices: Iterable[DeviceRecord],
    *,
    timeout: float,  # noqa: ASYNC109 - a deadline for each device, not for the caller
    concurrency: int,
    clock: Callable[[], datetime] = utcnow,
) -> dict[str, StatusReport]:
    """Ask each device's helper for its status and store what it says.

    A device whose helper is missing is ``unknown``; one that raises or does not answer
    within ``timeout`` is ``offline`` with the reason. The whole call never takes much more
    than ``timeout``.
    """
    limit = asyncio.Semaphore(concurrency)

    async def one(record: DeviceRecord) -> tuple[DeviceRecord, StatusReport]:
        helper = registry.get(record.protocol)
        if helper is None:
            return record, StatusReport(
                DeviceStatus.UNKNOWN, detail=f"no helper for protocol {record.protocol}"
            )
        try:
            async with limit:
                report = await helper.refresh_status(device_view(record, box))
        except Exception as exc:  # a helper's bug must not fail the whole request
            log.warning("status refresh failed", device_id=record.id, error=type(exc).__name__)
            return record, StatusReport(
                DeviceStatus.OFFLINE, detail=f"refresh failed: {type(exc).__name__}"
            )
        return record, report

    tasks = {asyncio.ensure_future(one(r)): r for r in devices}
    if not tasks:
        return {}
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    reports: dict[str, tuple[DeviceRecord, StatusReport]] = {}
    for task in done:
        record, report = task.result()
        reports[record.id] = (record, report)
    for task in pending:
        record = tasks[task]
        reports[record.id] = (
            record,
            StatusReport(DeviceStatus.OFFLINE, detail=f"no answer within {timeout:g}s"),
        )
    for task in pending:
        # A cancelled refresh may still be cleaning up (closing a connection to a dead host
        # …): the time bound does not wait for that. Keep it referenced until it ends.
        _lingering.add(task)
        task.add_done_callback(_lingering.discard)
    now = clock()
    async with db.write() as conn:
        for record, report in reports.values():
            await device_store.set_status(
                conn,
                record.tenant_id,
                record.id,
                status=report.status.value,
                detail=report.detail,
                seen_at=report.seen_at,
                firmware_version=report.firmware_version,
                now=now,
            )
    return {device_id: report for device_id, (_, report) in reports.items()}
