"""Exactly once, one at a time per device, across worker processes sharing a database.

10,000 operations over 500 devices, all due at once, run by real ``headless-ops worker``
processes — four on PostgreSQL, one on SQLite — with a helper that records the start and
end of every attempt in every process (see :mod:`tests.support.recording_helper`). Every
operation must complete exactly once (one recorded attempt, ``completed``, ``attempts`` 1,
one ``running`` and one ``completed`` event), no two recorded intervals on one device may
overlap, and on PostgreSQL every worker must have done part of the work (claims of 100 make
the workers interleave within each wave of free devices).
"""

from __future__ import annotations

import itertools
import signal
import time
from collections import Counter, defaultdict
from pathlib import Path

from sqlalchemy import func, select

from headless_ops.api.runtime import Runtime
from headless_ops.config import Settings
from headless_ops.store.schema import operation_events, operations
from tests.support.recording_helper import read_attempts
from tests.support.workers import (
    WorkerGroup,
    insert_devices,
    insert_operations,
    status_counts,
    wait_until,
)

OPERATIONS = 10_000
DEVICES = 500


async def test_each_operation_completes_exactly_once_without_overlap(
    runtime: Runtime, settings: Settings, engine_name: str, tmp_path: Path
) -> None:
    worker_count = 4 if engine_name == "postgresql" else 1
    recordings = tmp_path / "recordings"
    tenant, device_ids = await insert_devices(runtime, "acme", DEVICES)
    with WorkerGroup(settings, recordings, tmp_path / "logs") as group:
        workers = [
            group.start(
                f"worker-{n}",
                RECORDING_SLEEP_S=0.001,
                # Claims of 100 (default 512, more than there are devices): each wave of
                # 500 free devices is then shared by several claims, from several workers —
                # the most interleaving, the hardest case for exactly-once.
                HEADLESS_OPS_CLAIM_BATCH_SIZE=100,
                # SQLite has no NOTIFY: the insert below is seen on the next safety poll.
                # PostgreSQL keeps the default: every wake-up there comes from NOTIFY.
                **({"HEADLESS_OPS_SAFETY_POLL_S": 0.2} if engine_name == "sqlite" else {}),
            )
            for n in range(worker_count)
        ]
        # All workers wait before the work appears, so each has a fair chance at it.
        for worker in workers:
            await worker.wait_started()
        started = time.monotonic()
        op_ids = await insert_operations(runtime, tenant, device_ids, OPERATIONS)

        async def all_finished() -> bool:
            counts = await status_counts(runtime)
            for worker in workers:
                assert worker.proc.poll() is None, f"{worker.name} died:\n{worker.stderr()}"
            return counts.get("completed", 0) + counts.get("failed", 0) == OPERATIONS

        await wait_until(all_finished, timeout=150, what="every operation to finish", interval=0.2)
        elapsed = time.monotonic() - started
        for worker in workers:
            worker.send(signal.SIGTERM)
        for worker in workers:
            assert await worker.wait_exit(30) == 0, worker.stderr()

    # The database: each operation completed once, by the attempt a worker recorded.
    async with runtime.db.read() as conn:
        rows = {
            r.id: r
            for r in (
                await conn.execute(
                    select(
                        operations.c.id,
                        operations.c.device_id,
                        operations.c.status,
                        operations.c.attempts,
                        operations.c.result,
                    )
                )
            ).all()
        }
        ev = operation_events.c
        events = Counter(
            {
                (op_id, event): int(n)
                for op_id, event, n in (
                    await conn.execute(
                        select(ev.operation_id, ev.event, func.count()).group_by(
                            ev.operation_id, ev.event
                        )
                    )
                ).all()
            }
        )
    assert set(rows) == set(op_ids)
    assert Counter(r.status for r in rows.values()) == {"completed": OPERATIONS}
    assert Counter(r.attempts for r in rows.values()) == {1: OPERATIONS}
    event_kinds = Counter(event for (_, event), n in events.items() for _ in range(n))
    # Never rescued, never refused: each ran once and its one result was written.
    assert event_kinds["running"] == OPERATIONS
    assert event_kinds["completed"] == OPERATIONS
    assert event_kinds["lease_expired"] == 0
    assert event_kinds["result_refused"] == 0
    assert all(events[(op_id, "running")] == 1 for op_id in op_ids)

    # The recordings: one attempt per operation, finished, on the operation's device.
    attempts = read_attempts(recordings)
    by_op = Counter(a.op for a in attempts)
    assert len(attempts) == OPERATIONS, f"{len(attempts)} attempts for {OPERATIONS} operations"
    assert set(by_op) == set(op_ids)
    assert [op for op, n in by_op.items() if n != 1] == []
    for a in attempts:
        assert a.end is not None and a.outcome == "ok", a
        assert a.attempt == 1
        assert a.device == rows[a.op].device_id
        assert rows[a.op].result == {"pid": a.pid, "attempt": 1}

    # No two intervals on one device overlap, whichever processes ran them.
    by_device = defaultdict(list)
    for a in attempts:
        by_device[a.device].append(a)
    assert len(by_device) == DEVICES
    overlaps = []
    for device, runs in by_device.items():
        assert len(runs) == OPERATIONS // DEVICES
        runs.sort(key=lambda a: a.start)
        for before, after in itertools.pairwise(runs):
            assert before.end is not None
            if after.start < before.end:
                overlaps.append((device, before, after))
    assert overlaps == [], f"{len(overlaps)} overlaps, first: {overlaps[:1]}"

    # Every worker took part (they share the queue, they do not each take all of it).
    per_worker = Counter(a.pid for a in attempts)
    assert set(per_worker) == {w.pid for w in workers}, per_worker
    assert min(per_worker.values()) > 0
    print(f"{engine_name}: {OPERATIONS} ops in {elapsed:.1f}s; per worker {dict(per_worker)}")
