"""Shared pieces of the scheduler integration tests: a controllable clock, a helper that
records concurrency, fleet set-up, and ways to run and watch a scheduler.

The clock is handed to the scheduler *and* to the services (operations, windows, devices)
so that every timestamp a test looks at comes from one timeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from headless_ops.api.runtime import Runtime
from headless_ops.auth.tokens import ensure_tenant
from headless_ops.domain.devices import DeviceStatus
from headless_ops.domain.operations import OperationType
from headless_ops.helpers.base import (
    DeviceView,
    HelperError,
    OperationContext,
    StatusReport,
)
from headless_ops.scheduler.worker import Scheduler
from headless_ops.services.requests import parse_new_operation
from headless_ops.store.scheduling import Claimed, Limits, SchedulerStore
from headless_ops.timeutil import iso, utcnow

__all__ = [
    "Clock",
    "TrackingHelper",
    "add_device",
    "add_op",
    "assert_error",
    "claim_as",
    "events",
    "eventually",
    "future_base",
    "make_scheduler",
    "op",
    "reached",
    "running",
    "setup",
    "use_clock",
]


class Clock:
    """A clock that moves only when the test says so (aware UTC)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        """Move forward by ``seconds``; returns the new time."""
        self.now += timedelta(seconds=seconds)
        return self.now

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (never backwards: leases and windows assume time moves on)."""
        assert when >= self.now, (when, self.now)
        self.now = when


def future_base(hour: int = 12) -> datetime:
    """A fixed instant later than the real clock: 15 January, two years from now, at
    ``hour``:00 UTC. Winter, so zone offsets are the standard ones. Later than the real
    time so that anything stamped with the real clock is already "due" on the test's."""
    return datetime(utcnow().year + 2, 1, 15, hour, tzinfo=UTC)


def use_clock(runtime: Runtime, clock: Callable[[], datetime]) -> None:
    """Make the services stamp and judge time with ``clock`` too."""
    runtime.operations.clock = clock
    runtime.windows.clock = clock
    runtime.devices.clock = clock


def make_scheduler(
    runtime: Runtime,
    clock: Callable[[], datetime] = utcnow,
    *,
    worker_id: str = "",
    wired: bool = True,
) -> Scheduler:
    """A scheduler on ``runtime`` with ``clock``; ``wired`` hooks it to this process's API
    changes as :meth:`Runtime.make_scheduler` does (unwired: "another process")."""
    scheduler = Scheduler(
        runtime.db,
        runtime.registry,
        runtime.box,
        runtime.settings,
        clock=clock,
        worker_id=worker_id,
    )
    if wired:
        runtime.operations.listeners.append(scheduler.wake)
        runtime.operations.cancel_listeners.append(scheduler.request_cancel)
        runtime.windows.listeners.append(scheduler.wake)
    return scheduler


@contextlib.asynccontextmanager
async def running(scheduler: Scheduler, stop_timeout: float = 20.0) -> AsyncIterator[Scheduler]:
    """``scheduler.run(stop)`` in the background for the duration of the block."""
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop), name="test-scheduler")
    try:
        yield scheduler
    finally:
        stop.set()
        async with asyncio.timeout(stop_timeout):
            await task


async def eventually(
    probe: Callable[[], Awaitable[Any]],
    timeout: float = 10.0,  # noqa: ASYNC109 - a bound on a poll, not a cancellation scope
    interval: float = 0.02,
) -> Any:
    """Poll ``probe`` until it returns something truthy; returns it. AssertionError with the
    last value when ``timeout`` (real seconds) passes first."""
    deadline = time.monotonic() + timeout
    value = None
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value {value!r}")
        await asyncio.sleep(interval)


# -- fleet ---------------------------------------------------------------------------------


