"""Limits on running operations, on both engines: per operation type, in total, per device
label value, and starts per minute (on a controllable clock). What a limit holds back waits
``pending`` (wait_reason ``limit``), is never failed, and runs once there is room; a type
at its limit does not hold back operations of other types queued behind it.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from headless_ops.api.runtime import Runtime
from headless_ops.timeutil import utcnow
from tests.support.sched import (
    Clock,
    TrackingHelper,
    add_device,
    add_op,
    events,
    eventually,
    future_base,
    make_scheduler,
    op,
    running,
    setup,
    use_clock,
)


async def _statuses(runtime: Runtime, tenant: str, ids: list[str]) -> list[tuple[str, str | None]]:
    return [((r := await op(runtime, tenant, i)).status, r.wait_reason) for i in ids]


async def _all_completed(runtime: Runtime, tenant: str, ids: list[str]) -> bool:
    return all(s == "completed" for s, _ in await _statuses(runtime, tenant, ids))


async def test_per_type_limit_holds_the_rest_pending_never_failed(runtime: Runtime) -> None:
    runtime.settings.max_running_per_type = {"firmware_update": 2}
    runtime.settings.shutdown_grace_s = 2
    gate = asyncio.Event()
    helper = TrackingHelper(gate=gate, delay=0.05)
    runtime.registry.register(helper)
    tenant = await setup(runtime)
    firmware, reboots = [], []
    for i in range(6):
        await add_device(runtime, tenant, f"dev_fw{i}")
        firmware.append(await add_op(runtime, tenant, f"dev_fw{i}", "firmware_update"))
    for i in range(2):
        await add_device(runtime, tenant, f"dev_rb{i}")
        reboots.append(await add_op(runtime, tenant, f"dev_rb{i}"))
    async with running(make_scheduler(runtime)):
        # Two firmware updates and both reboots (another type: not limited) start.
        await helper.wait_started(4)
        await asyncio.sleep(0.2)  # room for a wrong start to show
        states = await _statuses(runtime, tenant, firmware)
        assert sorted(states, key=str) == sorted(
            [("running", None)] * 2 + [("pending", "limit")] * 4, key=str
        )
        assert await _statuses(runtime, tenant, reboots) == [("running", None)] * 2
        gate.set()
        await eventually(lambda: _all_completed(runtime, tenant, firmware + reboots))
    assert helper.max_for("type", "firmware_update") == 2
    for op_id in firmware:
        assert (await op(runtime, tenant, op_id)).attempts == 1
    held = [
        i for i in firmware if "pending" in [e["event"] for e in await events(runtime, tenant, i)]
    ]
    assert len(held) == 4
    for op_id in held:
        pending = [e for e in await events(runtime, tenant, op_id) if e["event"] == "pending"]
        assert [e["message"] for e in pending] == ["waiting: limit"]  # logged once, not per pass


async def test_operations_at_a_limit_do_not_hold_back_the_rest(runtime: Runtime) -> None:
    # Small batches make a long queue of held operations ahead of those that could start.
    runtime.settings.claim_batch_size = 1
    runtime.settings.max_running_per_type = {"firmware_update": 1}
    runtime.settings.max_running_per_label = {"site": 1}
    runtime.settings.shutdown_grace_s = 2
    gate = asyncio.Event()
    helper = TrackingHelper(gate=gate)
    runtime.registry.register(helper)
    tenant = await setup(runtime)
    now = utcnow()
    queue: list[str] = []

    async def enqueue(device: str, op_type: str, **labels: str) -> str:
        await add_device(runtime, tenant, device, labels=labels)
        at = now - timedelta(minutes=20 - len(queue))  # in queue order
        queue.append(await add_op(runtime, tenant, device, op_type, scheduled_at=at))
        return queue[-1]

    firmware = [await enqueue(f"dev_fw{i}", "firmware_update") for i in range(5)]
    site_a = [await enqueue(f"dev_a{i}", "reboot", site="a") for i in range(4)]
    site_b = await enqueue("dev_b", "reboot", site="b")
    async with running(make_scheduler(runtime)):
        # One of each limited kind, and the one behind them all.
        await helper.wait_started(3, timeout=5)
        await asyncio.sleep(0.2)  # room for a wrong start to show
        assert sorted(helper.order()) == sorted([firmware[0], site_a[0], site_b])
        gate.set()
        await eventually(lambda: _all_completed(runtime, tenant, queue))
    assert helper.max_for("type", "firmware_update") == 1
    assert helper.max_for("label:site", "a") == 1


async def test_total_running_limit(runtime: Runtime) -> None:
    runtime.settings.max_running = 3
    helper = TrackingHelper(delay=0.05)
    runtime.registry.register(helper)
    tenant = await setup(runtime)
    ids = []
    for i, op_type in enumerate(["reboot", "firmware_update", "backup_configuration"] * 3):
        await add_device(runtime, tenant, f"dev_{i}")
        ids.append(await add_op(runtime, tenant, f"dev_{i}", op_type))
    await make_scheduler(runtime).run_until_idle(timeout=30)
    assert await _all_completed(runtime, tenant, ids)
    assert helper.max_active == 3
    held = [i for i in ids if "pending" in [e["event"] for e in await events(runtime, tenant, i)]]
    assert len(held) >= 6  # all but the first three waited for a slot


async def test_per_label_limit(runtime: Runtime) -> None:
    runtime.settings.max_running_per_label = {"site": 1}
    helper = TrackingHelper(delay=0.05)
    runtime.registry.register(helper)
    tenant = await setup(runtime)
    ids = []
    devices = {
        "dev_a1": {"site": "a"},
        "dev_a2": {"site": "a"},
        "dev_a3": {"site": "a"},
        "dev_b1": {"site": "b"},
        "dev_b2": {"site": "b"},
        # No site: not limited by it; other labels are not limited.
        "dev_n1": {"role": "edge"},
        "dev_n2": {"role": "edge"},
    }
    for device, labels in devices.items():
        await add_device(runtime, tenant, device, labels=labels)
        ids.append(await add_op(runtime, tenant, device))
    await make_scheduler(runtime).run_until_idle(timeout=30)
    assert await _all_completed(runtime, tenant, ids)
    assert helper.max_for("label:site", "a") == 1
    assert helper.max_for("label:site", "b") == 1
    # Sites a and b and the two unlabelled devices ran side by side.
    assert helper.max_active == 4
    assert helper.max_for("label:role", "edge") == 2


async def test_starts_per_minute(runtime: Runtime) -> None:
    clock = Clock(future_base())
    use_clock(runtime, clock)
    runtime.settings.max_starts_per_minute = 3
    helper = TrackingHelper()
    runtime.registry.register(helper)
    tenant = await setup(runtime)
    ids = []
    for i in range(5):
        await add_device(runtime, tenant, f"dev_{i}")
        ids.append(await add_op(runtime, tenant, f"dev_{i}"))
    scheduler = make_scheduler(runtime, clock)

    await scheduler.run_until_idle(timeout=20)
    states = await _statuses(runtime, tenant, ids)
    assert states.count(("completed", None)) == 3
    assert states.count(("pending", "limit")) == 2
    clock.advance(30)  # still within the minute of the first three starts
    await scheduler.run_until_idle(timeout=20)
    assert (await _statuses(runtime, tenant, ids)).count(("pending", "limit")) == 2
    clock.advance(31)
    await scheduler.run_until_idle(timeout=20)
    assert await _all_completed(runtime, tenant, ids)
    assert len(helper.attempts) == 5
