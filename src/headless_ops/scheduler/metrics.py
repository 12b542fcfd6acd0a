"""Prometheus metrics of the scheduler and the store (``/metrics``)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "ATTEMPTS",
    "FINISHED",
    "LATENESS",
    "LEASE_EXPIRIES",
    "OLDEST_DUE_AGE",
    "OPERATIONS",
    "QUEUE_DEPTH",
    "REFUSED_RESULTS",
    "attempt_finished",
]

OPERATIONS = Gauge(
    "headless_ops_operations",
    "Operations not yet finished, by status and type (refreshed at scrape)",
    ["status", "operation_type"],
)
FINISHED = Counter(
    "headless_ops_operations_finished_total",
    "Operations that reached a terminal status in this process",
    ["status", "operation_type"],
)
QUEUE_DEPTH = Gauge("headless_ops_queue_depth", "Operations due and waiting to start")
OLDEST_DUE_AGE = Gauge(
    "headless_ops_oldest_due_age_seconds", "How long the oldest due operation has waited"
)
LATENESS = Histogram(
    "headless_ops_start_lateness_seconds",
    "First start minus scheduled_at",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
ATTEMPTS = Counter(
    "headless_ops_attempts_total",
    "Attempts run, by type and outcome",
    ["operation_type", "outcome"],
)
LEASE_EXPIRIES = Counter(
    "headless_ops_lease_expiries_total", "Running operations rescued after their lease expired"
)
REFUSED_RESULTS = Counter(
    "headless_ops_refused_results_total", "Late results refused because the lease was lost"
)


_children: dict[tuple[str, str], tuple[Any, Any | None]] = {}


def attempt_finished(operation_type: str, status: str) -> None:
    """Count one recorded attempt (and a finished operation when ``status`` is terminal).

    The labelled children are looked up once per (type, status): ``labels()`` takes a lock
    and validates its arguments, on the scheduler's hot path.
    """
    pair = _children.get((operation_type, status))
    if pair is None:
        terminal = status in ("completed", "failed", "cancelled")
        pair = _children[(operation_type, status)] = (
            ATTEMPTS.labels(operation_type, status),
            FINISHED.labels(status, operation_type) if terminal else None,
        )
    pair[0].inc()
    if pair[1] is not None:
        pair[1].inc()