async def add_device(
    runtime: Runtime,
    tenant: str,
    device_id: str,
    *,
    protocol: str = "ssh",
    labels: dict[str, str] | None = None,
    window: str | None = None,
) -> str:
    """Create a device (valid connection for its protocol); returns its id."""
    connection = (
        {"host": "127.0.0.1", "username": "u", "password": "pw"} if protocol == "ssh" else {}
    )
    body: dict[str, Any] = {
        "id": device_id,
        "name": f"name-{device_id}",
        "protocol": protocol,
        "connection": connection,
        "labels": labels or {},
    }
    if window is not None:
        body["maintenance_window"] = window
    await runtime.devices.create(tenant, runtime.devices.parse_new(body))
    return device_id


_PARAMS: dict[str, dict[str, Any]] = {
    "firmware_update": {"firmware_version": "2.0.0"},
    "backup_configuration": {"backup_location": "s3://backups/devices/"},
}


async def add_op(
    runtime: Runtime, tenant: str, device_id: str, op_type: str = "reboot", **extra: Any
) -> str:
    """Schedule an operation through the service (datetimes in ``extra`` are sent as ISO
    strings, as a client would); returns its id."""
    body: dict[str, Any] = {
        "device_id": device_id,
        "operation_type": op_type,
        "parameters": _PARAMS.get(op_type, {}),
    }
    for key, value in extra.items():
        body[key] = iso(value) if isinstance(value, datetime) else value
    created = await runtime.operations.create(tenant, parse_new_operation(body, by_name=False))
    return created.view.op.id


async def setup(runtime: Runtime, tenant: str = "acme") -> str:
    """The tenant's id (created when missing)."""
    return await ensure_tenant(runtime.db, tenant)


async def op(runtime: Runtime, tenant: str, op_id: str) -> Any:
    """The operation record as stored now."""
    return (await runtime.operations.get(tenant, op_id)).op


async def reached(runtime: Runtime, tenant: str, op_id: str, *statuses: str) -> Any:
    """The operation's record if its status is one of ``statuses``, else None (for
    :func:`eventually`)."""
    record = await op(runtime, tenant, op_id)
    return record if record.status in statuses else None


async def events(runtime: Runtime, tenant: str, op_id: str) -> list[dict[str, Any]]:
    """The operation's history, oldest first."""
    return (await runtime.operations.get(tenant, op_id, history=True)).history or []


async def claim_as(
    store: SchedulerStore,
    now: datetime,
    limit: int = 10,
    lease_ttl: float = 30.0,
) -> list[Claimed]:
    """Claim due operations through ``store`` (a worker identity) and never run them: a
    worker that died right after claiming, or one a test drives by hand."""
    claimed, _ = await store.claim(
        now,
        limit,
        lease_ttl=timedelta(seconds=lease_ttl),
        limits=Limits(),
        window_margin=timedelta(0),
    )
    return claimed


def assert_error(response: Any, status: int, fields: set[str] | None = None) -> dict[str, Any]:
    """``response`` is ``status`` in the API's error shape; ``fields`` must all be named in
    its ``errors[].field``. Returns the body."""
    assert response.status_code == status, (response.status_code, response.text)
    body: dict[str, Any] = response.json()
    assert set(body) == {"detail", "errors"}, body
    if fields is not None:
        named = {e["field"] for e in body["errors"]}
        assert fields <= named, (fields, body)
    return body


# -- a helper that records what it saw -----------------------------------------------------


@dataclass
class Attempt:
    """One call of :meth:`TrackingHelper.execute`."""

    operation_id: str
    device_id: str
    operation_type: str
    attempt: int
    started: float
    ended: float | None = None
    outcome: str = "running"


