"""Scheduler lateness: how long after ``scheduled_at`` an operation actually starts.

For each engine (SQLite, ``synchronous=FULL``; PostgreSQL on a throwaway cluster), with one
in-process scheduler and a helper that returns at once, on fresh databases:

1. **throughput**: N operations due now, one per device (the ``sqlite`` section of
   bench/dispatch.py), the figure the burst bound below is computed from;
2. **spread**: 10,000 operations scheduled evenly over 5 s, starting a moment after the
   scheduler has started and gone to sleep. Goal: lateness p50 <= 10 ms, p99 <= 50 ms;
3. **burst**: N operations all scheduled at one instant. Goal: p99 <= 1.2 x N / throughput
   + 50 ms (the last of a burst cannot start before the scheduler has got through the
   others; the bound allows 20% over the measured throughput and 50 ms of wake-up).

Lateness is measured twice, and both are printed: **start** = when the helper's ``execute``
was entered (wall clock, noted by the helper) minus ``scheduled_at`` — what a device sees;
**claim** = ``started_at - scheduled_at`` from the database for attempt 1 (``started_at``
is the time the claim transaction read, before its commit). Goals are judged on **start**.

Run: ``.venv/bin/python -m bench.lateness [--engines sqlite,postgresql]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from bench.common import percentile, print_machine, scratch_dir
from bench.dispatch import load_line
from bench.sched_common import (
    InstantHelper,
    PgServer,
    StampingHelper,
    dispatch_in_process,
    future_times,
    goal_line,
    insert_devices,
    insert_operations,
    latencies,
    make_runtime,
    run,
    run_scheduler_until,
    sqlite_database,
    status_counts,
    summarise_ms,
)
from headless_ops.config import Settings

GOAL_P50 = 0.010
GOAL_P99 = 0.050
#: How far ahead of "now" the first operation is put: time to start the scheduler and let
#: it finish its first pass and go to sleep, so what is measured is waking up on time.
LEAD_S = 2.0


def lateness_run(
    settings: Settings, times: Sequence[datetime], devices: int, timeout: float = 300.0
) -> tuple[list[float], list[float]]:
    """Run ``times`` (one operation each) through one scheduler; (start, claim) lateness in
    seconds, one per operation."""
    insert_devices(settings, devices)
    insert_operations(settings, times, devices=devices)
    helper = StampingHelper()

    async def main() -> None:
        runtime = make_runtime(settings, helper)
        try:
            await run_scheduler_until(runtime, len(times), timeout)
        finally:
            await runtime.close()

    run(main())
    statuses = status_counts(settings)
    if statuses != {"completed": len(times)}:
        raise RuntimeError(f"lateness run: {statuses}")
    rows = latencies(settings)
    if len(rows) != len(times) or set(rows) != set(helper.started):
        raise RuntimeError("lateness run: an operation ran more than once or not at all")
    start = [helper.started[i] - r["scheduled"] for i, r in rows.items()]
    claim = [r["started"] - r["scheduled"] for r in rows.values()]
    return start, claim


def engine_section(
    name: str, make: Callable[[str], Settings], args: argparse.Namespace
) -> dict[str, float]:
    """Throughput, spread and burst on one engine; prints as it goes."""
    print(f"\n[{name}]")
    throughput = dispatch_in_process(make("throughput"), InstantHelper(), args.throughput_ops)
    print(
        f"  throughput: {throughput.operations:,} operations due now in "
        f"{throughput.seconds:.2f} s = {throughput.rate:,.0f} operations/s"
    )

    first = datetime.now(UTC) + timedelta(seconds=LEAD_S)
    span = timedelta(seconds=args.spread_s)
    times = future_times(args.spread_ops, first, span)
    start, claim = lateness_run(make("spread"), times, args.spread_ops)
    rate = args.spread_ops / args.spread_s
    print(f"  spread: {args.spread_ops:,} operations over {args.spread_s:g} s ({rate:,.0f}/s)")
    print(f"    start: {summarise_ms(start)}")
    print(f"    claim: {summarise_ms(claim)}")
    p50, p99 = percentile(start, 50), percentile(start, 99)
    print("    " + goal_line("p50", p50 * 1000, GOAL_P50 * 1000, " ms", at_most=True))
    print("    " + goal_line("p99", p99 * 1000, GOAL_P99 * 1000, " ms", at_most=True))

    at = datetime.now(UTC) + timedelta(seconds=LEAD_S)
    bstart, bclaim = lateness_run(make("burst"), [at] * args.burst, args.burst)
    bound = 1.2 * args.burst / throughput.rate + 0.050
    print(f"  burst: {args.burst:,} operations due at one instant")
    print(f"    start: {summarise_ms(bstart)}")
    print(f"    claim: {summarise_ms(bclaim)}")
    bp99 = percentile(bstart, 99)
    print(
        "    "
        + goal_line(
            f"p99 (bound 1.2 x {args.burst:,} / {throughput.rate:,.0f} + 50 ms)",
            bp99 * 1000,
            bound * 1000,
            " ms",
            at_most=True,
        )
    )
    return {"throughput": throughput.rate, "p50": p50, "p99": p99, "burst_p99": bp99}


def main(argv: list[str] | None = None) -> None:
    """Run the chosen engines' sections."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--throughput-ops", type=int, default=10_000)
    parser.add_argument("--spread-ops", type=int, default=10_000)
    parser.add_argument("--spread-s", type=float, default=5.0)
    parser.add_argument("--burst", type=int, default=10_000, help="operations in the burst")
    args = parser.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]

    print("bench.lateness: start minus scheduled_at, one in-process scheduler, instant helper")
    print_machine()
    t0 = time.perf_counter()
    with scratch_dir("bench-lateness-") as root:
        if "sqlite" in engines:
            engine_section("sqlite", lambda n: sqlite_database(root, n), args)
        if "postgresql" in engines:
            with PgServer(root) as pg:
                engine_section("postgresql", lambda n: pg.database(n), args)
    print(f"\n  done in {time.perf_counter() - t0:.0f} s; {load_line()}")


if __name__ == "__main__":
    main()
