"""GET list latency as the table grows: 10,000 against 1,000,000 stored operations.

The same number of devices holds the operations in both databases, so each device's own
history is 100 times longer in the large one: the query a page of one device needs (the
count of its operations and the newest 50) works on 100 times more matching rows, not just
on a larger table. The operations are written directly with SQL (executemany in large
transactions) into a database migrated with the project's own migrations, then served by
``python -m headless_ops serve`` (a subprocess) and read one request at a time over a
keep-alive connection: ``GET …/inventory_device_headless_operation/?device_id=…&limit=50``
for random devices. Goal: p99 with 1,000,000 at most twice the p99 with 10,000.

``--commands serve,api`` also measures the API without the embedded scheduler (``api``),
which tells the API's own scaling from the scheduler's. ``--engines sqlite,postgresql`` adds
PostgreSQL: a throwaway cluster (tests/support/postgres.py), loaded with COPY.

Run: ``python -m bench.api_list [--sizes 10000,1000000] [--devices 1000] [--requests 1500]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from bench.common import (
    HOST,
    HttpConnection,
    Server,
    bench_settings,
    device_rows,
    headless_ops_server,
    insert_token_sqlite,
    load_average,
    migrated_sqlite,
    percentile,
    print_machine,
    scratch_dir,
    sortable_id,
    sqlite_datetime,
)
from headless_ops.config import Settings
from headless_ops.store.migrate import upgrade
from headless_ops.store.operations import OperationFilter
from headless_ops.store.schema import operations

GOAL = 2.0
PATH = "/api/v1/inventory_device_headless_operation/"
TENANT = "ten_bench"
BATCH = 50_000

# A history as a fleet leaves it: mostly finished operations of every kind.
_KINDS: list[tuple[str, dict[str, Any]]] = [
    ("firmware_update", {"firmware_version": "2.1.3", "auto_reboot": True}),
    ("configuration_sync", {"config_source": "git://configs/main", "dry_run": False}),
    (
        "backup_configuration",
        {"backup_location": "s3://backups/devices/", "compression": True, "retention_days": 30},
    ),
    ("reboot", {"delay_seconds": 0}),
    ("get_parameters", {"parameters": ["Device.DeviceInfo.SoftwareVersion"]}),
]
_STATUSES = ["completed"] * 90 + ["failed"] * 6 + ["cancelled"] * 4


@dataclass
class Dataset:
    """A stored history: which device has how many operations."""

    size: int
    devices: list[str]
    per_device: dict[str, int]


def operation_rows(
    size: int, devices: list[str], seed: int
) -> Iterator[tuple[dict[str, Any], int, datetime]]:
    """``size`` finished operations spread at random over ``devices``, oldest first.

    Yields ``(column values without timestamps, millis, created)``; ids sort by creation
    time as real ones do. Nothing is due, so an embedded scheduler stays idle.
    """
    rng = random.Random(seed)
    base = datetime.now(UTC) - timedelta(days=30)
    step = timedelta(days=29) / size
    for i in range(size):
        created = base + step * i
        millis = int(created.timestamp() * 1000)
        kind, params = _KINDS[i % len(_KINDS)]
        status = _STATUSES[rng.randrange(len(_STATUSES))]
        values = {
            "id": sortable_id("op", millis, rng.getrandbits(80)),
            "tenant_id": TENANT,
            "device_id": devices[rng.randrange(len(devices))],
            "operation_type": kind,
            "status": status,
            "priority": 1,
            "expires_at": None,
            "maintenance_window": None,
            "parameters": params,
            "result": {"ok": True} if status == "completed" else None,
            "error": {"code": status, "message": status} if status != "completed" else None,
            "attempts": 1,
            "max_attempts": 3,
            "lease_owner": None,
            "lease_expires_at": None,
            "lease_version": 1,
            "cancel_requested": False,
        }
        yield values, millis, created


_TIME_COLUMNS = (
    "scheduled_at",
    "run_after",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
)


def _times(created: datetime) -> dict[str, datetime]:
    done = created + timedelta(seconds=30)
    return {
        "scheduled_at": created,
        "run_after": created,
        "created_at": created,
        "updated_at": done,
        "started_at": created + timedelta(seconds=1),
        "finished_at": done,
    }


def _columns_present(names: list[str], required: dict[str, bool]) -> list[str]:
    """The columns this benchmark fills; fails on a NOT NULL column it does not know."""
    known = set(operations.c.keys())
    missing = [n for n, notnull in required.items() if notnull and n not in known]
    if missing:
        raise SystemExit(f"operations has NOT NULL columns this benchmark cannot fill: {missing}")
    return [n for n in names if n in known]


# --------------------------------------------------------------------------- SQLite


def load_sqlite(db_file: Path, size: int, devices: int, seed: int) -> Dataset:
    """Devices and ``size`` operations written straight into a migrated SQLite file."""
    per_device: dict[str, int] = {}
    dev_rows = device_rows(TENANT, devices)
    ids = [r[1] for r in dev_rows]
    with contextlib.closing(sqlite3.connect(db_file, isolation_level=None)) as conn:
        # Loading only: the measurement runs with the server's own settings.
        conn.execute("PRAGMA synchronous=OFF")
        info = conn.execute("PRAGMA table_info(operations)").fetchall()
        table_cols = [r[1] for r in info]
        required = {r[1]: bool(r[3]) and r[4] is None for r in info}
        cols = _columns_present(table_cols, required)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO devices (tenant_id, id, name, protocol, connection, secrets, labels, "
            "maintenance_window, status, status_detail, last_seen_at, firmware_version, "
            "created_at, updated_at) VALUES (" + ", ".join(["?"] * 14) + ")",
            dev_rows,
        )
        conn.execute("COMMIT")
        sql = f"INSERT INTO operations ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        batch: list[tuple[Any, ...]] = []
        for values, _millis, created in operation_rows(size, ids, seed):
            per_device[values["device_id"]] = per_device.get(values["device_id"], 0) + 1
            row = {**values, **{k: sqlite_datetime(v) for k, v in _times(created).items()}}
            row["parameters"] = json.dumps(row["parameters"])
            row["result"] = None if row["result"] is None else json.dumps(row["result"])
            row["error"] = None if row["error"] is None else json.dumps(row["error"])
            row["cancel_requested"] = 0
            batch.append(tuple(row.get(c) for c in cols))
            if len(batch) >= BATCH:
                conn.execute("BEGIN")
                conn.executemany(sql, batch)
                conn.execute("COMMIT")
                batch.clear()
        if batch:
            conn.execute("BEGIN")
            conn.executemany(sql, batch)
            conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return Dataset(size, ids, per_device)


def explain_sqlite(db_file: Path, device_id: str) -> list[str]:
    """SQLite's plan for the count and the page the list endpoint runs."""
    flt = OperationFilter(device_id=device_id)
    count = flt.apply(select(func.count()).select_from(operations), TENANT)
    page = flt.apply(select(operations), TENANT).order_by(operations.c.id.desc()).limit(50)
    out = []
    with contextlib.closing(sqlite3.connect(db_file)) as conn:
        for name, query in (("count", count), ("page", page)):
            sql = str(
                query.compile(
                    dialect=sqlite_dialect.dialect(), compile_kwargs={"literal_binds": True}
                )
            )
            plan = conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
            out.append(f"{name}: " + "; ".join(str(r[-1]) for r in plan))
    return out


