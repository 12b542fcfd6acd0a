"""``headless-ops worker`` as real subprocesses sharing one database, and test data in bulk.

Each worker runs ``python -m headless_ops worker`` with the test's settings passed as
``HEADLESS_OPS_*`` variables, the recording helper of :mod:`tests.support.recording_helper`
loaded through ``HEADLESS_OPS_HELPERS``, and JSON logs on stderr (captured to a file) so a
test can read what it said. :class:`WorkerGroup` kills whatever is left when a test ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import func, insert, select

from headless_ops.api.runtime import Runtime
from headless_ops.auth.tokens import ensure_tenant
from headless_ops.config import Settings
from headless_ops.ids import new_sortable_id
from headless_ops.store.operations import new_operation_row
from headless_ops.store.scheduling import WAKE_CHANNEL
from headless_ops.store.schema import devices, operations
from headless_ops.timeutil import utcnow

__all__ = [
    "RECORDING_HELPER",
    "WorkerGroup",
    "WorkerProcess",
    "database_is_quiet",
    "insert_devices",
    "insert_operations",
    "status_counts",
    "wait_until",
    "worker_env",
]

REPO = Path(__file__).resolve().parents[2]
RECORDING_HELPER = "tests.support.recording_helper:RecordingHelper"


def worker_env(settings: Settings, recording_dir: Path, extra: Mapping[str, Any]) -> dict[str, str]:
    """The environment of a worker on ``settings``'s database: none of the caller's
    HEADLESS_OPS_* variables, the keys and database of ``settings``, JSON logs, the
    recording helper, then ``extra`` (e.g. ``HEADLESS_OPS_LEASE_TTL_S``, ``RECORDING_SLEEP_S``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEADLESS_OPS_", "RECORDING_"))}
    env.update(
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")])),
        HEADLESS_OPS_DATA_DIR=str(settings.data_dir),
        HEADLESS_OPS_SECRET_KEYS=settings.secret_keys,
        HEADLESS_OPS_TOKEN_HASH_KEY=settings.token_hash_key,
        HEADLESS_OPS_HELPERS=RECORDING_HELPER,
        HEADLESS_OPS_LOG_FORMAT="json",
        RECORDING_DIR=str(recording_dir),
    )
    if settings.database_url:
        env["HEADLESS_OPS_DATABASE_URL"] = settings.database_url
    env.update({k: str(v) for k, v in extra.items()})
    return env


@dataclass
class WorkerProcess:
    """One running ``headless-ops worker``."""

    name: str
    proc: subprocess.Popen[bytes]
    stderr_path: Path
    stdout_path: Path
    _files: list[Any] = field(default_factory=list, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        """Everything it logged so far."""
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def logs(self) -> list[dict[str, Any]]:
        """Its JSON log events so far (other lines, e.g. a traceback, are skipped)."""
        events = []
        for line in self.stderr().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    events.append(json.loads(line))
        return events

    @property
    def worker_id(self) -> str:
        """The identity it holds leases under (from its "scheduler started" line)."""
        for event in self.logs():
            if event.get("event") == "scheduler started":
                return str(event["worker"])
        raise AssertionError(f"{self.name} has not started")

    def is_stopped(self) -> bool:
        """True while it is stopped by a signal (state ``T`` in ``/proc/<pid>/stat``)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] == "T"

    def send(self, sig: signal.Signals) -> None:
        """Send ``sig`` if it still runs."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float) -> int:  # noqa: ASYNC109 - a test bound
        """Its exit code, waiting up to ``timeout`` seconds without blocking the loop."""
        await wait_until(lambda: self.proc.poll() is not None, timeout, f"{self.name} to exit")
        return int(self.proc.returncode)

    async def wait_started(self, timeout: float = 30) -> None:  # noqa: ASYNC109
        """Until its scheduler loop has started (it then claims on every wake-up)."""

        def started() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited at start:\n{self.stderr()}")
            return any(e.get("event") == "scheduler started" for e in self.logs())

        await wait_until(started, timeout, f"{self.name} to start")

    def kill_and_close(self) -> None:
        """SIGCONT (in case it is stopped), SIGKILL, reap, close its files."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        for fh in self._files:
            fh.close()
        self._files.clear()


class WorkerGroup:
    """Starts workers on one database; ``close()`` kills those still running."""

    def __init__(self, settings: Settings, recording_dir: Path, log_dir: Path) -> None:
        self.settings = settings
        self.recording_dir = recording_dir
        self.log_dir = log_dir
        self.workers: list[WorkerProcess] = []
        recording_dir.mkdir(parents=True, exist_ok=True)
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, **extra: Any) -> WorkerProcess:
        """``python -m headless_ops worker`` with ``extra`` added to its environment."""
        out_path = self.log_dir / f"{name}.stdout"
        err_path = self.log_dir / f"{name}.stderr"
        out, err = out_path.open("wb"), err_path.open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "headless_ops", "worker"],
            # PGAPPNAME names its PostgreSQL sessions (see database_is_quiet).
            env=worker_env(self.settings, self.recording_dir, {"PGAPPNAME": name, **extra}),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
        worker = WorkerProcess(name, proc, err_path, out_path, _files=[out, err])
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        """Kill every worker still running."""
        for worker in self.workers:
            worker.kill_and_close()

    def __enter__(self) -> WorkerGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def wait_until(
    condition: Any,
    timeout: float,  # noqa: ASYNC109 - a test bound
    what: str,
    interval: float = 0.02,
) -> Any:
    """Poll ``condition`` (a callable, sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


# --------------------------------------------------------------------------- data


async def insert_devices(runtime: Runtime, tenant_name: str, count: int) -> tuple[str, list[str]]:
    """``count`` ssh devices of a new tenant, all rows in one statement; returns
    (tenant id, device ids). The first is created through the service, the rest copy its
    row (same sealed secrets), so every row is exactly what the service writes."""
    tenant = await ensure_tenant(runtime.db, tenant_name)
    first = await runtime.devices.create(
        tenant,
        runtime.devices.parse_new(
            {
                "id": "dev_0000",
                "name": "dev-0000",
                "protocol": "ssh",
                "connection": {"host": "127.0.0.1", "username": "u", "password": "pw"},
            }
        ),
    )
    async with runtime.db.read() as conn:
        row = (
            await conn.execute(
                select(devices).where(devices.c.tenant_id == tenant, devices.c.id == first.id)
            )
        ).one()
    template = dict(row._mapping)
    rows = [template | {"id": f"dev_{i:04d}", "name": f"dev-{i:04d}"} for i in range(1, count)]
    if rows:
        async with runtime.db.write() as conn:
            await conn.execute(insert(devices), rows)
    return tenant, [first.id] + [r["id"] for r in rows]


async def insert_operations(
    runtime: Runtime,
    tenant: str,
    device_ids: list[str],
    count: int,
    *,
    scheduled_at: datetime | None = None,
    operation_type: str = "reboot",
) -> list[str]:
    """``count`` scheduled operations, one transaction; operation ``i`` is on device
    ``i % len(device_ids)`` and due ``i`` microseconds after ``scheduled_at`` (default: a
    second ago), so claim order goes round the devices. Wakes PostgreSQL workers once."""
    now = utcnow()
    base = scheduled_at or now - timedelta(seconds=1)
    rows = []
    for i in range(count):
        at = base + timedelta(microseconds=i)
        rows.append(
            new_operation_row(
                op_id=new_sortable_id("op"),
                tenant_id=tenant,
                device_id=device_ids[i % len(device_ids)],
                operation_type=operation_type,
                scheduled_at=at,
                now=now,
                parameters={},
            )
        )
    async with runtime.db.write() as conn:
        for chunk in range(0, len(rows), 2000):
            await conn.execute(insert(operations), rows[chunk : chunk + 2000])
        if runtime.db.dialect == "postgresql":
            await conn.execute(select(func.pg_notify(WAKE_CHANNEL, "")))
    return [r["id"] for r in rows]


async def status_counts(runtime: Runtime) -> dict[str, int]:
    """How many operations are in each status."""
    async with runtime.db.read() as conn:
        rows = (
            await conn.execute(
                select(operations.c.status, func.count()).group_by(operations.c.status)
            )
        ).all()
    return {status: int(n) for status, n in rows}


def database_is_quiet(settings: Settings, worker: WorkerProcess) -> bool:
    """True when ``worker`` holds no transaction open: none of its PostgreSQL sessions is
    anything but idle; on SQLite, the write lock can be taken at once (whoever holds it).

    A worker stopped with SIGSTOP inside a transaction would hold its row locks (or the
    SQLite write lock) for as long as it is stopped, which no real rescue can get past.
    """
    if settings.database_url:
        dsn = settings.database_url.replace("postgresql+psycopg://", "postgresql://")
        name = dsn.rsplit("/", 1)[1]
        with psycopg.connect(dsn, autocommit=True) as conn:
            busy = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                "AND application_name = %s AND state <> 'idle'",
                (name, worker.name),
            ).fetchone()
        return busy is not None and busy[0] == 0
    conn_ = sqlite3.connect(settings.data_dir / "headless-ops.db", timeout=0, isolation_level=None)
    try:
        conn_.execute("BEGIN IMMEDIATE")
        conn_.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn_.close()
