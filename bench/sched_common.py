"""Shared plumbing of the scheduler benchmarks: helpers, databases, bulk data, dispatch runs.

The benchmarks seed operations straight into the tables (one transaction, driver-level bulk
insert: COPY on PostgreSQL) because what they measure is the scheduler, not the API. The
rows are the ones the API would write (same columns, same encodings). Every run ends by
checking in the database that each operation completed exactly once.

Helpers here are importable by worker subprocesses through
``HEADLESS_OPS_HELPERS=bench.sched_common:InstantHelper`` (with the repo root on
``PYTHONPATH``). They speak a protocol of their own, ``bench``, so they never collide with a
real helper installed for ``ssh`` or ``cwmp``; the benchmark's devices use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from bench.common import bench_settings, percentile, sortable_id
from headless_ops import process
from headless_ops.api.runtime import Runtime
from headless_ops.config import Settings
from headless_ops.crypto import load_keys
from headless_ops.domain.devices import DeviceStatus
from headless_ops.domain.operations import OperationType
from headless_ops.helpers.base import DeviceView, OperationContext, StatusReport
from headless_ops.helpers.registry import HelperRegistry
from headless_ops.logs import configure_logging
from headless_ops.scheduler.worker import Scheduler
from headless_ops.store.db import Database
from headless_ops.store.migrate import upgrade

__all__ = [
    "PROTOCOL",
    "TENANT",
    "CpuMeter",
    "DispatchResult",
    "InstantHelper",
    "PgServer",
    "SleepHelper",
    "StampingHelper",
    "count_status",
    "dispatch_in_process",
    "env_for_worker",
    "event_counts",
    "future_times",
    "goal_line",
    "insert_devices",
    "insert_operations",
    "last_finished",
    "latencies",
    "make_runtime",
    "pg_dsn",
    "run",
    "run_scheduler_until",
    "sqlite_database",
    "status_counts",
    "summarise_ms",
]

PROTOCOL = "bench"
TENANT = "ten_bench"
OPERATION_TYPE = "reboot"


# --------------------------------------------------------------------------- helpers


class InstantHelper:
    """Returns at once and records nothing: what is left is the scheduler's own cost."""

    protocol = PROTOCOL
    supported_operations = frozenset(OperationType)

    async def refresh_status(self, device: DeviceView) -> StatusReport:
        return StatusReport(DeviceStatus.ONLINE)

    async def execute(self, context: OperationContext) -> dict[str, Any]:
        return {}


class SleepHelper(InstantHelper):
    """Waits ``delay`` seconds without using the CPU (a device that takes a while)."""

    def __init__(self, delay: float = 0.010) -> None:
        self.delay = delay

    async def execute(self, context: OperationContext) -> dict[str, Any]:
        await asyncio.sleep(self.delay)
        return {}


class StampingHelper(InstantHelper):
    """Notes the wall-clock time at which each operation's first attempt reached the helper."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}

    async def execute(self, context: OperationContext) -> dict[str, Any]:
        self.started.setdefault(context.operation_id, time.time())
        return {}


# --------------------------------------------------------------------------- databases


def sqlite_database(root: Path, name: str, **overrides: Any) -> Settings:
    """A fresh migrated SQLite database in ``root/name`` (default ``synchronous=FULL``)."""
    settings = bench_settings(root / name, log_level="WARNING", **overrides)
    upgrade(settings)
    return settings


def pg_dsn(settings: Settings) -> str:
    """A libpq connection string for ``settings``' PostgreSQL database."""
    return settings.effective_database_url.replace("postgresql+psycopg://", "postgresql://")


class PgServer:
    """A throwaway PostgreSQL cluster (tests/support/postgres.py) and databases in it."""

    def __init__(self, root: Path) -> None:
        from tests.support.postgres import PostgresCluster

        self.root = root
        self.cluster = PostgresCluster()
        self._n = 0

    def __enter__(self) -> PgServer:
        self.cluster.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.cluster.stop()

    @property
    def admin_dsn(self) -> str:
        """The maintenance database."""
        return self.cluster.url().replace("postgresql+psycopg://", "postgresql://")

    def database(self, name: str, **overrides: Any) -> Settings:
        """A new migrated database ``name`` (unique per call)."""
        self._n += 1
        dbname = f"{name}_{self._n}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        settings = bench_settings(
            self.root / dbname,
            database_url=self.cluster.url(dbname),
            log_level="WARNING",
            **overrides,
        )
        upgrade(settings)
        return settings

    def drop(self, settings: Settings) -> None:
        """Drop a database made by :meth:`database` (big ones fill the disk)."""
        dbname = settings.effective_database_url.rsplit("/", 1)[1]
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