# --------------------------------------------------------------------------- PostgreSQL


def load_postgres(url: str, size: int, devices: int, seed: int) -> Dataset:
    """Devices and ``size`` operations written with COPY into a migrated database."""
    import psycopg
    from psycopg.types.json import Jsonb

    per_device: dict[str, int] = {}
    dev_rows = device_rows(TENANT, devices)
    ids = [r[1] for r in dev_rows]
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        info = conn.execute(
            "SELECT column_name, is_nullable = 'NO' AND column_default IS NULL "
            "FROM information_schema.columns WHERE table_name = 'operations' "
            "ORDER BY ordinal_position"
        ).fetchall()
        cols = _columns_present([r[0] for r in info], {r[0]: bool(r[1]) for r in info})
        now = datetime.now(UTC)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO devices (tenant_id, id, name, protocol, connection, secrets, "
                "labels, maintenance_window, status, status_detail, last_seen_at, "
                "firmware_version, created_at, updated_at) VALUES "
                "(%s, %s, %s, %s, %s::jsonb, %s, %s::jsonb, %s, %s, %s, %s, %s, %s, %s)",
                [(*r[:12], now, now) for r in dev_rows],
            )
            with cur.copy(f"COPY operations ({', '.join(cols)}) FROM STDIN") as copy:
                for values, _millis, created in operation_rows(size, ids, seed):
                    per_device[values["device_id"]] = per_device.get(values["device_id"], 0) + 1
                    row = {**values, **_times(created)}
                    for key in ("parameters", "result", "error"):
                        if row[key] is not None:
                            row[key] = Jsonb(row[key])
                    copy.write_row(tuple(row.get(c) for c in cols))
        conn.commit()
        conn.autocommit = True
        # What autovacuum would have done by the time a table has grown this large.
        conn.execute("VACUUM ANALYZE operations")
        conn.execute("VACUUM ANALYZE devices")
    return Dataset(size, ids, per_device)


