"""Claiming ahead of the due time, on both engines: an operation due within
``claim_ahead_s`` is leased early and its helper starts at its time, never before; one
cancelled in between never reaches its helper; a shutdown gives it back with its time; one
whose ``expires_at`` comes before its start is never claimed.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from sqlalchemy import update

from headless_ops.api.runtime import Runtime
from headless_ops.helpers.base import OperationContext
from headless_ops.store.schema import operations
from headless_ops.timeutil import utcnow
from tests.support.sched import (
    TrackingHelper,
    add_device,
    add_op,
    events,
    eventually,
    make_scheduler,
    op,
    reached,
    running,
    setup,
)


class WallClockHelper(TrackingHelper):
    """Notes the wall-clock moment each attempt reached the helper."""

    def __init__(self) -> None:
        super().__init__()
        self.reached_at: dict[str, float] = {}

    async def execute(self, context: OperationContext) -> dict[str, object]:
        self.reached_at.setdefault(context.operation_id, time.time())
        return await super().execute(context)


async def _one_device(runtime: Runtime, ahead: float, helper: TrackingHelper) -> str:
    """Tenant ``acme`` with device ``dev_1``; operations are claimed ``ahead`` seconds early."""
    runtime.settings.claim_ahead_s = ahead
    runtime.registry.register(helper)
    tenant = await setup(runtime)
    await add_device(runtime, tenant, "dev_1")
    return tenant


async def test_claimed_ahead_and_started_at_its_time(runtime: Runtime) -> None:
    helper = WallClockHelper()
    tenant = await _one_device(runtime, 1.0, helper)
    due = utcnow() + timedelta(seconds=0.6)
    op_id = await add_op(runtime, tenant, "dev_1", scheduled_at=due)
    async with running(make_scheduler(runtime)):
        # Leased before its time (the device is busy from then on)…
        claimed = await eventually(lambda: reached(runtime, tenant, op_id, "running", "completed"))
        assert utcnow() < due or claimed.status == "completed"
        await eventually(lambda: reached(runtime, tenant, op_id, "completed"))
    # …and the helper started at its time, not at the claim, and never before it.
    assert helper.reached_at[op_id] >= due.timestamp()
    record = await op(runtime, tenant, op_id)
    assert record.started_at == due
    history = await events(runtime, tenant, op_id)
    assert (history[0]["event"], history[0]["at"]) == ("running", due)


async def test_cancelled_between_claim_and_start_never_reaches_the_helper(
    runtime: Runtime,
) -> None:
    helper = TrackingHelper()
    tenant = await _one_device(runtime, 3.0, helper)
    op_id = await add_op(runtime, tenant, "dev_1", scheduled_at=utcnow() + timedelta(seconds=2))
    async with running(make_scheduler(runtime)):
        await eventually(lambda: reached(runtime, tenant, op_id, "running"))
        await runtime.operations.cancel(tenant, op_id)
        done = await eventually(lambda: reached(runtime, tenant, op_id, "cancelled"))
    assert helper.started() == []
    assert done.error == {"code": "cancelled", "message": "cancelled before it started"}


async def test_shutdown_gives_an_early_claim_back_with_its_time(runtime: Runtime) -> None:
    runtime.settings.shutdown_grace_s = 0.1
    helper = TrackingHelper()
    tenant = await _one_device(runtime, 3.0, helper)
    due = utcnow() + timedelta(seconds=2.5)
    op_id = await add_op(runtime, tenant, "dev_1", scheduled_at=due)
    async with running(make_scheduler(runtime)):
        await eventually(lambda: reached(runtime, tenant, op_id, "running"))
    back = await op(runtime, tenant, op_id)
    assert (back.status, back.attempts, back.run_after) == ("scheduled", 0, due)
    assert helper.started() == []
    assert [e["event"] for e in await events(runtime, tenant, op_id)] == ["running", "released"]


async def test_not_claimed_ahead_when_it_would_start_past_expires_at(runtime: Runtime) -> None:
    helper = TrackingHelper()
    tenant = await _one_device(runtime, 2.0, helper)
    now = utcnow()
    # Within the claim-ahead window, and far enough for the checks below to run before it
    # expires on a busy machine (0.5 s was not, once).
    expires = now + timedelta(seconds=1.5)
    op_id = await add_op(runtime, tenant, "dev_1", expires_at=expires)
    # Due only at its expiry (as a deferral clipped to expires_at leaves it): never startable.
    async with runtime.db.write() as conn:
        await conn.execute(
            update(operations).where(operations.c.id == op_id).values(run_after=expires)
        )
    async with running(make_scheduler(runtime)):
        await asyncio.sleep(0.2)
        assert (await op(runtime, tenant, op_id)).status == "scheduled"
        failed = await eventually(lambda: reached(runtime, tenant, op_id, "failed"))
    assert failed.error is not None and failed.error["code"] == "expired"
    assert helper.started() == []
