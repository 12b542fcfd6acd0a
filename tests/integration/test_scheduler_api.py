"""The scheduler as ``serve`` embeds it, observed from outside, on both engines: an
operation POSTed for now starts at once although the safety poll is 30 s (the API wakes
the scheduler; no fixed polling delay), also in a burst; ``GET /{id}/`` shows the history
of transitions and attempts; ``GET /metrics`` exposes the scheduler's Prometheus metrics;
every log line about an operation carries its ``operation_id``.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from headless_ops.api.runtime import Runtime
from headless_ops.helpers.base import OperationContext, PermanentError, RetryableError
from headless_ops.logs import configure_logging
from headless_ops.store.scheduling import SchedulerStore
from headless_ops.timeutil import utcnow
from tests.conftest import Api
from tests.support.sched import (
    TrackingHelper,
    add_device,
    add_op,
    claim_as,
    eventually,
    make_scheduler,
    op,
    running,
    setup,
)

OPS = "/api/v1/inventory_device_headless_operation/"


async def _post_op(api: Api, headers: dict[str, str], device_id: str) -> dict[str, Any]:
    r = await api.client.post(
        OPS, json={"device_id": device_id, "operation_type": "reboot"}, headers=headers
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_new_operation_starts_at_once_without_polling(api: Api) -> None:
    runtime = api.runtime
    runtime.settings.safety_poll_s = 30  # a start within seconds is the wake-up's doing
    runtime.settings.shutdown_grace_s = 2
    gate = asyncio.Event()  # they keep running: only the API's wake-ups start the next
    helper = TrackingHelper(gate=gate)
    runtime.registry.register(helper)
    headers = await api.auth()
    tenant = await setup(runtime)
    for i in range(8):
        await add_device(runtime, tenant, f"dev_{i}")
    async with running(runtime.make_scheduler()):
        await asyncio.sleep(0.3)  # idle, asleep until woken or 30 s pass
        began = time.monotonic()
        first = await _post_op(api, headers, "dev_0")
        await helper.wait_started(1, timeout=5)
        assert helper.order() == [first["id"]]
        # A burst: each wake-up lands while the scheduler may be busy with the last.
        burst = [(await _post_op(api, headers, f"dev_{i}"))["id"] for i in range(1, 8)]
        await helper.wait_started(8, timeout=5)
        assert sorted(helper.order()[1:]) == sorted(burst)
        assert time.monotonic() - began < 10
        gate.set()


async def test_another_process_wakes_the_scheduler_through_notify(api: Api) -> None:
    runtime = api.runtime
    if runtime.db.dialect != "postgresql":
        pytest.skip("SQLite has no NOTIFY: other processes' changes wait for the safety poll")
    runtime.settings.safety_poll_s = 30
    runtime.settings.shutdown_grace_s = 2
    helper = TrackingHelper()
    runtime.registry.register(helper)
    headers = await api.auth()
    tenant = await setup(runtime)
    await add_device(runtime, tenant, "dev_1")
    # Not hooked to this API: it hears of the new operation only through LISTEN.
    async with running(make_scheduler(runtime, wired=False)):
        await asyncio.sleep(0.5)  # listening, then asleep for up to 30 s
        created = await _post_op(api, headers, "dev_1")
        await helper.wait_started(1, timeout=5)
    assert helper.order() == [created["id"]]


async def test_history_of_transitions_and_attempts(api: Api) -> None:
    runtime = api.runtime
    runtime.settings.retry_base_s = 0.0
    runtime.settings.shutdown_grace_s = 2

    def flaky(ctx: OperationContext) -> object:
        if ctx.attempt == 1:
            return RetryableError("unreachable", "no route to host")
        return {"rebooted": True}

    helper = TrackingHelper(script=flaky)
    runtime.registry.register(helper)
    headers = await api.auth()
    tenant = await setup(runtime)
    await add_device(runtime, tenant, "dev_1")
    scheduler = runtime.make_scheduler()
    async with running(scheduler):
        created = await _post_op(api, headers, "dev_1")

        async def finished() -> dict[str, Any] | None:
            r = await api.client.get(f"{OPS}{created['id']}/", headers=headers)
            body: dict[str, Any] = r.json()
            return body if body["status"] == "completed" else None

        body = await eventually(finished, timeout=10)
    assert body["attempts"] == 2
    assert body["result"] == {"rebooted": True}
    assert body["error"] is None
    assert body["started_at"] is not None and body["finished_at"] is not None
    history = body["history"]
    assert [(e["event"], e["attempt"], e["error_code"]) for e in history] == [
        ("running", 1, None),
        ("retry_scheduled", 1, "unreachable"),
        ("running", 2, None),
        ("completed", 2, None),
    ]
    assert "no route to host" in history[1]["message"]
    assert {e["worker"] for e in history} == {scheduler.worker_id}
    stamps = [e["at"] for e in history]
    assert stamps == sorted(stamps) and all(s.endswith("Z") for s in stamps)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def _metrics(api: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = await api.client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    for name in (
        "headless_ops_operations",
        "headless_ops_queue_depth",
        "headless_ops_oldest_due_age_seconds",
        "headless_ops_start_lateness_seconds",
        "headless_ops_attempts_total",
        "headless_ops_lease_expiries_total",
    ):
        assert f"# TYPE {name} " in r.text, name
    return _samples(r.text)


async def test_metrics(api: Api) -> None:
    runtime = api.runtime
    runtime.settings.retry_base_s = 0.0
    helper = TrackingHelper()
    runtime.registry.register(helper)
    tenant = await setup(runtime)
    for i in range(4):
        await add_device(runtime, tenant, f"dev_{i}")
    now = utcnow()
    # A worker that died holding a lease: the reaper will rescue it (one lease expiry).
    abandoned = await add_op(runtime, tenant, "dev_3", scheduled_at=now - timedelta(seconds=5))
    await claim_as(SchedulerStore(runtime.db, "dead"), utcnow(), lease_ttl=0.01)
    assert (await op(runtime, tenant, abandoned)).lease_owner == "dead"
    await add_op(runtime, tenant, "dev_0", scheduled_at=now - timedelta(seconds=90))
    await add_op(runtime, tenant, "dev_1", scheduled_at=now - timedelta(seconds=30))
    await add_op(runtime, tenant, "dev_2", "firmware_update", scheduled_at=now + timedelta(days=1))

    before = await _metrics(api)
    ops = "headless_ops_operations"
    assert before[(ops, (("operation_type", "reboot"), ("status", "scheduled")))] == 2
    assert before[(ops, (("operation_type", "reboot"), ("status", "running")))] == 1
    assert before[(ops, (("operation_type", "firmware_update"), ("status", "scheduled")))] == 1
    assert before[("headless_ops_queue_depth", ())] == 2
    assert 90 <= before[("headless_ops_oldest_due_age_seconds", ())] < 3600

    await make_scheduler(runtime).run_until_idle(timeout=20)
    assert (await op(runtime, tenant, abandoned)).status == "completed"

    after = await _metrics(api)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    completed = {"operation_type": "reboot", "outcome": "completed"}
    assert delta("headless_ops_attempts_total", **completed) == 3
    assert delta("headless_ops_lease_expiries_total") == 1
    # Lateness is observed on first attempts only (the rescued one's was the dead worker's).
    assert delta("headless_ops_start_lateness_seconds_count") == 2
    # Both waited at least 30 s past scheduled_at: neither lands in the buckets below that.
    assert delta("headless_ops_start_lateness_seconds_bucket", le="25.0") == 0
    assert delta("headless_ops_start_lateness_seconds_bucket", le="300.0") == 2
    assert after[("headless_ops_queue_depth", ())] == 0
    assert after[("headless_ops_oldest_due_age_seconds", ())] == 0
    gauges = {k: v for k, v in after.items() if k[0] == ops}
    assert gauges == {(ops, (("operation_type", "firmware_update"), ("status", "scheduled"))): 1.0}


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """``configure_logging`` (INFO, JSON) with its stderr handler writing to a returned
    stream; the previous logging setup is restored afterwards.

    sys.stderr is swapped only while ``configure_logging`` binds its handler: pytest's own
    capture re-binds sys.stderr between test phases, which would leave the handler with a
    closed stream.
    """
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    real, sys.stderr = sys.stderr, stream
    try:
        configure_logging("INFO", "json")
    finally:
        sys.stderr = real
    try:
        yield stream
    finally:
        structlog.reset_defaults()
        root.handlers[:], level = saved
        root.setLevel(level)


async def test_every_log_line_about_an_operation_names_it(
    runtime: Runtime, json_logs: io.StringIO
) -> None:
    runtime.settings.retry_base_s = 0.0
    runtime.settings.shutdown_grace_s = 2

    def script(ctx: OperationContext) -> object:
        kind = ctx.parameters.get("names", ["ok"])[0]
        if kind == "retry":
            return RetryableError("unreachable", "no route")
        if kind == "refused":
            return PermanentError("auth_failed", "bad credentials")
        if kind == "crash":
            raise RuntimeError("helper bug")
        return {"ok": True}

    helper = TrackingHelper(script=script)
    runtime.registry.register(helper)
    tenant = await setup(runtime)
    # Claimed by a worker that dies at once: rescued when its lease expires.
    await add_device(runtime, tenant, "dev_dead")
    rescued = await add_op(runtime, tenant, "dev_dead")
    await claim_as(SchedulerStore(runtime.db, "dead"), utcnow(), lease_ttl=0.01)
    ids = [rescued]
    for kind in ("ok", "retry", "refused", "crash"):
        await add_device(runtime, tenant, f"dev_{kind}")
        ids.append(
            await add_op(
                runtime,
                tenant,
                f"dev_{kind}",
                "get_parameters",
                parameters={"names": [kind]},
                max_attempts=2,
            )
        )
    await add_device(runtime, tenant, "dev_cwmp", protocol="cwmp")  # no helper for it
    ids.append(await add_op(runtime, tenant, "dev_cwmp"))
    await asyncio.sleep(0.05)

    async def all_finished() -> bool:
        states = [(await op(runtime, tenant, i)).status for i in ids]
        return all(s in ("completed", "failed") for s in states)

    async with running(make_scheduler(runtime)):
        await eventually(all_finished, timeout=10)

    lines = [json.loads(line) for line in json_logs.getvalue().splitlines() if line.strip()]
    # Lines about the scheduler as a whole; every other one is about an operation.
    process_level = {"scheduler started", "scheduler stopped", "draining", "leases released"}
    about_ops = [line for line in lines if line["event"] not in process_level]
    assert about_ops
    for line in about_ops:
        assert line.get("operation_id") in ids, line
    finished = {line["operation_id"] for line in about_ops if line["event"] == "attempt finished"}
    assert finished == set(ids)
    rescue = [line for line in about_ops if line["event"].startswith("lease expired")]
    assert [line["operation_id"] for line in rescue] == [rescued]
    crash = [line for line in about_ops if line.get("exception")]
    assert crash and all("helper bug" in line["exception"] for line in crash)