def insert_token_postgres(url: str, settings: Settings) -> str:
    """A tenant and an admin token for it; returns the bearer value."""
    import psycopg

    from headless_ops.crypto import load_keys

    _, hasher = load_keys(settings)
    secret = "bench-secret-" + "x" * 32
    now = datetime.now(UTC)
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        conn.execute(
            "INSERT INTO tenants (id, name, created_at) VALUES (%s, %s, %s)",
            (TENANT, "bench", now),
        )
        conn.execute(
            "INSERT INTO api_tokens (id, tenant_id, name, secret_hash, scopes, created_at) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            ("tok_bench0000000000", TENANT, "bench", hasher.hash(secret), "admin", now),
        )
    return f"tok_bench0000000000.{secret}"


def explain_postgres(url: str, device_id: str) -> list[str]:
    """PostgreSQL's plan (with timings) for the count and the page."""
    import psycopg

    flt = OperationFilter(device_id=device_id)
    count = flt.apply(select(func.count()).select_from(operations), TENANT)
    page = flt.apply(select(operations), TENANT).order_by(operations.c.id.desc()).limit(50)
    out = []
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        for name, query in (("count", count), ("page", page)):
            sql = str(
                query.compile(dialect=pg_dialect.dialect(), compile_kwargs={"literal_binds": True})
            )
            plan = conn.execute("EXPLAIN (ANALYZE, COSTS OFF) " + sql).fetchall()
            lines = [r[0].strip() for r in plan if not r[0].lstrip().startswith("Planning")]
            out.append(f"{name}: " + " / ".join(lines))
    return out


# --------------------------------------------------------------------------- measurement


async def _latencies(
    port: int, bearer: str, data: Dataset, requests: int, warmup: int, seed: int
) -> list[float]:
    rng = random.Random(seed)
    conn = await HttpConnection.open(HOST, port)
    headers = {"Authorization": f"Bearer {bearer}", "Accept": "application/json"}
    out: list[float] = []
    try:
        for i in range(warmup + requests):
            device = data.devices[rng.randrange(len(data.devices))]
            raw = HttpConnection.encode(
                "GET", f"{PATH}?device_id={device}&limit=50", f"{HOST}:{port}", headers
            )
            start = time.perf_counter()
            status, body = await conn.send(raw)
            elapsed = time.perf_counter() - start
            if status != 200:
                raise SystemExit(f"GET list answered {status}: {body[:300]!r}")
            page = json.loads(body)
            expected = data.per_device.get(device, 0)
            if page["count"] != expected or len(page["results"]) != min(50, expected):
                raise SystemExit(
                    f"{device}: count {page['count']} / {len(page['results'])} results, "
                    f"expected {expected}"
                )
            if i >= warmup:
                out.append(elapsed)
    finally:
        await conn.close()
    return out


def measure(
    server: Server, bearer: str, data: Dataset, args: argparse.Namespace, seed: int
) -> list[float]:
    """Per-request latencies (seconds) of ``args.requests`` page requests."""
    with server:
        return asyncio.run(_latencies(server.port, bearer, data, args.requests, args.warmup, seed))


