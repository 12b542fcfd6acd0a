"""An unreachable device defers its operation: the attempt is given back, the operation waits
``pending`` (wait_reason ``device_unreachable``) and starts as soon as the device shows up —
or expires, or is cancelled — on both engines."""

from __future__ import annotations

from datetime import timedelta

from headless_ops.api.runtime import Runtime
from headless_ops.helpers.base import DeferredError, OperationContext
from headless_ops.store.scheduling import release_deferred
from tests.support.helpers import ScriptedHelper
from tests.support.sched import (
    Clock,
    add_device,
    add_op,
    events,
    future_base,
    make_scheduler,
    op,
    setup,
    use_clock,
)


async def test_deferred_gives_back_the_attempt_and_waits_for_the_device(runtime: Runtime) -> None:
    clock = Clock(future_base())
    use_clock(runtime, clock)
    reachable = False

    def script(ctx: OperationContext) -> object:
        if not reachable:
            return DeferredError(
                "cpe_unreachable", "no answer to the connection request", recheck_s=600
            )
        return {"ok": True}

    runtime.registry.register(ScriptedHelper(protocol="cwmp", script=script))
    tenant = await setup(runtime)
    await add_device(runtime, tenant, "dev_1", protocol="cwmp")
    op_id = await add_op(runtime, tenant, "dev_1", "reboot", max_attempts=1)
    scheduler = make_scheduler(runtime, clock)
    await scheduler.run_until_idle()
    record = await op(runtime, tenant, op_id)
    assert record.status == "pending" and record.wait_reason == "device_unreachable"
    assert record.attempts == 0  # given back: max_attempts=1 is still available
    assert record.run_after == clock.now + timedelta(seconds=600)
    history = await events(runtime, tenant, op_id)
    assert any(e["event"] == "deferred" and e["error_code"] == "cpe_unreachable" for e in history)

    # Nothing happens before the device shows up…
    clock.advance(60)
    await scheduler.run_until_idle()
    assert (await op(runtime, tenant, op_id)).status == "pending"
    # …then it runs at once.
    reachable = True
    async with runtime.db.write() as conn:
        assert await release_deferred(conn, tenant, "dev_1", clock.now, "device_unreachable") == 1
    await scheduler.run_until_idle()
    record = await op(runtime, tenant, op_id)
    assert record.status == "completed" and record.attempts == 1


async def test_a_deferred_operation_still_expires(runtime: Runtime) -> None:
    clock = Clock(future_base())
    use_clock(runtime, clock)

    def script(ctx: OperationContext) -> object:
        return DeferredError("cpe_unreachable", "offline", recheck_s=3600)

    runtime.registry.register(ScriptedHelper(protocol="cwmp", script=script))
    tenant = await setup(runtime)
    await add_device(runtime, tenant, "dev_1", protocol="cwmp")
    op_id = await add_op(
        runtime, tenant, "dev_1", "reboot", expires_at=clock.now + timedelta(seconds=120)
    )
    scheduler = make_scheduler(runtime, clock)
    await scheduler.run_until_idle()
    record = await op(runtime, tenant, op_id)
    assert record.status == "pending"
    assert record.run_after == clock.now + timedelta(seconds=120)  # capped at its expiry
    clock.advance(121)
    await scheduler.run_until_idle()
    record = await op(runtime, tenant, op_id)
    assert record.status == "failed" and record.error is not None
    assert record.error["code"] == "expired"
