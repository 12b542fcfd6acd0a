"""The baselines of the dispatch benchmark: Procrastinate and APScheduler 3 doing no-op work.

Both are benchmark-only dependencies, never the server's. Install them into the venv with:
    .venv/bin/pip install -e '.[bench]'    (or: .venv/bin/pip install procrastinate 'apscheduler<4')

Each runner seeds ``jobs`` jobs that are all due now, in bulk and untimed (as headless-ops'
operations are seeded), then times only the dispatch: from the worker's start until every job
has run and its completion is recorded in the store.

- **Procrastinate**: its own worker (``run_worker_async``, ``concurrency=10``, ``wait=False``:
  it returns once the queue is empty) on a PostgreSQL database of the benchmark's throwaway
  cluster. A job counts when its row says ``succeeded`` (the worker's commit).
- **APScheduler 3**: ``AsyncIOScheduler`` with its ``SQLAlchemyJobStore`` on a SQLite file and
  the ``AsyncIOExecutor``, one one-shot ``date`` job per unit of work (misfire grace
  unlimited, so none is skipped for being late). It is measured twice: as shipped (the
  store's engine as ``SQLAlchemyJobStore(url="sqlite:///…")`` makes it: SQLite's rollback
  journal, ``synchronous`` at SQLite's default) and tuned to headless-ops' own settings (WAL,
  ``synchronous=FULL``), which is faster and just as durable. Either way a one-shot job's
  completion is its removal from the store; the time runs until every job was removed *and*
  executed.

Both run as headless-ops' scheduler does in the same benchmark: on uvloop, with the same
settings of the garbage collector (``headless_ops.process``).
"""

from __future__ import annotations

import asyncio
import pickle
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from headless_ops import process

__all__ = ["BaselineResult", "apscheduler_dispatch", "noop", "procrastinate_dispatch"]


@dataclass
class BaselineResult:
    """One baseline run."""

    name: str
    jobs: int
    seconds: float
    cpu_seconds: float
    detail: str = ""

    @property
    def rate(self) -> float:
        """Jobs per second."""
        return self.jobs / self.seconds


def _run(main: Any) -> Any:
    # The process settings headless-ops' scheduler gets in the same benchmark (uvloop, the
    # collector's thresholds): what is compared is the tools, not the interpreter's settings.
    process.tune_gc()
    return process.run(main)


async def noop() -> None:
    """The work: nothing (an APScheduler job must name an importable function)."""


# --------------------------------------------------------------------------- Procrastinate


async def _procrastinate(dsn: str, jobs: int, concurrency: int) -> BaselineResult:
    import procrastinate
    import psycopg

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="noop")
    async def noop_task() -> None:
        return None

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        chunk = 5000
        for start in range(0, jobs, chunk):
            await noop_task.batch_defer_async(*([{}] * min(chunk, jobs - start)))
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Fresh planner statistics, as autovacuum would have them after a bulk load.
        conn.execute("ANALYZE")
    async with app.open_async():
        cpu = time.process_time()
        t0 = time.perf_counter()
        await app.run_worker_async(
            concurrency=concurrency, wait=False, install_signal_handlers=False
        )
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - cpu
    with psycopg.connect(dsn) as conn:
        statuses: dict[str, int] = dict(
            conn.execute(
                "SELECT status, count(*) FROM procrastinate_jobs GROUP BY status"
            ).fetchall()
        )
    if statuses != {"succeeded": jobs}:
        raise RuntimeError(f"procrastinate: expected {jobs} succeeded, got {statuses}")
    return BaselineResult(
        "Procrastinate", jobs, seconds, cpu, f"worker concurrency={concurrency}, PostgreSQL"
    )


def procrastinate_dispatch(dsn: str, jobs: int, concurrency: int = 10) -> BaselineResult:
    """``jobs`` no-op jobs on the PostgreSQL database ``dsn`` (libpq form), one worker."""
    return _run(_procrastinate(dsn, jobs, concurrency))


# --------------------------------------------------------------------------- APScheduler 3


async def _apscheduler(path: Path, jobs: int, *, wal: bool) -> BaselineResult:
    from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED
    from apscheduler.executors.asyncio import AsyncIOExecutor
    from apscheduler.job import Job
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from apscheduler.triggers.date import DateTrigger
    from apscheduler.util import datetime_to_utc_timestamp
    from sqlalchemy import create_engine, event

    engine = create_engine(f"sqlite:///{path}")
    if wal:

        @event.listens_for(engine, "connect")
        def _durable(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.close()

    with engine.connect() as conn:  # what the store really runs with, for the printout
        journal = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        synchronous = conn.exec_driver_sql("PRAGMA synchronous").scalar()
    levels = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    detail = (
        f"SQLAlchemyJobStore on SQLite, {'tuned' if wal else 'as shipped'}: "
        f"journal_mode={str(journal).upper()}, synchronous={levels.get(int(synchronous or 0))}"
    )

    store = SQLAlchemyJobStore(engine=engine)
    scheduler = AsyncIOScheduler(
        jobstores={"default": store},
        executors={"default": AsyncIOExecutor()},
        job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 1},
        timezone=UTC,
    )
    done = asyncio.Event()
    counts = {"executed": 0, "failed": 0}

    def listener(ev: Any) -> None:
        counts["executed" if ev.code == EVENT_JOB_EXECUTED else "failed"] += 1
        if counts["executed"] + counts["failed"] >= jobs:
            done.set()

    scheduler.add_listener(listener, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)
    scheduler.start(paused=True)  # creates the table; nothing runs until resume()
    now = datetime.now(UTC)
    rows = []
    for i in range(jobs):
        job = Job(
            scheduler,
            id=f"job{i:07d}",
            func=noop,
            args=(),
            kwargs={},
            trigger=DateTrigger(run_date=now, timezone=UTC),
            executor="default",
            name="noop",
            misfire_grace_time=None,
            coalesce=False,
            max_instances=1,
            next_run_time=now,
        )
        rows.append(
            {
                "id": job.id,
                "next_run_time": datetime_to_utc_timestamp(now),
                "job_state": pickle.dumps(job.__getstate__(), store.pickle_protocol),
            }
        )
    # The same rows add_job() writes, in one transaction instead of one each (seeding is
    # not what is measured).
    with engine.begin() as conn:
        conn.execute(store.jobs_t.insert(), rows)
    cpu = time.process_time()
    t0 = time.perf_counter()
    scheduler.resume()
    await asyncio.wait_for(done.wait(), timeout=1800)
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - cpu
    scheduler.shutdown(wait=True)
    left = sqlite3.connect(path).execute("SELECT count(*) FROM apscheduler_jobs").fetchone()[0]
    if counts != {"executed": jobs, "failed": 0} or left:
        raise RuntimeError(f"apscheduler: {counts}, {left} jobs left in the store")
    name = "APScheduler 3 (WAL)" if wal else "APScheduler 3"
    return BaselineResult(name, jobs, seconds, cpu, detail)


def apscheduler_dispatch(path: Path, jobs: int, *, wal: bool = False) -> BaselineResult:
    """``jobs`` no-op one-shot jobs in a SQLite job store at ``path`` (a new file): as
    shipped, or with ``wal`` tuned to headless-ops' SQLite settings."""
    return _run(_apscheduler(path, jobs, wal=wal))
