"""``/metrics``: Prometheus exposition (aggregate counts only, no tenant data)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select

from headless_ops.api.deps import RuntimeDep
from headless_ops.scheduler import metrics
from headless_ops.store.scheduling import SchedulerStore, status_is_running, status_is_waiting
from headless_ops.store.schema import operations
from headless_ops.timeutil import utcnow

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    operation_id="metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def prometheus_metrics(runtime: RuntimeDep) -> Response:
    """Refresh the store-derived gauges, then expose every metric of this process."""
    o = operations.c
    # Only unfinished operations are counted here (index-backed and bounded by the queue);
    # finished ones are the *_finished_total counters.
    async with runtime.db.read() as conn:
        rows: list[Any] = []
        # One query per partial index (waiting, running): bounded by the queue, not the table.
        for condition in (status_is_waiting(), status_is_running()):
            rows += (
                await conn.execute(
                    select(o.status, o.operation_type, func.count())
                    .where(condition)
                    .group_by(o.status, o.operation_type)
                )
            ).all()
    metrics.OPERATIONS.clear()
    for status, op_type, count in rows:
        metrics.OPERATIONS.labels(status, op_type).set(count)
    depth, oldest = await SchedulerStore(runtime.db, "metrics").queue_stats(utcnow())
    metrics.QUEUE_DEPTH.set(depth)
    metrics.OLDEST_DUE_AGE.set(oldest)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