# --------------------------------------------------------------------------- bulk data


def _sqlite_time(value: datetime) -> str:
    # What headless_ops.store.types.UtcDateTime writes on SQLite.
    return value.astimezone(UTC).isoformat(sep=" ", timespec="microseconds")[:26]


def _device_id(i: int) -> str:
    return f"dev_b{i:07d}"


_DEVICE_COLUMNS = (
    "tenant_id, id, name, protocol, connection, secrets, labels, maintenance_window, status, "
    "status_detail, last_seen_at, firmware_version, created_at, updated_at"
)
_OP_COLUMNS = (
    "id, tenant_id, device_id, operation_type, status, priority, scheduled_at, run_after, "
    "expires_at, maintenance_window, parameters, result, error, attempts, max_attempts, "
    "created_at, updated_at, started_at, finished_at, lease_owner, lease_expires_at, "
    "lease_version, cancel_requested, wait_reason"
)


def _sqlite_path(settings: Settings) -> str:
    return settings.effective_database_url.split(":///", 1)[1]


@contextlib.contextmanager
def _sqlite(settings: Settings) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(_sqlite_path(settings), isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA cache_size=-262144")  # 256 MiB: bulk loads touch every index
        yield conn
    finally:
        conn.close()


def insert_devices(settings: Settings, count: int) -> None:
    """The tenant and ``count`` devices ``dev_b0000000``… of protocol ``bench``."""
    now = datetime.now(UTC)
    stamp: Any = _sqlite_time(now) if settings.is_sqlite else now
    # connection, secrets, labels, maintenance_window, status, status_detail, last_seen_at,
    # firmware_version, created_at, updated_at
    tail = ("{}", None, "{}", None, "unknown", None, None, None, stamp, stamp)
    rows = [(TENANT, _device_id(i), f"bench-{i:07d}", PROTOCOL, *tail) for i in range(count)]
    if settings.is_sqlite:
        with _sqlite(settings) as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)",
                (TENANT, "bench", stamp),
            )
            conn.executemany(
                f"INSERT INTO devices ({_DEVICE_COLUMNS}) VALUES ({', '.join('?' * 14)})", rows
            )
            conn.execute("COMMIT")
        return
    with psycopg.connect(pg_dsn(settings)) as conn:
        conn.execute(
            "INSERT INTO tenants (id, name, created_at) VALUES (%s, %s, %s)",
            (TENANT, "bench", now),
        )
        with conn.cursor().copy(f"COPY devices ({_DEVICE_COLUMNS}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(r)


def insert_operations(
    settings: Settings,
    times: Sequence[datetime],
    *,
    devices: int,
    first: int = 0,
    notify: bool = False,
) -> float:
    """One ``scheduled`` reboot per entry of ``times`` (its ``scheduled_at``), the i-th on
    device ``(first + i) % devices``, in one transaction; returns the wall-clock time of the
    commit. ``notify``: also wake PostgreSQL workers (as the API does) in that transaction.
    """
    now = datetime.now(UTC)
    base_ms = int(now.timestamp() * 1000)

    def op_id(i: int) -> str:
        return sortable_id("op", base_ms, first + i)

    def device(i: int) -> str:
        return _device_id((first + i) % devices)

    if settings.is_sqlite:
        stamp = _sqlite_time(now)
        # expires_at, maintenance_window, parameters, result, error, attempts, max_attempts,
        # created_at, updated_at, started_at, finished_at, lease_owner, lease_expires_at,
        # lease_version, cancel_requested, wait_reason
        tail = (None, None, "{}", None, None, 0, 3, stamp, stamp, None, None, None, None, 0, 0)
        rows = (
            (op_id(i), TENANT, device(i), OPERATION_TYPE, "scheduled", 1, t, t, *tail, None)
            for i, t in enumerate(map(_sqlite_time, times))
        )
        with _sqlite(settings) as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                f"INSERT INTO operations ({_OP_COLUMNS}) VALUES ({', '.join('?' * 24)})", rows
            )
            conn.execute("COMMIT")
        return time.time()
    with psycopg.connect(pg_dsn(settings)) as pg:
        # COPY in text format, built as one buffer: the fastest way in for a million rows.
        buf = io.StringIO()
        stamp = now.isoformat()
        rest = f"\\N\t\\N\t{{}}\t\\N\t\\N\t0\t3\t{stamp}\t{stamp}\t\\N\t\\N\t\\N\t\\N\t0\tf\t\\N\n"
        for i, at in enumerate(times):
            t = at.isoformat()
            buf.write(f"{op_id(i)}\t{TENANT}\t{device(i)}\t{OPERATION_TYPE}\tscheduled\t1\t")
            buf.write(f"{t}\t{t}\t{rest}")
        with pg.cursor().copy(f"COPY operations ({_OP_COLUMNS}) FROM STDIN") as copy:
            copy.write(buf.getvalue())
        if notify:
            pg.execute("SELECT pg_notify('headless_ops_wake', '')")
    return time.time()