def _summary(lat: list[float]) -> str:
    ms = [v * 1000 for v in lat]
    return (
        f"p50 {percentile(ms, 50):6.2f} ms  p90 {percentile(ms, 90):6.2f} ms  "
        f"p99 {percentile(ms, 99):6.2f} ms  max {max(ms):7.2f} ms"
    )


def run_engine(engine: str, root: Path, args: argparse.Namespace) -> dict[str, float]:
    """Load each size, measure in alternating rounds, print; p99(large)/p99(small) by command."""
    sizes: list[int] = args.sizes
    targets: dict[tuple[int, str], tuple[Server, str, Dataset]] = {}
    cluster = None
    try:
        if engine == "postgresql":
            import psycopg
            from tests.support.postgres import PostgresCluster

            cluster = PostgresCluster()
            cluster.start()
        for size in sizes:
            started = time.perf_counter()
            if engine == "sqlite":
                settings, db_file = migrated_sqlite(root, f"sqlite-{size}")
                bearer = insert_token_sqlite(db_file, settings)
                data = load_sqlite(db_file, size, args.devices, seed=size)
                plan = explain_sqlite(db_file, data.devices[0])
            else:
                assert cluster is not None
                name = f"bench_{size}"
                with psycopg.connect(cluster.url().replace("+psycopg", ""), autocommit=True) as c:
                    c.execute(f'CREATE DATABASE "{name}"')
                settings = bench_settings(root / f"pg-{size}", database_url=cluster.url(name))
                upgrade(settings)
                bearer = insert_token_postgres(settings.database_url, settings)
                data = load_postgres(settings.database_url, size, args.devices, seed=size)
                plan = explain_postgres(settings.database_url, data.devices[0])
            per = sorted(data.per_device.values())
            print(
                f"  [{engine}] {size:>9,} operations over {len(data.devices)} devices "
                f"(per device: min {per[0]}, median {per[len(per) // 2]}, max {per[-1]}) "
                f"loaded in {time.perf_counter() - started:.0f} s"
            )
            for line in plan:
                print(f"      plan {line}")
            for command in args.commands:
                server = headless_ops_server(settings, f"list-{engine}-{size}", command)
                targets[(size, command)] = (server, bearer, data)
        ratios: dict[str, float] = {}
        for command in args.commands:
            results: dict[int, list[float]] = {size: [] for size in sizes}
            label = f"[{engine}, {command}]"
            for round_no in range(args.rounds):
                order = sizes if round_no % 2 == 0 else list(reversed(sizes))
                for size in order:
                    server, bearer, data = targets[(size, command)]
                    server.proc = None
                    lat = measure(server, bearer, data, args, seed=round_no * 7919 + size)
                    results[size].extend(lat)
                    print(f"  {label} round {round_no + 1} {size:>9,}: {_summary(lat)}")
            for size in sizes:
                print(f"  {label} all rounds {size:>9,}: {_summary(results[size])}")
            small, large = min(sizes), max(sizes)
            ratio = percentile(results[large], 99) / percentile(results[small], 99)
            verdict = "meets" if ratio <= GOAL else "ABOVE"
            print(
                f"  {label} p99 ratio {large:,} / {small:,}: {ratio:.2f}x "
                f"({verdict} the goal of at most {GOAL}x); load average now {load_average()}"
            )
            ratios[command] = ratio
        return ratios
    finally:
        if cluster is not None:
            cluster.stop()


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark on each engine asked for."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10_000, 1_000_000]
    )
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=1500, help="measured per round")
    parser.add_argument("--warmup", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--commands",
        type=lambda s: s.split(","),
        default=["serve"],
        help="server commands to measure: serve (with the embedded scheduler), api (without)",
    )
    parser.add_argument(
        "--engines",
        default="sqlite",
        help="comma-separated: sqlite, postgresql (a throwaway cluster from the system's binaries)",
    )
    args = parser.parse_args(argv)
    print("bench.api_list: GET list, page of 50 filtered by device_id, one request at a time")
    print_machine()
    with scratch_dir("bench-list-") as root:
        for engine in args.engines.split(","):
            run_engine(engine.strip(), root, args)


if __name__ == "__main__":
    main()
