"""The scheduler's lifecycle rules on both engines: claim order (priority, then earliest),
one operation at a time per device (and only a running one blocks it), waiting on a busy
device, per-type timeouts, ``expires_at``, missing helpers and unsupported types, and
cancellation of waiting and running operations (through the API, through the in-process
cancel listener, and through the heartbeat when another process asked).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import update

from headless_ops.api.runtime import Runtime
from headless_ops.domain.operations import OperationType
from headless_ops.helpers.base import OperationContext
from headless_ops.store.scheduling import SchedulerStore, _all_priorities_query
from headless_ops.store.schema import operations
from headless_ops.timeutil import utcnow
from tests.conftest import Api
from tests.support.sched import (
    Clock,
    TrackingHelper,
    add_device,
    add_op,
    assert_error,
    claim_as,
    events,
    eventually,
    future_base,
    make_scheduler,
    op,
    reached,
    running,
    setup,
    use_clock,
)

OPS = "/api/v1/inventory_device_headless_operation/"


async def test_critical_first_then_earliest_scheduled_at(runtime: Runtime) -> None:
    # One claim per pass: the order of starts is the order of claims.
    runtime.settings.claim_batch_size = 1
    helper = TrackingHelper()
    runtime.registry.register(helper)
    tenant = await setup(runtime)
    now = utcnow()
    for i in range(5):
        await add_device(runtime, tenant, f"dev_{i}")
    # Created in an order that is neither the priority nor the time order.
    normal_late = await add_op(runtime, tenant, "dev_0", scheduled_at=now - timedelta(seconds=10))
    low = await add_op(
        runtime, tenant, "dev_1", scheduled_at=now - timedelta(minutes=5), priority="low"
    )
    normal_early = await add_op(runtime, tenant, "dev_2", scheduled_at=now - timedelta(seconds=20))
    critical = await add_op(
        runtime, tenant, "dev_3", scheduled_at=now - timedelta(seconds=1), priority="critical"
    )
    high = await add_op(
        runtime, tenant, "dev_4", scheduled_at=now - timedelta(seconds=2), priority="high"
    )
    await make_scheduler(runtime).run_until_idle(timeout=20)
    assert helper.order() == [critical, high, normal_early, normal_late, low]


async def test_a_batch_takes_the_highest_priorities_and_leaves_the_rest(runtime: Runtime) -> None:
    # Claims smaller than the queue: each takes the highest priorities still waiting (on
    # PostgreSQL one statement reads every priority under one limit), and each claimed
    # operation gets exactly one "running" line in its history, by the claiming worker.
    tenant = await setup(runtime)
    now = utcnow()
    priority_of: dict[str, str] = {}
    order = ["low", "normal", "critical", "high", "low", "critical", "normal", "high"]
    for i, priority in enumerate(order):
        await add_device(runtime, tenant, f"dev_{i}")
        op_id = await add_op(
            runtime,
            tenant,
            f"dev_{i}",
            scheduled_at=now - timedelta(seconds=i + 1),
            priority=priority,
        )
        priority_of[op_id] = priority
    store = SchedulerStore(runtime.db, "batch-worker")
    batches = [await claim_as(store, utcnow(), limit=n) for n in (3, 3, 3)]
    assert [[priority_of[c.op.id] for c in b] for b in batches] == [
        ["critical", "critical", "high"],
        ["high", "normal", "normal"],
        ["low", "low"],
    ]
    # Within a priority, the earliest scheduled_at first.
    first = [c.op for c in batches[0]]
    assert first[0].scheduled_at < first[1].scheduled_at
    for b in batches:
        for c in b:
            lines = [e for e in await events(runtime, tenant, c.op.id) if e["event"] == "running"]
            assert len(lines) == 1, lines
            assert lines[0]["worker"] == "batch-worker"
            assert lines[0]["attempt"] == 1 == c.op.attempts


async def test_postgresql_reads_no_lower_priority_once_the_batch_is_full(runtime: Runtime) -> None:
    # The claim's single statement (every priority in one UNION ALL under one LIMIT) relies on
    # PostgreSQL running the branches in order and stopping at the limit: lower priorities are
    # then never read, and none of their rows locked.
    if runtime.db.dialect != "postgresql":
        pytest.skip("SQLite reads one priority per query")
    tenant = await setup(runtime)
    now = utcnow()
    for i, priority in enumerate(["critical"] * 3 + ["low"] * 3):
        await add_device(runtime, tenant, f"dev_{i}")
        await add_op(
            runtime, tenant, f"dev_{i}", scheduled_at=now - timedelta(seconds=1), priority=priority
        )
    async with runtime.db.write() as conn:
        compiled = _all_priorities_query(False, ()).compile(dialect=conn.dialect)
        params = {**compiled.params, "c_now": now, "c_horizon": now, "c_limit": 3}
        plan = "\n".join(
            r[0]
            for r in await conn.exec_driver_sql(
                f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {compiled}", params
            )
        )
        await conn.rollback()
    scans = {
        line.split("Subquery Scan on ")[1].split()[0]: line
        for line in plan.splitlines()
        if "Subquery Scan on" in line
    }
    assert sorted(scans) == ["p0", "p1", "p2", "p3"], plan
    assert "rows=3" in scans["p3"], plan
    for lower in ("p2", "p1", "p0"):
        assert "never executed" in scans[lower], plan


async def test_one_at_a_time_per_device_in_parallel_across_devices(runtime: Runtime) -> None:
    helper = TrackingHelper(delay=0.03)
    runtime.registry.register(helper)
    tenant = await setup(runtime)
    now = utcnow()
    per_device = {"dev_a": 6, "dev_b": 2, "dev_c": 2, "dev_d": 2}
    ids: dict[str, list[str]] = {}
    for device, count in per_device.items():
        await add_device(runtime, tenant, device)
        ids[device] = [
            await add_op(runtime, tenant, device, scheduled_at=now - timedelta(seconds=60 - i))
            for i in range(count)
        ]
    await make_scheduler(runtime).run_until_idle(timeout=30)
    for device, op_ids in ids.items():
        assert helper.max_for("device", device) == 1, device
        for op_id in op_ids:
            assert (await op(runtime, tenant, op_id)).status == "completed"
        # A device's operations ran in their scheduled order.
        assert [a.operation_id for a in helper.attempts if a.device_id == device] == op_ids
    assert helper.overlaps_on_one_device() == []
    # The four devices were worked on at the same time.
    assert helper.max_active == 4


async def test_a_future_operation_does_not_block_its_device(runtime: Runtime) -> None:
    helper = TrackingHelper()
    runtime.registry.register(helper)
    tenant = await setup(runtime)
    await add_device(runtime, tenant, "dev_1")
    far = await add_op(runtime, tenant, "dev_1", scheduled_at=utcnow() + timedelta(days=30))
    due = await add_op(runtime, tenant, "dev_1")
    await make_scheduler(runtime).run_until_idle(timeout=20)
    assert (await op(runtime, tenant, due)).status == "completed"
    far_op = await op(runtime, tenant, far)
    assert (far_op.status, far_op.attempts, far_op.wait_reason) == ("scheduled", 0, None)
    assert helper.order() == [due]


async def test_due_operation_on_busy_device_waits_pending_then_runs(runtime: Runtime) -> None:
    clock = Clock(future_base())
    use_clock(runtime, clock)
    helper = TrackingHelper(gate=asyncio.Event())
    runtime.registry.register(helper)
    tenant = await setup(runtime)
    await add_device(runtime, tenant, "dev_1")
    first = await add_op(runtime, tenant, "dev_1")
    scheduler = make_scheduler(runtime, clock)
    async with running(scheduler):
        await helper.wait_started(1)
        second = await add_op(runtime, tenant, "dev_1")
        # Housekeeping (which marks busy-device waits) runs once a second of clock passed.
        clock.advance(2)
        scheduler.wake()
        waiting = await eventually(lambda: reached(runtime, tenant, second, "pending"))
        assert waiting.wait_reason == "device_busy"
        assert helper.order() == [first]
        assert helper.gate is not None
        helper.gate.set()
        await eventually(lambda: reached(runtime, tenant, second, "completed"))
    assert helper.order() == [first, second]
    assert helper.max_for("device", "dev_1") == 1
    history = await events(runtime, tenant, second)
    assert [e["event"] for e in history] == ["pending", "running", "completed"]
    assert "another operation is running" in (history[0]["message"] or "")


async def test_timeout_is_per_operation_type(runtime: Runtime) -> None:
    runtime.settings.operation_timeouts = {"reboot": 0.2}
    runtime.settings.retry_base_s = 0.0

    async def script(ctx: OperationContext) -> dict[str, object]:
        if ctx.operation_type is OperationType.REBOOT:
            await asyncio.Event().wait()  # hangs: only the timeout ends it
        await asyncio.sleep(0.4)  # longer than reboot's timeout, well within the default
        return {"ok": True}

    helper = TrackingHelper(script=script)
    runtime.registry.register(helper)
    tenant = await setup(runtime)
    await add_device(runtime, tenant, "dev_1")
    await add_device(runtime, tenant, "dev_2")
    reboot = await add_op(runtime, tenant, "dev_1", max_attempts=2)
    backup = await add_op(runtime, tenant, "dev_2", "backup_configuration")
    await make_scheduler(runtime).run_until_idle(timeout=20)
    failed = await op(runtime, tenant, reboot)
    assert failed.status == "failed"
    assert failed.attempts == 2
    assert failed.error is not None and failed.error["code"] == "timeout"
    assert [a.outcome for a in helper.started(reboot)] == ["interrupted", "interrupted"]
    history = await events(runtime, tenant, reboot)
    assert [(e["event"], e["error_code"]) for e in history] == [
        ("running", None),
        ("retry_scheduled", "timeout"),
        ("running", None),
        ("failed", "timeout"),
    ]
    assert (await op(runtime, tenant, backup)).status == "completed"


async def test_operation_not_started_before_expires_at_fails_expired(runtime: Runtime) -> None:
    clock = Clock(future_base())
    use_clock(runtime, clock)
    helper = TrackingHelper(gate=asyncio.Event())
    runtime.registry.register(helper)
    tenant = await setup(runtime)
    await add_device(runtime, tenant, "dev_1")
    blocker = await add_op(runtime, tenant, "dev_1")
    # Two of them, failed together in one housekeeping pass.
    late = [
        await add_op(runtime, tenant, "dev_1", expires_at=clock() + timedelta(seconds=s))
        for s in (10, 5)
    ]
    scheduler = make_scheduler(runtime, clock)
    async with running(scheduler):
        await helper.wait_started(1)
        clock.advance(11)  # the device is still busy when expires_at passes
        scheduler.wake()
        for op_id in late:
            await eventually(lambda op_id=op_id: reached(runtime, tenant, op_id, "failed"))
        assert helper.gate is not None
        helper.gate.set()
        await eventually(lambda: reached(runtime, tenant, blocker, "completed"))
    assert helper.order() == [blocker]
    for op_id in late:
        expired = await op(runtime, tenant, op_id)
        assert (expired.error["code"], expired.attempts) == ("expired", 0)
        history = await events(runtime, tenant, op_id)
        assert "running" not in [e["event"] for e in history]
        assert (history[-1]["event"], history[-1]["error_code"]) == ("failed", "expired")


async def test_expired_operation_never_starts_between_housekeeping_passes(
    runtime: Runtime,
) -> None:
    # The device frees up just after expires_at, less than a housekeeping period after the
    # last pass: the claim itself must refuse the expired operation.
    clock = Clock(future_base())
    use_clock(runtime, clock)
    gate = asyncio.Event()
    helper = TrackingHelper(gate=gate)
    runtime.registry.register(helper)
    tenant = await setup(runtime)
    await add_device(runtime, tenant, "dev_1")
    blocker = await add_op(runtime, tenant, "dev_1")
    late = await add_op(runtime, tenant, "dev_1", expires_at=clock() + timedelta(seconds=0.5))

    async def free_the_device_late() -> None:
        await helper.wait_started(1)
        clock.advance(0.7)
        gate.set()

    freer = asyncio.create_task(free_the_device_late())
    scheduler = make_scheduler(runtime, clock)
    await scheduler.run_until_idle(timeout=20)
    await freer
    assert helper.order() == [blocker]
    assert (await op(runtime, tenant, late)).status in ("scheduled", "pending")
    clock.advance(1)  # the next housekeeping pass fails it
    await scheduler.run_until_idle(timeout=20)
    expired = await op(runtime, tenant, late)
    assert (expired.status, expired.error["code"], expired.attempts) == ("failed", "expired", 0)


async def test_no_helper_for_the_protocol_fails(runtime: Runtime) -> None:
    helper = TrackingHelper(protocol="ssh")
    runtime.registry.register(helper)
    tenant = await setup(runtime)
    await add_device(runtime, tenant, "dev_cwmp", protocol="cwmp")
    op_id = await add_op(runtime, tenant, "dev_cwmp", max_attempts=3)
    await make_scheduler(runtime).run_until_idle(timeout=20)
    failed = await op(runtime, tenant, op_id)
    assert (failed.status, failed.attempts) == ("failed", 1)  # retrying cannot help
    assert failed.error["code"] == "no_helper"
    assert "cwmp" in failed.error["message"]
    assert helper.attempts == []


async def test_type_the_helper_no_longer_supports_fails(runtime: Runtime) -> None:
    helper = TrackingHelper()
    runtime.registry.register(helper)
    tenant = await setup(runtime)
    await add_device(runtime, tenant, "dev_1")
    op_id = await add_op(runtime, tenant, "dev_1", "firmware_update", max_attempts=3)
    # The helper was replaced by one without firmware updates after the operation was
    # accepted (the API refuses such a type up front).
    helper.supported_operations = frozenset({OperationType.REBOOT})
    await make_scheduler(runtime).run_until_idle(timeout=20)
    failed = await op(runtime, tenant, op_id)
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert failed.error["code"] == "unsupported"
    assert "firmware_update" in failed.error["message"]
    assert helper.attempts == []


async def test_cancel_waiting_operations_at_once_and_terminal_is_409(api: Api) -> None:
    runtime = api.runtime
    helper = TrackingHelper()
    runtime.registry.register(helper)
    headers = await api.auth()
    tenant = await setup(runtime)
    await add_device(runtime, tenant, "dev_1")
    await add_device(runtime, tenant, "dev_2")
    later = await add_op(runtime, tenant, "dev_1", scheduled_at=utcnow() + timedelta(hours=1))
    # A pending one: its device is busy (a worker holds another of its operations).
    await add_op(runtime, tenant, "dev_2")
    store = SchedulerStore(runtime.db, "other-worker")
    assert len(await claim_as(store, utcnow())) == 1
    waiting = await add_op(runtime, tenant, "dev_2")
    assert await store.mark_busy_pending(utcnow()) == 1
    assert (await op(runtime, tenant, waiting)).status == "pending"

    for op_id in (later, waiting):
        r = await api.client.post(f"{OPS}{op_id}/cancel/", headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "cancelled"
        assert body["error"]["code"] == "cancelled"
        assert body["finished_at"] is not None
        r = await api.client.get(f"{OPS}{op_id}/", headers=headers)
        assert r.json()["history"][-1]["event"] == "cancelled"
        # Cancelling a finished operation is a conflict.
        r = await api.client.post(f"{OPS}{op_id}/cancel/", headers=headers)
        assert "cancelled" in assert_error(r, 409)["detail"]
    await make_scheduler(runtime).run_until_idle(timeout=20)
    assert helper.attempts == []


async def test_cancel_running_operation_reaches_the_helper_through_the_listener(
    api: Api,
) -> None:
    runtime = api.runtime
    runtime.settings.shutdown_grace_s = 2
    helper = TrackingHelper(gate=asyncio.Event(), stop_on_cancel=True)
    runtime.registry.register(helper)
    headers = await api.auth()
    tenant = await setup(runtime)
    await add_device(runtime, tenant, "dev_1")
    op_id = await add_op(runtime, tenant, "dev_1")
    async with running(runtime.make_scheduler()):
        await helper.wait_started(1)
        r = await api.client.post(f"{OPS}{op_id}/cancel/", headers=headers)
        assert r.status_code == 200, r.text
        # The helper is asked to stop; the operation ends once it returns. The heartbeat
        # (every 10 s here) is far slower than the 5 s bound: this is the listener's doing.
        assert r.json()["status"] in ("running", "cancelled")
        await eventually(lambda: reached(runtime, tenant, op_id, "cancelled"), timeout=5)
        r = await api.client.post(f"{OPS}{op_id}/cancel/", headers=headers)
        assert_error(r, 409)
    r = await api.client.get(f"{OPS}{op_id}/", headers=headers)
    body = r.json()
    assert body["status"] == "cancelled"
    assert body["error"]["code"] == "cancelled"
    # What the device did is kept.
    assert body["result"] == {"ok": True, "stopped": True}
    assert helper.cancel_seen == {op_id: True}
    assert [e["event"] for e in body["history"]] == ["running", "cancel_requested", "cancelled"]


async def test_cancel_asked_by_another_process_reaches_the_helper_via_heartbeat(
    runtime: Runtime,
) -> None:
    runtime.settings.shutdown_grace_s = 2
    helper = TrackingHelper(gate=asyncio.Event(), stop_on_cancel=True)
    runtime.registry.register(helper)
    tenant = await setup(runtime)
    await add_device(runtime, tenant, "dev_1")
    op_id = await add_op(runtime, tenant, "dev_1")
    # Not wired to this process's API: it learns of the cancellation only from the store.
    scheduler = make_scheduler(runtime, wired=False)
    async with running(scheduler):
        await helper.wait_started(1)
        async with runtime.db.write() as conn:
            await conn.execute(
                update(operations).where(operations.c.id == op_id).values(cancel_requested=True)
            )
        await asyncio.sleep(0.1)
        assert helper.attempts[0].outcome == "running"  # nobody told it yet
        await scheduler.heartbeat()
        done = await eventually(lambda: reached(runtime, tenant, op_id, "cancelled"), 5)
    assert done.result == {"ok": True, "stopped": True}
    assert done.error["code"] == "cancelled"
    assert helper.cancel_seen == {op_id: True}
