"""POST create throughput on SQLite: headless-ops against a bare FastAPI endpoint.

Both servers run as one uvicorn process each (a subprocess, started the same way), on a fresh
migrated database, with ``synchronous=FULL``: every 201 is a transaction committed to the WAL
and fsynced. A closed loop of 64 keep-alive connections posts the contract's example
operation for a fixed time; rounds alternate the two servers so that the machine's drift
hits both. The figure that matters is the ratio (goal: at least 0.8).

Run: ``python -m bench.api_create [--duration 15] [--rounds 2] [--connections 64]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sqlite3
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    HOST,
    LoadResult,
    Server,
    bench_settings,
    free_port,
    headless_ops_server,
    insert_devices_sqlite,
    insert_token_sqlite,
    load_average,
    migrated_sqlite,
    print_machine,
    run_closed_loop,
    run_wrk,
    scratch_dir,
    server_env,
)

GOAL = 0.8
DEVICE_ID = "dev_b00000"
# The contract's POST example (original description), on a device the benchmark made and
# scheduled far ahead: the embedded scheduler has nothing to run, so only the API is measured.
BODY = json.dumps(
    {
        "device_id": DEVICE_ID,
        "operation_type": "backup_configuration",
        "scheduled_at": "2099-01-16T02:00:00Z",
        "parameters": {
            "backup_location": "s3://backups/devices/",
            "compression": True,
            "retention_days": 30,
        },
        "priority": "normal",
    }
).encode()


@dataclass
class Target:
    """One server under load: how to start it and where to post."""

    name: str
    path: str
    server: Server
    db_file: Path


def _headless_ops(
    root: Path, template: Path, round_no: int, synchronous: str = "FULL"
) -> tuple[Target, str]:
    data_dir = root / f"app-{round_no}"
    settings = bench_settings(data_dir, sqlite_synchronous=synchronous)
    shutil.copy(template, data_dir / "headless-ops.db")
    db_file = data_dir / "headless-ops.db"
    bearer = insert_token_sqlite(db_file, settings)
    insert_devices_sqlite(db_file, "ten_bench", 1)
    server = headless_ops_server(settings)
    return Target(
        "headless-ops", "/api/v1/inventory_device_headless_operation/", server, db_file
    ), bearer


def _bare(root: Path, template: Path, round_no: int, synchronous: str = "FULL") -> Target:
    data_dir = root / f"bare-{round_no}"
    data_dir.mkdir()
    db_file = data_dir / "headless-ops.db"
    shutil.copy(template, db_file)
    port = free_port()
    env = server_env(bench_settings(data_dir, sqlite_synchronous=synchronous), port)
    env["BENCH_DATABASE"] = str(db_file)
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.bare_app:app",
        "--host",
        HOST,
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    return Target("bare FastAPI", "/operations/", Server("bare", argv, env, port), db_file)


def _load(
    target: Target, headers: dict[str, str], args: argparse.Namespace, seconds: int
) -> LoadResult:
    port = target.server.port
    if args.client in ("auto", "wrk"):
        result = run_wrk(
            port, target.path, BODY, headers, connections=args.connections, duration=seconds
        )
        if result is not None:
            return result
        if args.client == "wrk":
            raise SystemExit("wrk is not installed (apt-get install wrk), or use --client python")
    from bench.common import HttpConnection

    raw = HttpConnection.encode("POST", target.path, f"{HOST}:{port}", headers, BODY)
    return run_closed_loop(port, raw, connections=args.connections, duration=seconds)


def _rows(db_file: Path) -> int:
    with contextlib.closing(sqlite3.connect(db_file)) as conn:
        return int(conn.execute("SELECT count(*) FROM operations").fetchone()[0])


def _settled_rows(db_file: Path) -> int:
    """The row count once requests still in flight when the load stopped are done."""
    rows = _rows(db_file)
    while True:
        time.sleep(0.5)
        again = _rows(db_file)
        if again == rows:
            return rows
        rows = again


def _integrity(db_file: Path) -> str:
    with contextlib.closing(sqlite3.connect(db_file)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def measure(target: Target, bearer: str, args: argparse.Namespace) -> LoadResult:
    """Warm up, then load ``target`` for ``args.duration`` seconds; check what it stored."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {bearer}"}
    with target.server:
        _load(target, headers, args, args.warmup)
        before = _settled_rows(target.db_file)
        result = _load(target, headers, args, args.duration)
        after = _settled_rows(target.db_file)
    ok = result.count(201)
    stored = after - before
    # Every 201 must be a stored row. The database may hold more: requests still in flight
    # when the load tool stopped its clock are served, but not counted.
    if stored < ok:
        raise SystemExit(f"{target.name}: {ok} answers 201 but only {stored} rows stored")
    if ok != result.requests:
        raise SystemExit(
            f"{target.name}: unexpected answers {result.statuses}\n{target.server.log_tail()}"
        )
    check = _integrity(target.db_file)
    if check != "ok":
        raise SystemExit(f"{target.name}: integrity_check says {check}")
    return result


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print per-round and total figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds measured per round")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of load before each")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument(
        "--synchronous",
        choices=["FULL", "NORMAL", "OFF"],
        default="FULL",
        help="SQLite synchronous for both servers (FULL is the default and the goal's setting)",
    )
    args = parser.parse_args(argv)

    print(
        f"bench.api_create: POST create, SQLite synchronous={args.synchronous}, "
        "one server process each"
    )
    print_machine()
    totals: dict[str, list[LoadResult]] = {"headless-ops": [], "bare FastAPI": []}
    with scratch_dir("bench-create-") as root:
        _, template = migrated_sqlite(root, "template")
        for round_no in range(args.rounds):
            app, bearer = _headless_ops(root, template, round_no, args.synchronous)
            bare = _bare(root, template, round_no, args.synchronous)
            # Alternate who goes first, so neither always gets the cooler machine.
            order = [bare, app] if round_no % 2 == 0 else [app, bare]
            for target in order:
                result = measure(target, bearer, args)
                totals[target.name].append(result)
                print(
                    f"  round {round_no + 1} {target.name:>13}: {result.rps:8.1f} req/s "
                    f"({result.requests} x 201 in {result.seconds:.1f} s, {result.tool}, "
                    f"{args.connections} connections)"
                )
    rps = {
        name: sum(r.requests for r in runs) / sum(r.seconds for r in runs)
        for name, runs in totals.items()
    }
    # Each round's two runs are minutes apart at most: their ratio is the least noisy figure.
    pairs = sorted(
        app.rps / bare.rps
        for app, bare in zip(totals["headless-ops"], totals["bare FastAPI"], strict=True)
    )
    median = statistics.median(pairs)
    ratio = rps["headless-ops"] / rps["bare FastAPI"]
    print(f"  bare FastAPI : {rps['bare FastAPI']:8.1f} req/s (all rounds)")
    print(f"  headless-ops : {rps['headless-ops']:8.1f} req/s (all rounds)")
    print(
        f"  ratio        : {ratio:.2f}x over all rounds; per round "
        + ", ".join(f"{r:.2f}" for r in pairs)
        + f" (median {median:.2f}x)"
    )
    verdict = "meets" if median >= GOAL else "BELOW"
    print(
        f"  verdict      : median ratio {verdict} the goal of {GOAL}x; load average now {load_average()}"
    )


if __name__ == "__main__":
    main()
