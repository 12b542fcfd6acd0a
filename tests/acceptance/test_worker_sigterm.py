"""SIGTERM drains a worker without losing or duplicating an operation.

With a grace period long enough: the worker stops claiming at once (operations not yet
started stay waiting, even one that becomes due during the drain), lets its in-flight
operations finish and records them, and exits 0. With a short grace: what is still running
when it ends is interrupted, its lease released — the operation goes back to ``scheduled``
and the interrupted attempt does not count — and another worker, already running, takes it
at once (not after the lease would have expired) and completes it: each operation completed
exactly once. Both engines.
"""

from __future__ import annotations

import signal
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

from headless_ops.api.runtime import Runtime
from headless_ops.config import Settings
from headless_ops.timeutil import utcnow
from tests.support.recording_helper import Attempt, read_attempts
from tests.support.workers import WorkerGroup, insert_devices, insert_operations, wait_until

IN_FLIGHT = 20


def _by_op(recordings: Path) -> dict[str, list[Attempt]]:
    found: dict[str, list[Attempt]] = defaultdict(list)
    for a in read_attempts(recordings):
        found[a.op].append(a)
    return found


async def test_sigterm_stops_claiming_and_lets_running_operations_finish(
    runtime: Runtime, settings: Settings, tmp_path: Path
) -> None:
    recordings = tmp_path / "recordings"
    tenant, device_ids = await insert_devices(runtime, "acme", IN_FLIGHT + 1)
    busy, spare = device_ids[:IN_FLIGHT], device_ids[IN_FLIGHT]
    with WorkerGroup(settings, recordings, tmp_path / "logs") as group:
        worker = group.start(
            "draining",
            RECORDING_SLEEP_S=1.5,
            HEADLESS_OPS_SHUTDOWN_GRACE_S=30,
            HEADLESS_OPS_SAFETY_POLL_S=0.2,
        )
        await worker.wait_started()
        # Two operations per device: the first of each runs, the second waits behind it.
        ops = await insert_operations(runtime, tenant, busy, 2 * IN_FLIGHT)
        running, waiting = ops[:IN_FLIGHT], ops[IN_FLIGHT:]
        await wait_until(
            lambda: len(read_attempts(recordings)) >= IN_FLIGHT, 30, "20 operations running"
        )
        # Due during the drain, on an idle device: a worker still claiming would take it.
        [late] = await insert_operations(
            runtime, tenant, [spare], 1, scheduled_at=utcnow() + timedelta(seconds=0.5)
        )
        term_at = time.time()
        worker.send(signal.SIGTERM)
        assert await worker.wait_exit(30) == 0, worker.stderr()

    attempts = _by_op(recordings)
    # Only what ran at SIGTERM ever started; it all ran to its end, after the signal.
    assert sorted(attempts) == sorted(running)
    for op_id in running:
        [a] = attempts[op_id]
        assert a.start < term_at < a.end  # type: ignore[operator]
        assert a.outcome == "ok"
        view = await runtime.operations.get(tenant, op_id, history=True)
        assert view.op.status == "completed"
        assert view.op.attempts == 1
        assert view.op.result == {"pid": worker.pid, "attempt": 1}
        assert [e["event"] for e in view.history or []] == ["running", "completed"]
    # What had not started is still waiting, untouched by the worker that left.
    for op_id in [*waiting, late]:
        view = await runtime.operations.get(tenant, op_id, history=True)
        assert view.op.status in ("scheduled", "pending"), view.op
        assert view.op.attempts == 0
        assert view.op.lease_owner is None
        assert "running" not in [e["event"] for e in view.history or []]

    said = {e["event"]: e for e in worker.logs()}
    assert said["draining"]["running"] == IN_FLIGHT
    assert "leases released" not in said  # nothing was left to release
    assert "scheduler stopped" in said


async def test_sigterm_past_grace_releases_leases_and_another_worker_takes_over(
    runtime: Runtime, settings: Settings, tmp_path: Path
) -> None:
    recordings = tmp_path / "recordings"
    never = tmp_path / "never-created"  # the first worker's attempts never end by themselves
    lease_s = 60  # far longer than the test: only a release can free these operations
    tenant, device_ids = await insert_devices(runtime, "acme", IN_FLIGHT)
    common = {"HEADLESS_OPS_LEASE_TTL_S": lease_s, "HEADLESS_OPS_SAFETY_POLL_S": 0.2}
    with WorkerGroup(settings, recordings, tmp_path / "logs") as group:
        first = group.start(
            "first", RECORDING_BLOCK_UNTIL=never, HEADLESS_OPS_SHUTDOWN_GRACE_S=0.5, **common
        )
        await first.wait_started()
        ops = await insert_operations(runtime, tenant, device_ids, IN_FLIGHT)
        await wait_until(
            lambda: len(read_attempts(recordings)) == IN_FLIGHT, 30, "20 operations running"
        )
        second = group.start("second", **common)
        await second.wait_started()

        term_at = time.time()
        first.send(signal.SIGTERM)
        assert await first.wait_exit(30) == 0, first.stderr()

        async def all_completed() -> bool:
            views = [await runtime.operations.get(tenant, op_id) for op_id in ops]
            return all(v.op.status == "completed" for v in views)

        await wait_until(all_completed, 30, "the second worker to complete them")
        done_at = time.time()
        second.send(signal.SIGTERM)
        assert await second.wait_exit(30) == 0, second.stderr()

    # Taken over at once, not after the lease (60 s) ran out.
    assert done_at - term_at < 20
    attempts = _by_op(recordings)
    assert sorted(attempts) == sorted(ops)
    for op_id in ops:
        # One interrupted attempt in the first worker, then one complete one in the second:
        # never both at once, and one result.
        interrupted, rerun = attempts[op_id]
        assert (interrupted.pid, interrupted.outcome) == (first.pid, "cancelled")
        assert (rerun.pid, rerun.outcome) == (second.pid, "ok")
        assert interrupted.end is not None and rerun.start > interrupted.end
        assert interrupted.end >= term_at + 0.5  # the grace period was given
        # The released attempt did not count: the rerun is attempt 1 again.
        assert (interrupted.attempt, rerun.attempt) == (1, 1)

        view = await runtime.operations.get(tenant, op_id, history=True)
        assert view.op.status == "completed"
        assert view.op.attempts == 1
        assert view.op.result == {"pid": second.pid, "attempt": 1}
        history = view.history or []
        assert [e["event"] for e in history] == ["running", "released", "running", "completed"]
        assert history[1]["worker"] == first.worker_id
        assert history[2]["worker"] == second.worker_id
        assert history[2]["at"] >= history[1]["at"]

    said = {e["event"]: e for e in first.logs()}
    assert said["draining"]["running"] == IN_FLIGHT
    assert said["leases released"]["count"] == IN_FLIGHT
