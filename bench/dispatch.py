"""Scheduler dispatch throughput: claim, run, record (durably), with helpers that do nothing.

Sections (all by default, in one run, on fresh databases; ``--only`` picks some):

``sqlite``    N operations due now, one per device, one in-process scheduler on SQLite
              (``synchronous=FULL``), instant helper, ``--repeat`` runs (median). Goal:
              >= 8,000 operations/s.
``baselines`` the same N no-op jobs, all due now, on Procrastinate (its worker, concurrency
              10, on a throwaway PostgreSQL) and APScheduler 3 (SQLAlchemyJobStore on SQLite,
              as shipped and tuned to WAL), each ``--repeat`` times like ours; prints the
              ratio of the medians. Goal: >= 10x.
              See bench/baselines.py.
``workers``   PostgreSQL: ``python -m headless_ops worker`` subprocesses (instant helper via
              HEADLESS_OPS_HELPERS), one and then two of them on the same work, alternated
              ``--worker-rounds`` times, ``--pg-ops`` (30,000) operations per run. Goal: two
              >= 1.3x one (all rounds together).
``slow``      SQLite, a helper that waits 10 ms (asyncio.sleep): many in flight. Goal:
              >= 5,000 operations/s.
``future``    the same dispatch with 1,000,000 operations queued an hour ahead, against an
              empty queue measured next to it; SQLite, and PostgreSQL too with
              ``--future-engines sqlite,postgresql``. Goal: within 20%.

Throughput is operations / (commit of the last outcome - start of the scheduler); each run
then checks in the database that every operation completed, with exactly one attempt.
Absolute numbers depend on the machine (and on whatever else it runs): the ratios, measured
minutes apart on the same machine, are the figures to compare.

Run: ``.venv/bin/python -m bench.dispatch [--ops 10000] [--only sqlite,baselines]``
(needs the bench extra: ``.venv/bin/pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import print_machine, scratch_dir
from bench.sched_common import (
    CpuMeter,
    DispatchResult,
    InstantHelper,
    PgServer,
    SleepHelper,
    count_status,
    dispatch_in_process,
    env_for_worker,
    event_counts,
    future_times,
    goal_line,
    insert_devices,
    insert_operations,
    last_finished,
    pg_dsn,
    sqlite_database,
    status_counts,
)
from headless_ops.config import Settings

SECTIONS = ("sqlite", "baselines", "workers", "slow", "future")
GOAL_SQLITE = 8_000.0
GOAL_BASELINE = 10.0
GOAL_WORKERS = 1.3
GOAL_SLOW = 5_000.0
GOAL_FUTURE = 0.8  # loaded / empty


def load_line() -> str:
    """The machine's load average (other work on it skews every absolute number)."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def show(result: DispatchResult, what: str) -> None:
    """One dispatch run's line, and how much CPU it had."""
    print(
        f"  {what}: {result.operations:,} operations in {result.seconds:.2f} s = "
        f"{result.rate:,.0f} operations/s"
    )
    print(
        f"    (this process: {result.cpu_seconds:.1f} s CPU = "
        f"{result.cpu_seconds / result.seconds:.0%} of one core, "
        f"{result.cpu_seconds / result.operations * 1e6:,.0f} us per operation; "
        f"machine {result.machine_busy:.0%} busy)"
    )


# --------------------------------------------------------------------------- workers


@dataclass
class WorkerRun:
    """Operations done by ``workers`` worker processes sharing one PostgreSQL database."""

    workers: int
    operations: int
    seconds: float
    worker_cpu: list[float]
    machine_busy: float

    @property
    def rate(self) -> float:
        """Operations per second."""
        return self.operations / self.seconds


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "headless_ops", "worker"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
        )


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    # The worker prints "worker <id> on <url>" just before its loop starts.
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    deadline = time.monotonic() + timeout
    seen = b""
    while time.monotonic() < deadline:
        chunk = proc.stdout.read() or b""
        seen += chunk
        if b"worker " in seen:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited at start:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"worker not ready within {timeout:g}s:\n{log.read_text()[-3000:]}")


