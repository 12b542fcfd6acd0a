"""The scheduler end to end on both engines: due operations run through their helper."""

from __future__ import annotations

from datetime import timedelta

from headless_ops.api.runtime import Runtime
from headless_ops.auth.tokens import ensure_tenant
from headless_ops.helpers.base import PermanentError, RetryableError
from headless_ops.services.requests import parse_new_operation
from headless_ops.timeutil import utcnow
from tests.support.helpers import ScriptedHelper


async def _setup(runtime: Runtime, helper: ScriptedHelper) -> str:
    runtime.registry.register(helper)
    tenant = await ensure_tenant(runtime.db, "acme")
    new = runtime.devices.parse_new(
        {
            "id": "dev_1",
            "name": "r1",
            "protocol": "ssh",
            "connection": {"host": "127.0.0.1", "username": "u", "password": "pw"},
        }
    )
    await runtime.devices.create(tenant, new)
    return tenant


async def _op(runtime: Runtime, tenant: str, **extra: object) -> str:
    body = {"device_id": "dev_1", "operation_type": "reboot", **extra}
    result = await runtime.operations.create(tenant, parse_new_operation(body, by_name=False))
    return result.view.op.id


async def test_due_operation_completes_with_history(runtime: Runtime) -> None:
    helper = ScriptedHelper()
    tenant = await _setup(runtime, helper)
    op_id = await _op(runtime, tenant)
    scheduler = runtime.make_scheduler()
    await scheduler.run_until_idle(timeout=20)
    view = await runtime.operations.get(tenant, op_id, history=True)
    assert view.op.status == "completed"
    assert view.op.result == {"ok": True}
    assert view.op.attempts == 1
    assert [e["event"] for e in view.history or []] == ["running", "completed"]
    assert helper.calls == [(op_id, 1)]


async def test_future_operation_does_not_run(runtime: Runtime) -> None:
    helper = ScriptedHelper()
    tenant = await _setup(runtime, helper)
    later = (utcnow() + timedelta(hours=1)).isoformat()
    op_id = await _op(runtime, tenant, scheduled_at=later)
    await runtime.make_scheduler().run_until_idle(timeout=20)
    view = await runtime.operations.get(tenant, op_id)
    assert view.op.status == "scheduled"
    assert helper.calls == []


async def test_retryable_failure_retries_then_fails(runtime: Runtime) -> None:
    runtime.settings.retry_base_s = 0.0
    helper = ScriptedHelper(script=lambda ctx: RetryableError("unreachable", "no route"))
    tenant = await _setup(runtime, helper)
    op_id = await _op(runtime, tenant, max_attempts=3)
    await runtime.make_scheduler().run_until_idle(timeout=20)
    view = await runtime.operations.get(tenant, op_id, history=True)
    assert view.op.status == "failed"
    assert view.op.attempts == 3
    assert view.op.error is not None and view.op.error["code"] == "unreachable"
    events = [e["event"] for e in view.history or []]
    assert events.count("running") == 3
    assert events.count("retry_scheduled") == 2


async def test_permanent_failure_is_not_retried(runtime: Runtime) -> None:
    helper = ScriptedHelper(script=lambda ctx: PermanentError("auth_failed", "bad credentials"))
    tenant = await _setup(runtime, helper)
    op_id = await _op(runtime, tenant, max_attempts=5)
    await runtime.make_scheduler().run_until_idle(timeout=20)
    view = await runtime.operations.get(tenant, op_id)
    assert view.op.status == "failed"
    assert view.op.attempts == 1
    assert view.op.error == {"code": "auth_failed", "message": "bad credentials"}