def _query(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    if settings.is_sqlite:
        with _sqlite(settings) as conn:
            return list(conn.execute(sql).fetchall())
    with psycopg.connect(pg_dsn(settings)) as pg:
        return list(pg.execute(sql).fetchall())


def status_counts(settings: Settings) -> dict[str, int]:
    """Operations by status."""
    return dict(_query(settings, "SELECT status, count(*) FROM operations GROUP BY status"))


def _epoch(value: Any) -> float:
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()
    return float(value.timestamp())


def latencies(settings: Settings) -> dict[str, dict[str, float]]:
    """Per operation: scheduled_at, started_at (the claim) and finished_at, as epoch seconds.

    Only first attempts count: ``started_at`` is the latest attempt's start.
    """
    rows = _query(
        settings,
        "SELECT id, scheduled_at, started_at, finished_at FROM operations "
        "WHERE attempts = 1 AND started_at IS NOT NULL",
    )
    return {
        r[0]: {
            "scheduled": _epoch(r[1]),
            "started": _epoch(r[2]),
            "finished": _epoch(r[3]) if r[3] is not None else float("nan"),
        }
        for r in rows
    }


def last_finished(settings: Settings) -> float:
    """The latest ``finished_at`` (epoch seconds)."""
    rows = _query(settings, "SELECT max(finished_at) FROM operations")
    return _epoch(rows[0][0])


def count_status(settings: Settings, status: str) -> int:
    """How many operations have ``status``."""
    rows = _query(settings, f"SELECT count(*) FROM operations WHERE status = '{status}'")
    return int(rows[0][0])


def event_counts(settings: Settings) -> dict[str, int]:
    """History rows by event (``running`` once per attempt started)."""
    return dict(_query(settings, "SELECT event, count(*) FROM operation_events GROUP BY event"))


# --------------------------------------------------------------------------- CPU


def _cpu_ticks() -> tuple[int, int]:
    # /proc/stat "cpu" line: user nice system idle iowait irq softirq steal ...
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields[:8]) - idle, sum(fields[:8])


class CpuMeter:
    """How busy the whole machine was (all cores, every process) while in the block: on a
    shared machine this says how much of the CPU the benchmark could actually have had."""

    busy = float("nan")

    def __enter__(self) -> CpuMeter:
        self._start = _cpu_ticks()
        return self

    def __exit__(self, *_exc: object) -> None:
        busy, total = _cpu_ticks()
        self.busy = (busy - self._start[0]) / max(1, total - self._start[1])


# --------------------------------------------------------------------------- dispatch


@dataclass
class DispatchResult:
    """One in-process dispatch run."""

    engine: str
    operations: int
    seconds: float
    statuses: dict[str, int] = field(default_factory=dict)
    started_events: int = 0
    #: CPU seconds of this process (all threads) during the run, and the machine's busy share.
    cpu_seconds: float = float("nan")
    machine_busy: float = float("nan")

    @property
    def rate(self) -> float:
        """Operations recorded per second."""
        return self.operations / self.seconds

    def check(self) -> None:
        """Every operation completed, each with exactly one attempt started."""
        if self.statuses != {"completed": self.operations}:
            raise RuntimeError(f"{self.engine}: expected all completed, got {self.statuses}")
        if self.started_events != self.operations:
            raise RuntimeError(
                f"{self.engine}: {self.started_events} attempts for {self.operations} operations"
            )


def make_runtime(settings: Settings, helper: Any) -> Runtime:
    """A runtime whose registry holds just ``helper`` (logs at WARNING: one line per
    operation at INFO would be a benchmark of the terminal)."""
    configure_logging("WARNING")
    registry = HelperRegistry()
    registry.register(helper)
    box, hasher = load_keys(settings)
    return Runtime(settings, Database(settings), box, hasher, registry)