def workers_dispatch(pg: PgServer, root: Path, workers: int, operations: int) -> WorkerRun:
    """Start ``workers`` idle workers, commit ``operations`` due operations (with the NOTIFY the
    API sends), and time until the last outcome is recorded."""
    settings = pg.database(f"workers{workers}")
    insert_devices(settings, operations)
    env = env_for_worker(settings, "bench.sched_common:InstantHelper")
    log = root / f"workers{workers}.log"
    procs = [_start_worker(env, log) for _ in range(workers)]
    try:
        for proc in procs:
            _wait_ready(proc, log)
        time.sleep(1.0)  # let each open its LISTEN connection
        cpu0 = [_proc_cpu(p.pid) for p in procs]
        with CpuMeter() as meter:
            start = insert_operations(
                settings, [datetime.now(UTC)] * operations, devices=operations, notify=True
            )
            deadline = time.monotonic() + 600
            while count_status(settings, "completed") < operations:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"workers: not done in time: {status_counts(settings)}")
                if any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"a worker died:\n{log.read_text()[-3000:]}")
                time.sleep(0.2)
        cpu = [_proc_cpu(p.pid) - c for p, c in zip(procs, cpu0, strict=True)]
        # finished_at is stamped by the recorder just before its commit: a group commit's
        # duration earlier than "durable", the same for one worker as for two.
        end = last_finished(settings)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    statuses = status_counts(settings)
    attempts = event_counts(settings).get("running", 0)
    if statuses != {"completed": operations} or attempts != operations:
        raise RuntimeError(f"workers: {statuses}, {attempts} attempts started")
    pg.drop(settings)
    return WorkerRun(workers, operations, end - start, cpu, meter.busy)


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a live process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- sections


def run_sqlite(root: Path, ops: int, repeat: int) -> float:
    """Section ``sqlite``: ``repeat`` runs on fresh databases; returns their median rate
    (one run lasts about a second, and one busy moment of this shared machine can slow it)."""
    print(f"\n[sqlite] {ops:,} operations due now, one per device, instant helper")
    rates = []
    for index in range(repeat):
        result = dispatch_in_process(sqlite_database(root, f"sqlite-{index}"), InstantHelper(), ops)
        show(result, f"run {index + 1}, headless-ops, SQLite, one process")
        rates.append(result.rate)
    rate = statistics.median(rates)
    if repeat > 1:
        print(f"  median of {repeat} runs: {rate:,.0f} operations/s")
    print("  " + goal_line("throughput", rate, GOAL_SQLITE, " ops/s"))
    return rate


def run_baselines(root: Path, pg: PgServer, ops: int, ours: float, repeat: int) -> None:
    """Section ``baselines``: each baseline ``repeat`` times, as ours was; ratios of the
    medians (``ours``: the median rate of the ``sqlite`` section, measured just before)."""
    from bench.baselines import BaselineResult, apscheduler_dispatch, procrastinate_dispatch

    print(f"\n[baselines] the same {ops:,} no-op jobs, all due now")
    # Created before the measurements: the machine's load during each is the run's own.
    procrastinate_dbs = [pg.database("procrastinate") for _ in range(repeat)]
    runs: list[Callable[[int], BaselineResult]] = [
        lambda i: procrastinate_dispatch(pg_dsn(procrastinate_dbs[i]), ops),
        lambda i: apscheduler_dispatch(root / f"apscheduler-{i}.db", ops),
        lambda i: apscheduler_dispatch(root / f"apscheduler-wal-{i}.db", ops, wal=True),
    ]
    medians: list[tuple[str, float]] = []
    for measure in runs:
        rates = []
        for index in range(repeat):
            with CpuMeter() as meter:
                r = measure(index)
            rates.append(r.rate)
            print(
                f"  run {index + 1}, {r.name} ({r.detail}): {r.jobs:,} jobs in "
                f"{r.seconds:.2f} s = {r.rate:,.0f} jobs/s"
            )
            print(
                f"    (this process: {r.cpu_seconds:.1f} s CPU = "
                f"{r.cpu_seconds / r.seconds:.0%} of one core; machine {meter.busy:.0%} busy)"
            )
        medians.append((r.name, statistics.median(rates)))
        if repeat > 1:
            print(f"  median of {repeat} runs, {r.name}: {medians[-1][1]:,.0f} jobs/s")
    print(f"  headless-ops (SQLite, above): {ours:,.0f} operations/s")
    for name, rate in medians:
        print("  " + goal_line(f"ratio to {name}", ours / rate, GOAL_BASELINE, "x"))


def run_workers(root: Path, pg: PgServer, ops: int, rounds: int) -> None:
    """Section ``workers``: ``rounds`` alternations of one worker, then two (each run lasts a
    second or two, so one busy moment of this shared machine can swing a single ratio)."""
    print(f"\n[workers] PostgreSQL, {ops:,} operations due now, worker subprocesses")
    totals = {1: 0.0, 2: 0.0}
    ratios = []
    for index in range(rounds):
        runs = {}
        for n in (1, 2):
            run = runs[n] = workers_dispatch(pg, root, n, ops)
            totals[n] += run.seconds
            cpu = ", ".join(f"{c:.1f} s" for c in run.worker_cpu)
            print(
                f"  round {index + 1}, {n} worker{'s' if n > 1 else ' '}: {ops:,} operations in "
                f"{run.seconds:.2f} s = {run.rate:,.0f} operations/s "
                f"(worker CPU {cpu}; machine {run.machine_busy:.0%} busy)"
            )
        ratios.append(runs[2].rate / runs[1].rate)
        print(f"    round {index + 1}: two workers / one = {ratios[-1]:.2f}x")
    print(
        f"  per round: {', '.join(f'{r:.2f}x' for r in ratios)}; "
        f"median {statistics.median(ratios):.2f}x"
    )
    # All rounds together: the time one worker took for all its operations over the time two
    # took for the same number.
    print("  " + goal_line("two workers / one", totals[1] / totals[2], GOAL_WORKERS, "x"))


