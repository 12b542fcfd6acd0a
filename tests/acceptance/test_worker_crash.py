"""A worker that dies or freezes mid-operation, with another worker on the same database.

SIGKILL: the operation's lease is no longer renewed; once it expires the other worker's
reaper puts the operation back and runs it again — after the kill, never alongside the dead
attempt — and the history says ``lease_expired``. SIGSTOP past the lease, then SIGCONT: the
frozen worker wakes up and tries to write the result of an attempt whose lease another
worker has since taken over and finished; the write is refused by the lease version (a
``result_refused`` event, the operation keeps the second attempt's result) and the frozen
worker logs it. Both engines: PostgreSQL, and SQLite shared by processes through its lock.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

from headless_ops.api.runtime import Runtime
from headless_ops.config import Settings
from tests.support.recording_helper import Attempt, read_attempts
from tests.support.workers import (
    WorkerGroup,
    WorkerProcess,
    database_is_quiet,
    insert_devices,
    insert_operations,
    wait_until,
)

LEASE_S = 1.5


def _settings(**extra: Any) -> dict[str, Any]:
    return {
        "HEADLESS_OPS_LEASE_TTL_S": LEASE_S,
        # A rescued attempt is retried at once (no backoff), and SQLite workers, which get
        # no NOTIFY, look for work every 0.2 s.
        "HEADLESS_OPS_RETRY_BASE_S": 0,
        "HEADLESS_OPS_SAFETY_POLL_S": 0.2,
        **extra,
    }


def _attempts_of(recordings: Path, op_id: str) -> list[Attempt]:
    return [a for a in read_attempts(recordings) if a.op == op_id]


async def _one_operation(runtime: Runtime) -> tuple[str, str]:
    tenant, device_ids = await insert_devices(runtime, "acme", 1)
    [op_id] = await insert_operations(runtime, tenant, device_ids, 1)
    return tenant, op_id


async def _start_pair(group: WorkerGroup, block_until: Path) -> list[WorkerProcess]:
    """Two workers on the database; in both, a first attempt blocks until ``block_until``
    exists, a second attempt runs through. Started together: startup is the slow part."""
    pair = [
        group.start(
            name, **_settings(RECORDING_BLOCK_UNTIL=block_until, RECORDING_BLOCK_MAX_ATTEMPT=1)
        )
        for name in ("worker-a", "worker-b")
    ]
    for worker in pair:
        await worker.wait_started()
    return pair


async def _first_attempt(
    recordings: Path, op_id: str, pair: list[WorkerProcess]
) -> tuple[WorkerProcess, WorkerProcess]:
    """(the worker running the first attempt, the other one)."""
    [attempt] = await wait_until(lambda: _attempts_of(recordings, op_id), 30, "the first attempt")
    first = next(w for w in pair if w.pid == attempt.pid)
    return first, next(w for w in pair if w is not first)


async def test_sigkill_mid_operation_reruns_after_lease_expiry_never_concurrently(
    runtime: Runtime, settings: Settings, tmp_path: Path
) -> None:
    recordings = tmp_path / "recordings"
    never = tmp_path / "never-created"  # the first attempt hangs until it is killed
    with WorkerGroup(settings, recordings, tmp_path / "logs") as group:
        pair = await _start_pair(group, never)
        tenant, op_id = await _one_operation(runtime)
        first, second = await _first_attempt(recordings, op_id, pair)

        # The first worker is alive and renews its lease: the second must leave it alone.
        await asyncio.sleep(LEASE_S * 1.5)
        assert [a.pid for a in _attempts_of(recordings, op_id)] == [first.pid]
        view = await runtime.operations.get(tenant, op_id)
        assert (view.op.status, view.op.attempts) == ("running", 1)

        first.send(signal.SIGKILL)
        killed_at = time.time()
        assert await first.wait_exit(10) == -signal.SIGKILL

        async def completed() -> bool:
            return (await runtime.operations.get(tenant, op_id)).op.status == "completed"

        await wait_until(completed, 30, "the operation to be run again and complete")
        assert second.proc.poll() is None, second.stderr()
        second.send(signal.SIGTERM)
        assert await second.wait_exit(30) == 0, second.stderr()

    attempts = _attempts_of(recordings, op_id)
    assert [(a.pid, a.attempt) for a in attempts] == [(first.pid, 1), (second.pid, 2)]
    dead, rerun = attempts
    assert dead.end is None  # killed mid-operation: its interval ends at the kill
    assert rerun.end is not None and rerun.outcome == "ok"
    # Never concurrently with itself: the rerun began after the killed attempt ended.
    assert rerun.start > killed_at

    view = await runtime.operations.get(tenant, op_id, history=True)
    assert view.op.status == "completed"
    assert view.op.attempts == 2
    assert view.op.result == {"pid": second.pid, "attempt": 2}
    history = view.history or []
    assert [(e["event"], e["attempt"]) for e in history] == [
        ("running", 1),
        ("lease_expired", 1),
        ("retry_scheduled", 1),
        ("running", 2),
        ("completed", 2),
    ]
    expired = history[1]
    assert expired["error_code"] == "lease_expired"
    assert first.worker_id in expired["message"]  # whose lease it was
    assert expired["worker"] == second.worker_id  # who rescued it
    # Rescued after the kill, once the lease had run out (soon after: a lease, plus at most
    # a housekeeping pass, plus slack for a loaded machine), and only then run again.
    assert killed_at < expired["at"].timestamp() < killed_at + LEASE_S + 10
    assert expired["at"].timestamp() <= history[3]["at"].timestamp() <= rerun.start


async def _stop_outside_transactions(worker: WorkerProcess, settings: Settings) -> float:
    """SIGSTOP ``worker`` at a moment it holds no transaction open; returns when.

    Frozen inside a heartbeat's transaction it would keep its row locks (PostgreSQL) or the
    write lock (SQLite) for as long as it is stopped, and nothing could rescue anything: a
    different test from "frozen while its operation runs". Retried until the moment is right.
    """
    for _ in range(50):
        worker.send(signal.SIGSTOP)
        await wait_until(worker.is_stopped, 10, f"{worker.name} to stop")
        stopped_at = time.time()
        await asyncio.sleep(0.05)  # what it had sent before stopping reaches the server
        if await asyncio.to_thread(database_is_quiet, settings, worker):
            return stopped_at
        worker.send(signal.SIGCONT)
        await asyncio.sleep(0.05)
    raise AssertionError("the worker always had a transaction open")


async def test_sigstop_past_lease_then_resumed_late_result_is_refused(
    runtime: Runtime, settings: Settings, tmp_path: Path
) -> None:
    recordings = tmp_path / "recordings"
    release = tmp_path / "release"  # the first attempt blocks until this exists
    with WorkerGroup(settings, recordings, tmp_path / "logs") as group:
        pair = await _start_pair(group, release)
        tenant, op_id = await _one_operation(runtime)
        first, second = await _first_attempt(recordings, op_id, pair)
        stopped_at = await _stop_outside_transactions(first, settings)

        async def completed() -> bool:
            return (await runtime.operations.get(tenant, op_id)).op.status == "completed"

        await wait_until(completed, 30, "the second worker to rescue and complete it")
        assert first.is_stopped()
        # Its lease ran out while it was frozen (a heartbeat shortly before the stop may have
        # renewed it up to a third of a lease earlier): keep it frozen a full lease at least.
        await asyncio.sleep(max(0.0, stopped_at + LEASE_S - time.time()))

        # Resume the first worker with its attempt able to finish at once.
        release.touch()
        first.send(signal.SIGCONT)

        async def refused() -> bool:
            view = await runtime.operations.get(tenant, op_id, history=True)
            return any(e["event"] == "result_refused" for e in view.history or [])

        await wait_until(refused, 30, "the late result to be refused")
        await wait_until(
            lambda: all(a.end is not None for a in _attempts_of(recordings, op_id)),
            10,
            "the first worker's attempt to end",
        )
        for worker in (first, second):
            worker.send(signal.SIGTERM)
        for worker in (first, second):
            assert await worker.wait_exit(30) == 0, worker.stderr()

    view = await runtime.operations.get(tenant, op_id, history=True)
    # The operation is what the second attempt made of it: the late result changed nothing.
    assert view.op.status == "completed"
    assert view.op.attempts == 2
    assert view.op.result == {"pid": second.pid, "attempt": 2}
    assert view.op.lease_owner is None
    history = view.history or []
    events = [(e["event"], e["attempt"]) for e in history]
    assert events == [
        ("running", 1),
        ("lease_expired", 1),
        ("retry_scheduled", 1),
        ("running", 2),
        ("completed", 2),
        ("result_refused", 1),
    ]
    late = history[-1]
    assert late["error_code"] == "lease_lost"
    assert late["worker"] == first.worker_id
    assert history[1]["worker"] == second.worker_id

    attempts = _attempts_of(recordings, op_id)
    assert [(a.pid, a.attempt) for a in attempts] == [(first.pid, 1), (second.pid, 2)]
    frozen, rescue = attempts
    assert rescue.start > stopped_at and rescue.outcome == "ok"
    assert frozen.end is not None and frozen.end > rescue.end  # it finished only after SIGCONT

    # The frozen worker said why its result went nowhere, naming the operation.
    said = [e for e in first.logs() if e.get("operation_id") == op_id]
    assert any(
        e["level"] == "warning"
        and "lease" in e["event"]
        and ("refused" in e["event"] or "lost" in e["event"])
        for e in said
    ), said