async def run_scheduler_until(
    runtime: Runtime, expected: int, limit_s: float
) -> tuple[Scheduler, float, float]:
    """Run a scheduler until ``expected`` outcomes are committed; (scheduler, start, end)
    as wall-clock times, ``end`` being when the last outcome's transaction committed."""
    scheduler = runtime.make_scheduler()
    stop = asyncio.Event()
    recorded = 0
    end = 0.0
    record = scheduler.store.record

    async def counting_record(now: datetime, outcomes: Sequence[Any]) -> set[str]:
        # The recorder's write: once it returns, the outcomes are committed (durable).
        nonlocal recorded, end
        refused = await record(now, outcomes)
        recorded += len(outcomes) - len(refused)
        if recorded >= expected:
            end = time.time()
            stop.set()
        return refused

    scheduler.store.record = counting_record  # type: ignore[method-assign]
    cpu = time.process_time()
    start = time.time()
    task = asyncio.create_task(scheduler.run(stop))
    try:
        await asyncio.wait_for(stop.wait(), limit_s)
    except TimeoutError:
        stop.set()
        raise RuntimeError(f"only {recorded} of {expected} outcomes within {limit_s:g}s") from None
    finally:
        await task
    scheduler.cpu_seconds = time.process_time() - cpu  # type: ignore[attr-defined]
    return scheduler, start, end


def dispatch_in_process(
    settings: Settings,
    helper: Any,
    operations: int,
    *,
    devices: int | None = None,
    timeout: float = 300.0,
    label: str = "",
    background: int = 0,
) -> DispatchResult:
    """``operations`` due now over ``devices`` devices (default: one each), on a database
    that already holds whatever the caller put there; run one in-process scheduler until all
    are recorded. The time is from the scheduler's start to the commit of the last outcome.
    ``background``: how many future operations the caller queued (they must stay waiting).
    """
    devices = devices or operations
    insert_devices(settings, devices)
    now = datetime.now(UTC)
    insert_operations(settings, [now] * operations, devices=devices)

    async def main() -> tuple[float, float, float]:
        runtime = make_runtime(settings, helper)
        try:
            scheduler, start, end = await run_scheduler_until(runtime, operations, timeout)
        finally:
            await runtime.close()
        return start, end, scheduler.cpu_seconds  # type: ignore[attr-defined]

    with CpuMeter() as meter:
        start, end, cpu = run(main())
    statuses = status_counts(settings)
    # The caller's future operations must still be waiting, untouched.
    if background and statuses.pop("scheduled", 0) != background:
        raise RuntimeError(f"background operations disturbed: {statuses}")
    result = DispatchResult(
        label or ("sqlite" if settings.is_sqlite else "postgresql"),
        operations,
        end - start,
        statuses,
        event_counts(settings).get("running", 0),
        cpu,
        meter.busy,
    )
    result.check()
    return result


def run(coro: Any) -> Any:
    """Run ``coro`` as ``headless-ops worker`` runs its scheduler: on uvloop, with the
    process's collector settings (``headless_ops.process``)."""
    process.tune_gc()
    return process.run(coro)


# --------------------------------------------------------------------------- reporting


def summarise_ms(values: Sequence[float]) -> str:
    """``p50 / p99 / max`` of seconds, printed in milliseconds."""
    vals = list(values)
    return (
        f"p50 {percentile(vals, 50) * 1000:7.1f} ms   p99 {percentile(vals, 99) * 1000:7.1f} ms"
        f"   max {max(vals) * 1000:7.1f} ms"
    )


def goal_line(label: str, value: float, goal: float, unit: str, *, at_most: bool = False) -> str:
    """``label: value unit (goal >= goal): met|NOT MET``."""
    met = value <= goal if at_most else value >= goal
    sign = "<=" if at_most else ">="
    return f"{label}: {value:,.2f}{unit} (goal {sign} {goal:,.2f}{unit}): {'met' if met else 'NOT MET'}"


def env_for_worker(settings: Settings, helpers: str) -> dict[str, str]:
    """Environment of a ``python -m headless_ops worker`` subprocess on ``settings``."""
    from bench.common import REPO

    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADLESS_OPS_")}
    env.update(
        HEADLESS_OPS_DATA_DIR=str(settings.data_dir),
        HEADLESS_OPS_SECRET_KEYS=settings.secret_keys,
        HEADLESS_OPS_TOKEN_HASH_KEY=settings.token_hash_key,
        HEADLESS_OPS_LOG_LEVEL="WARNING",
        HEADLESS_OPS_HELPERS=helpers,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")])),
    )
    if settings.database_url:
        env["HEADLESS_OPS_DATABASE_URL"] = settings.database_url
    return env


def future_times(count: int, start: datetime, span: timedelta) -> list[datetime]:
    """``count`` instants evenly from ``start`` over ``span``."""
    step = span / count
    return [start + step * i for i in range(count)]
