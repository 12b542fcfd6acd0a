"""Leases and fencing on both engines, with a controllable clock: the reaper rescues an
expired lease (retry, fail at max attempts, cancel when asked) and leaves a valid one
alone; a late result carrying an old lease version is refused and logged in the history;
heartbeats renew leases and report lost ones; a drain releases leases without counting the
attempt; the database itself refuses two running operations on one device.

A "dead worker" is a store that claimed operations under its own identity and never
finished them.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from headless_ops.api.runtime import Runtime
from headless_ops.domain.lifecycle import Status
from headless_ops.domain.retry import Decision
from headless_ops.store.scheduling import Outcome, SchedulerStore
from headless_ops.store.schema import operations
from tests.support.sched import (
    Clock,
    TrackingHelper,
    add_device,
    add_op,
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

TTL = 30.0


async def _fleet(runtime: Runtime, devices: int = 1) -> tuple[str, Clock, TrackingHelper]:
    clock = Clock(future_base())
    use_clock(runtime, clock)
    runtime.settings.lease_ttl_s = TTL
    helper = TrackingHelper()
    runtime.registry.register(helper)
    tenant = await setup(runtime)
    for i in range(devices):
        await add_device(runtime, tenant, f"dev_{i}")
    return tenant, clock, helper


async def test_expired_lease_is_retried_with_the_attempt_counted(runtime: Runtime) -> None:
    runtime.settings.retry_base_s = 0.0
    tenant, clock, helper = await _fleet(runtime)
    op_id = await add_op(runtime, tenant, "dev_0", max_attempts=3)
    [claimed] = await claim_as(SchedulerStore(runtime.db, "dead"), clock(), lease_ttl=TTL)
    assert claimed.op.id == op_id
    held = await op(runtime, tenant, op_id)
    assert (held.status, held.lease_owner, held.attempts) == ("running", "dead", 1)

    clock.advance(TTL + 1)
    live = make_scheduler(runtime, clock, worker_id="live")
    rescued = await live.store.reap(clock(), live.policy)
    assert [(i, d.status) for i, d in rescued] == [(op_id, Status.SCHEDULED)]
    again = await op(runtime, tenant, op_id)
    assert (again.status, again.attempts, again.wait_reason) == ("scheduled", 1, "backoff")
    assert again.lease_owner is None
    assert again.error["code"] == "lease_expired"

    await live.run_until_idle(timeout=20)
    done = await op(runtime, tenant, op_id)
    assert (done.status, done.attempts, done.result) == ("completed", 2, {"ok": True})
    assert [(a.operation_id, a.attempt) for a in helper.attempts] == [(op_id, 2)]
    history = await events(runtime, tenant, op_id)
    assert [(e["event"], e["attempt"], e["worker"]) for e in history] == [
        ("running", 1, "dead"),
        ("lease_expired", 1, "live"),
        ("retry_scheduled", 1, "live"),
        ("running", 2, "live"),
        ("completed", 2, "live"),
    ]


async def test_expired_lease_at_max_attempts_fails(runtime: Runtime) -> None:
    tenant, clock, helper = await _fleet(runtime)
    op_id = await add_op(runtime, tenant, "dev_0", max_attempts=1)
    assert len(await claim_as(SchedulerStore(runtime.db, "dead"), clock(), lease_ttl=TTL)) == 1
    clock.advance(TTL + 1)
    # The reaper runs in another scheduler's housekeeping.
    await make_scheduler(runtime, clock, worker_id="live").run_until_idle(timeout=20)
    failed = await op(runtime, tenant, op_id)
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert failed.error["code"] == "lease_expired"
    assert failed.finished_at == clock()
    assert helper.attempts == []


async def test_expired_lease_of_an_operation_being_cancelled_ends_cancelled(
    runtime: Runtime,
) -> None:
    tenant, clock, helper = await _fleet(runtime)
    op_id = await add_op(runtime, tenant, "dev_0", max_attempts=3)
    assert len(await claim_as(SchedulerStore(runtime.db, "dead"), clock(), lease_ttl=TTL)) == 1
    view = await runtime.operations.cancel(tenant, op_id)
    assert (view.op.status, view.op.cancel_requested) == ("running", True)
    clock.advance(TTL + 1)
    await make_scheduler(runtime, clock, worker_id="live").run_until_idle(timeout=20)
    cancelled = await op(runtime, tenant, op_id)
    assert (cancelled.status, cancelled.attempts) == ("cancelled", 1)
    assert cancelled.error["code"] == "cancelled"
    assert helper.attempts == []  # attempts left do not matter: cancelling wins


async def test_valid_lease_and_finished_operation_are_left_alone(runtime: Runtime) -> None:
    tenant, clock, helper = await _fleet(runtime, devices=2)
    busy = await add_op(runtime, tenant, "dev_0")
    finished = await add_op(runtime, tenant, "dev_1")
    dead = SchedulerStore(runtime.db, "dead")
    claimed = {c.op.id: c for c in await claim_as(dead, clock(), lease_ttl=TTL)}
    assert set(claimed) == {busy, finished}
    # The worker finished one of them before it stopped answering.
    done = claimed[finished].op
    outcome = Outcome(finished, done.lease_version, 1, Decision(Status.COMPLETED), {"ok": 1})
    assert await dead.record(clock(), [outcome]) == set()

    clock.advance(TTL - 1)  # not yet expired
    live = make_scheduler(runtime, clock, worker_id="live")
    await live.run_until_idle(timeout=20)
    still = await op(runtime, tenant, busy)
    assert (still.status, still.lease_owner, still.attempts) == ("running", "dead", 1)
    clock.advance(TTL)  # long past: the finished one is not the reaper's business
    assert [i for i, _ in await live.store.reap(clock(), live.policy)] == [busy]
    kept = await op(runtime, tenant, finished)
    assert (kept.status, kept.result, kept.attempts) == ("completed", {"ok": 1}, 1)
    assert helper.attempts == []


async def test_late_result_with_an_old_lease_version_is_refused(runtime: Runtime) -> None:
    runtime.settings.retry_base_s = 0.0
    tenant, clock, _ = await _fleet(runtime)
    op_id = await add_op(runtime, tenant, "dev_0", max_attempts=3)
    dead = SchedulerStore(runtime.db, "dead")
    [first] = await claim_as(dead, clock(), lease_ttl=TTL)
    old_version = first.op.lease_version
    clock.advance(TTL + 1)
    live = make_scheduler(runtime, clock, worker_id="live")
    assert len(await live.store.reap(clock(), live.policy)) == 1

    def late(result: dict[str, bool]) -> Outcome:
        return Outcome(op_id, old_version, 1, Decision(Status.COMPLETED), result)

    # Refused while it waits for its next attempt …
    assert await dead.record(clock(), [late({"late": True})]) == {op_id}
    assert (await op(runtime, tenant, op_id)).status == "scheduled"
    # … and while another worker runs it under a newer lease.
    [second] = await claim_as(live.store, clock(), lease_ttl=TTL)
    assert second.op.lease_version > old_version
    assert await dead.record(clock(), [late({"late": True})]) == {op_id}
    current = await op(runtime, tenant, op_id)
    assert (current.status, current.lease_owner, current.result) == ("running", "live", None)
    # The lease holder's own result goes through.
    mine = Outcome(op_id, second.op.lease_version, 2, Decision(Status.COMPLETED), {"ok": True})
    assert await live.store.record(clock(), [mine]) == set()
    final = await op(runtime, tenant, op_id)
    assert (final.status, final.result, final.attempts) == ("completed", {"ok": True}, 2)
    refused = [e for e in await events(runtime, tenant, op_id) if e["event"] == "result_refused"]
    assert len(refused) == 2
    assert {(e["error_code"], e["worker"], e["attempt"]) for e in refused} == {
        ("lease_lost", "dead", 1)
    }


async def test_heartbeat_renews_the_lease(runtime: Runtime) -> None:
    tenant, clock, helper = await _fleet(runtime)
    helper.gate = asyncio.Event()
    runtime.settings.safety_poll_s = 30  # only the test moves things along
    op_id = await add_op(runtime, tenant, "dev_0")
    start = clock()
    scheduler = make_scheduler(runtime, clock, worker_id="w1")
    async with running(scheduler):
        await helper.wait_started(1)
        assert (await op(runtime, tenant, op_id)).lease_expires_at == start + timedelta(seconds=TTL)
        clock.advance(20)
        await scheduler.heartbeat()
        renewed = (await op(runtime, tenant, op_id)).lease_expires_at
        assert renewed == start + timedelta(seconds=20 + TTL)
        clock.advance(15)  # past the first expiry, before the renewed one
        other = make_scheduler(runtime, clock, worker_id="w2", wired=False)
        assert await other.store.reap(clock(), other.policy) == []
        helper.gate.set()
        done = await eventually(lambda: reached(runtime, tenant, op_id, "completed"))
    assert (done.attempts, done.lease_owner) == (1, None)


async def test_heartbeat_reports_a_lost_lease_and_the_attempt_is_stopped(
    runtime: Runtime,
) -> None:
    tenant, clock, helper = await _fleet(runtime)
    helper.gate = asyncio.Event()  # never opened: the attempt only ends by being stopped
    runtime.settings.retry_base_s = 3600  # the rescued operation waits: nobody reruns it here
    runtime.settings.safety_poll_s = 30
    op_id = await add_op(runtime, tenant, "dev_0", max_attempts=3)
    # The stalled worker's clock stands still (so its own reaper never rescues the
    # operation); the rest of the world moves on past its lease.
    slow = make_scheduler(runtime, Clock(clock()), worker_id="slow")
    async with running(slow):
        await helper.wait_started(1)
        clock.advance(TTL + 1)
        reaper = make_scheduler(runtime, clock, worker_id="reaper", wired=False)
        assert [i for i, _ in await reaper.store.reap(clock(), reaper.policy)] == [op_id]
        await slow.heartbeat()

        async def stopped() -> bool:
            return helper.attempts[0].outcome == "interrupted" and slow.in_flight == 0

        await eventually(stopped, timeout=5)
    rescued = await op(runtime, tenant, op_id)
    assert (rescued.status, rescued.attempts, rescued.wait_reason) == ("scheduled", 1, "backoff")
    # The stopped attempt wrote nothing.
    assert [e["event"] for e in await events(runtime, tenant, op_id)] == [
        "running",
        "lease_expired",
        "retry_scheduled",
    ]


async def test_drain_releases_leases_without_counting_the_attempt(runtime: Runtime) -> None:
    tenant, clock, helper = await _fleet(runtime)
    gate = asyncio.Event()
    helper.gate = gate
    runtime.settings.shutdown_grace_s = 0.2
    op_id = await add_op(runtime, tenant, "dev_0", max_attempts=1)
    async with running(make_scheduler(runtime, clock, worker_id="leaving")):
        await helper.wait_started(1)
    # Stopped: the grace period passed, the attempt was interrupted and the lease given back.
    assert helper.attempts[0].outcome == "interrupted"
    released = await op(runtime, tenant, op_id)
    assert (released.status, released.attempts, released.lease_owner) == ("scheduled", 0, None)
    assert released.run_after == clock()  # due again at once
    assert [e["event"] for e in await events(runtime, tenant, op_id)] == ["running", "released"]
    # Another worker takes it; with max_attempts=1 it may still run, since nothing counted.
    gate.set()
    await make_scheduler(runtime, clock, worker_id="next").run_until_idle(timeout=20)
    done = await op(runtime, tenant, op_id)
    assert (done.status, done.attempts) == ("completed", 1)
    assert [a.attempt for a in helper.attempts] == [1, 1]


async def test_database_refuses_two_running_operations_on_one_device(runtime: Runtime) -> None:
    tenant, _, _ = await _fleet(runtime, devices=2)
    first = await add_op(runtime, tenant, "dev_0")
    second = await add_op(runtime, tenant, "dev_0")
    elsewhere = await add_op(runtime, tenant, "dev_1")

    async def set_running(op_id: str) -> None:
        async with runtime.db.write() as conn:
            await conn.execute(
                update(operations).where(operations.c.id == op_id).values(status="running")
            )

    await set_running(first)
    with pytest.raises(IntegrityError):
        await set_running(second)
    await set_running(elsewhere)  # another device is fine
    assert (await op(runtime, tenant, second)).status == "scheduled"