@dataclass
class TrackingHelper:
    """A helper that records every attempt and the most attempts it ever had at once, in
    total, per device, per operation type and per label value.

    ``gate``: attempts wait for it (a hanging helper until the test opens it); with
    ``stop_on_cancel`` they also stop waiting when cancellation is asked, as a helper whose
    protocol can stop would. ``delay``: seconds each attempt takes. ``script(context)`` may
    return a result, return or raise a :class:`HelperError`, or be awaited; by default the
    result is ``{"ok": True}`` (plus ``"stopped": True`` when cancellation was seen).
    """

    protocol: str = "ssh"
    supported_operations: frozenset[OperationType] = frozenset(OperationType)
    delay: float = 0.0
    gate: asyncio.Event | None = None
    stop_on_cancel: bool = False
    script: Callable[[OperationContext], Any] | None = None
    attempts: list[Attempt] = field(default_factory=list)
    active: int = 0
    max_active: int = 0
    active_by: dict[tuple[str, str], int] = field(default_factory=dict)
    max_by: dict[tuple[str, str], int] = field(default_factory=dict)
    cancel_seen: dict[str, bool] = field(default_factory=dict)

    async def refresh_status(self, device: DeviceView) -> StatusReport:
        return StatusReport(DeviceStatus.ONLINE, firmware_version="1.0")

    def _keys(self, context: OperationContext) -> list[tuple[str, str]]:
        keys = [("device", context.device.id), ("type", context.operation_type.value)]
        keys += [(f"label:{k}", v) for k, v in context.device.labels.items()]
        return keys

    async def execute(self, context: OperationContext) -> dict[str, Any]:
        record = Attempt(
            context.operation_id,
            context.device.id,
            context.operation_type.value,
            context.attempt,
            time.monotonic(),
        )
        self.attempts.append(record)
        keys = self._keys(context)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        for key in keys:
            self.active_by[key] = self.active_by.get(key, 0) + 1
            self.max_by[key] = max(self.max_by.get(key, 0), self.active_by[key])
        try:
            if self.gate is not None:
                await self._wait_gate(context)
            if self.delay:
                await asyncio.sleep(self.delay)
            value: Any = {"ok": True}
            if self.script is not None:
                value = self.script(context)
                if asyncio.iscoroutine(value):
                    value = await value
                if isinstance(value, HelperError):
                    raise value
            self.cancel_seen[context.operation_id] = context.cancel.is_set()
            if context.cancel.is_set() and isinstance(value, dict):
                value = {**value, "stopped": True}
            record.outcome = "returned"
            return value  # type: ignore[no-any-return]
        except HelperError:
            record.outcome = "raised"
            raise
        except asyncio.CancelledError:
            record.outcome = "interrupted"
            raise
        finally:
            record.ended = time.monotonic()
            self.active -= 1
            for key in keys:
                self.active_by[key] -= 1

    async def _wait_gate(self, context: OperationContext) -> None:
        assert self.gate is not None
        if not self.stop_on_cancel:
            await self.gate.wait()
            return
        waiters = [
            asyncio.ensure_future(self.gate.wait()),
            asyncio.ensure_future(context.cancel.wait()),
        ]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    # -- what tests ask ------------------------------------------------------------------

    def started(self, op_id: str | None = None) -> list[Attempt]:
        """Attempts begun (of ``op_id``, or all)."""
        return [a for a in self.attempts if op_id is None or a.operation_id == op_id]

    def order(self) -> list[str]:
        """Operation ids in the order their attempts started."""
        return [a.operation_id for a in self.attempts]

    def max_for(self, kind: str, value: str) -> int:
        """Most attempts at once for ``("device"|"type"|"label:<key>", value)``."""
        return self.max_by.get((kind, value), 0)

    async def wait_started(self, count: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Until at least ``count`` attempts have begun."""

        async def probe() -> bool:
            return len(self.attempts) >= count

        await eventually(probe, timeout)

    def overlaps_on_one_device(self) -> list[tuple[Attempt, Attempt]]:
        """Pairs of attempts on one device whose intervals overlap (should be none)."""
        by_device: dict[str, list[Attempt]] = {}
        for a in self.attempts:
            by_device.setdefault(a.device_id, []).append(a)
        bad = []
        for items in by_device.values():
            items.sort(key=lambda a: a.started)
            for first, second in itertools.pairwise(items):
                if first.ended is None or second.started < first.ended:
                    bad.append((first, second))
        return bad