def run_slow(root: Path, ops: int, delay: float) -> None:
    """Section ``slow``."""
    print(f"\n[slow] {ops:,} operations due now, helper waits {delay * 1000:g} ms, SQLite")
    result = dispatch_in_process(sqlite_database(root, "slow"), SleepHelper(delay), ops)
    show(result, f"{delay * 1000:g} ms helper")
    in_flight = result.rate * delay
    print(f"  (about {in_flight:,.0f} operations in flight on average)")
    print("  " + goal_line("throughput", result.rate, GOAL_SLOW, " ops/s"))


def run_future(make: Callable[[str], Settings], engine: str, ops: int, future: int) -> None:
    """Section ``future`` on one engine: an empty queue, then one holding ``future``
    operations an hour ahead (no ANALYZE afterwards: the server never runs one)."""
    print(f"\n[future] {engine}: {ops:,} operations due now; empty queue vs {future:,} queued")
    empty = dispatch_in_process(make("empty"), InstantHelper(), ops)
    show(empty, "empty queue    ")
    settings = make("future")
    t0 = time.perf_counter()
    chunk = 200_000
    for first in range(0, future, chunk):
        n = min(chunk, future - first)
        # Spread over the hour that starts an hour from now: none becomes due during the run.
        times = future_times(n, datetime.now(UTC) + timedelta(hours=1), timedelta(hours=1))
        insert_operations(settings, times, devices=ops, first=ops + first)
    print(f"  (seeded {future:,} future operations in {time.perf_counter() - t0:.0f} s)")
    loaded = dispatch_in_process(settings, InstantHelper(), ops, background=future)
    show(loaded, f"{future:,} queued")
    print("  " + goal_line("loaded / empty", loaded.rate / empty.rate, GOAL_FUTURE, "x"))


def main(argv: list[str] | None = None) -> None:
    """Run the chosen sections and print figures, ratios and goals."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--ops", type=int, default=10_000, help="operations per measurement")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of the sqlite and baselines sections"
    )
    # 30,000: a run of 10,000 lasts a second or two, and one busy moment of a shared machine
    # swings its ratio by 0.3.
    parser.add_argument("--pg-ops", type=int, default=30_000, help="operations per worker run")
    parser.add_argument("--worker-rounds", type=int, default=3, help="1-then-2-worker rounds")
    parser.add_argument("--slow-ops", type=int, default=20_000)
    parser.add_argument("--delay", type=float, default=0.010, help="slow helper, seconds")
    parser.add_argument("--future", type=int, default=1_000_000, help="queued future operations")
    parser.add_argument("--future-engines", default="sqlite", help="sqlite,postgresql")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    args = parser.parse_args(argv)
    if args.worker_rounds < 1 or args.repeat < 1:
        parser.error("--worker-rounds and --repeat must be at least 1")
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")

    print("bench.dispatch: scheduler dispatch throughput (claim, run, record durably)")
    print_machine()
    t0 = time.perf_counter()
    future_engines = [e.strip() for e in args.future_engines.split(",") if e.strip()]
    need_pg = bool({"baselines", "workers"} & set(sections)) or (
        "future" in sections and "postgresql" in future_engines
    )
    with scratch_dir("bench-dispatch-") as root, contextlib.ExitStack() as stack:
        pg = stack.enter_context(PgServer(root)) if need_pg else None
        ours = None
        if "sqlite" in sections or "baselines" in sections:
            ours = run_sqlite(root, args.ops, args.repeat)
        if "baselines" in sections:
            assert pg is not None and ours is not None
            run_baselines(root, pg, args.ops, ours, args.repeat)
        if "workers" in sections:
            assert pg is not None
            run_workers(root, pg, args.pg_ops, args.worker_rounds)
        if "slow" in sections:
            run_slow(root, args.slow_ops, args.delay)
        if "future" in sections:
            for engine in future_engines:
                if engine == "sqlite":
                    run_future(lambda n: sqlite_database(root, n), engine, args.ops, args.future)
                else:
                    assert pg is not None
                    run_future(pg.database, engine, args.ops, args.future)
    print(f"\n  done in {time.perf_counter() - t0:.0f} s; {load_line()}")


if __name__ == "__main__":
    main()
