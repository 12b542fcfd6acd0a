"""The scheduler: claim due operations, run them through their helper, record outcomes.

No fixed polling delay: the loop sleeps until the next due time, or until woken by a new
or changed operation (in-process signal; PostgreSQL ``LISTEN/NOTIFY`` between processes),
with a slow safety poll as a backstop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import structlog

from headless_ops.config import Settings
from headless_ops.crypto import SecretBox
from headless_ops.domain.lifecycle import Status
from headless_ops.domain.operations import OperationType
from headless_ops.domain.retry import Decision, decide_failure
from headless_ops.helpers.base import DeferredError, DeviceView, HelperError, OperationContext
from headless_ops.helpers.registry import HelperRegistry
from headless_ops.ids import new_id
from headless_ops.scheduler import metrics
from headless_ops.scheduler.notify import listen_for_wakeups
from headless_ops.scheduler.recorder import Recorder
from headless_ops.services.devices import device_view
from headless_ops.store.db import Database
from headless_ops.store.records import DeviceRecord
from headless_ops.store.scheduling import Claimed, Limits, Outcome, SchedulerStore
from headless_ops.timeutil import utcnow

__all__ = ["Scheduler", "default_worker_id"]

log = structlog.get_logger(__name__)

_HOUSEKEEPING_EVERY = timedelta(seconds=1)
#: Enum construction by value is a Python-level lookup: once per type, not per operation.
_OPERATION_TYPES = {t.value: t for t in OperationType}


def default_worker_id() -> str:
    """``host:pid:random`` — unique per process, readable in leases and history."""
    return f"{socket.gethostname()}:{os.getpid()}:{new_id('w', 3)[2:]}"


@dataclass(eq=False, slots=True)
class _Running:
    claimed: Claimed
    context: OperationContext
    #: The task running the attempt, once started.
    task: asyncio.Task[None] | None = None
    #: Before the start: the timer that starts it at its time (it was claimed ahead).
    #: Once started: the timer that stops it at its execution timeout.
    timer: asyncio.TimerHandle | None = None
    lease_lost: bool = False
    timed_out: bool = False
    #: Its outcome is with the recorder: the row may turn terminal any moment, by our hand.
    submitted: bool = False


@dataclass
class Scheduler:
    """One worker's claim loop. ``run()`` until stopped; ``run_until_idle()`` for tests."""

    db: Database
    registry: HelperRegistry
    box: SecretBox
    settings: Settings
    clock: Callable[[], datetime] = utcnow
    worker_id: str = ""
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        s = self.settings
        self.worker_id = self.worker_id or s.worker_id or default_worker_id()
        self.store = SchedulerStore(self.db, self.worker_id)
        self.policy = s.retry_policy()
        self.limits = Limits(
            max_running=s.max_running,
            per_type=dict(s.max_running_per_type),
            per_label=dict(s.max_running_per_label),
            starts_per_minute=s.max_starts_per_minute,
        )
        self.lease_ttl = timedelta(seconds=s.lease_ttl_s)
        self.margin = timedelta(seconds=s.window_margin_s)
        self.ahead = timedelta(seconds=s.claim_ahead_s)
        self.recorder = Recorder(self.store, self.clock)
        self._running: dict[str, _Running] = {}
        self._wake = asyncio.Event()
        #: Set whenever an attempt leaves ``_running`` (recorded, refused or interrupted).
        self._progress = asyncio.Event()
        self._claiming = True
        self._last_housekeeping: datetime | None = None
        self._views: dict[tuple[str, str], tuple[datetime, DeviceView]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        # Bound once: the lazy module proxy would re-bind on every call of the hot path.
        self.log = structlog.get_logger(__name__).bind(worker=self.worker_id)

    # -- signals ------------------------------------------------------------------------

    def wake(self) -> None:
        """Look for due work now (a new or changed operation)."""
        self._wake.set()

    def request_cancel(self, op_id: str) -> None:
        """Tell a locally running operation that cancellation was asked."""
        running = self._running.get(op_id)
        if running is not None:
            running.context.cancel.set()

    @property
    def in_flight(self) -> int:
        """Operations this worker holds a lease on (running, or claimed to start shortly)."""
        return len(self._running)

    # -- the loop -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and run until ``stop`` is set, then drain (see :meth:`drain`)."""
        self._loop = asyncio.get_running_loop()
        self.recorder.start()
        tasks = [asyncio.create_task(self._heartbeat_loop(), name="headless-ops-heartbeat")]
        if self.db.dialect == "postgresql":
            tasks.append(
                asyncio.create_task(listen_for_wakeups(self.db.url, self.wake, self.worker_id))
            )
        self.log.info("scheduler started")
        try:
            while not stop.is_set():
                # Cleared before looking, not before sleeping: a wake-up that arrives while
                # this pass reads the queue must not be lost (it would wait for the poll).
                self._wake.clear()
                delay = await self._cycle_safely()
                if delay > 0:
                    await self._sleep(delay, stop)
        finally:
            await self.drain(self.settings.shutdown_grace_s)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.recorder.stop()
            self.log.info("scheduler stopped")

    async def run_until_idle(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109 - a test bound
        """Run until nothing is due now and nothing runs (deterministic mode for tests)."""
        self._loop = asyncio.get_running_loop()
        self.recorder.start()
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self._progress.clear()
                    claimed = await self._cycle()
                    if self._running:
                        await self._progress.wait()
                        continue
                    if claimed == 0:
                        return
        finally:
            await self.recorder.stop()

    async def _sleep(self, delay: float, stop: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _cycle_safely(self) -> float:
        try:
            claimed = await self._cycle()
        except Exception:
            self.log.exception("scheduler cycle failed; retrying shortly")
            return 1.0
        if claimed >= self.settings.claim_batch_size:
            return 0.0  # there is probably more due right now
        return await self._next_delay(claimed)

    async def _next_delay(self, claimed: int) -> float:
        now = self.clock()
        poll = self.settings.safety_poll_s
        if self._rate_limited:
            poll = min(poll, 1.0)
        # Operations are claimed `ahead` of their time (and started by a timer at it): wake
        # that much before the next one becomes due.
        nxt = await self.store.next_wake(now, self.ahead)
        if nxt is None:
            return poll
        if nxt <= now:
            # An expired lease or expires_at: housekeeping acts on those, so run it on the next
            # pass instead of spinning until its regular turn.
            self._last_housekeeping = None
            return min(poll, 0.05)
        return min(poll, (nxt - now).total_seconds())

    _rate_limited: bool = False

    async def _cycle(self) -> int:
        """One pass: housekeeping when due, then claim and start what fits."""
        now = self.clock()
        if self._last_housekeeping is None or now - self._last_housekeeping >= _HOUSEKEEPING_EVERY:
            self._last_housekeeping = now
            await self._housekeeping(now)
        free = self.settings.max_in_flight - len(self._running)
        if not self._claiming or free <= 0:
            return 0
        claimed, self._rate_limited = await self.store.claim(
            now,
            min(self.settings.claim_batch_size, free),
            lease_ttl=self.lease_ttl,
            limits=self.limits,
            window_margin=self.margin,
            ahead=self.ahead,
        )
        for item in claimed:
            self._start(item)
        return len(claimed)

    async def _housekeeping(self, now: datetime) -> None:
        expired = await self.store.expire_waiting(now)
        for _ in expired:
            metrics.FINISHED.labels("failed", "unknown").inc()
        rescued = await self.store.reap(now, self.policy, self.rng)
        for op_id, decision in rescued:
            metrics.LEASE_EXPIRIES.inc()
            self.log.warning(
                "lease expired; operation rescued",
                operation_id=op_id,
                status=decision.status.value,
            )
        await self.store.mark_busy_pending(now)

    # -- running one operation ---------------------------------------------------------------

    def _start(self, claimed: Claimed) -> None:
        """Start a claimed operation now, or at its time if it was claimed ahead of it."""
        op = claimed.op
        device = self._view(claimed.device) if claimed.device is not None else None
        context = OperationContext(
            operation_id=op.id,
            operation_type=_OPERATION_TYPES[op.operation_type],
            parameters=dict(op.parameters),
            attempt=op.attempts,
            max_attempts=op.max_attempts,
            device=device,  # type: ignore[arg-type]  # None is handled before the helper runs
            timeout_s=self.settings.operation_timeout(op.operation_type),
            priority=op.priority,
        )
        if op.cancel_requested:
            context.cancel.set()
        running = _Running(claimed, context)
        self._running[op.id] = running
        self._launch(running)

    def _launch(self, running: _Running) -> None:
        """The attempt's task and the timer of its execution timeout; before its time (it
        was claimed ahead), a timer that calls again then. Event loops round timers to the
        millisecond, from the time their iteration began: one may fire a little early, and
        waits again."""
        running.timer = None
        if running.lease_lost:
            return
        loop = self._loop
        assert loop is not None
        op = running.claimed.op
        now = self.clock()
        if op.started_at is not None and now < op.started_at:
            wait = (op.started_at - now).total_seconds() + 0.0005
            running.timer = loop.call_later(wait, self._launch, running)
            return
        if op.attempts == 1:
            metrics.LATENESS.observe(max(0.0, (now - op.scheduled_at).total_seconds()))
        running.task = loop.create_task(self._execute(running))
        running.timer = loop.call_later(running.context.timeout_s, self._time_out, running)

    def _time_out(self, running: _Running) -> None:
        running.timer = None
        task = running.task
        if task is not None and not task.done() and not running.submitted:
            running.timed_out = True
            task.cancel()

    def _forget(self, running: _Running) -> None:
        """``running`` holds nothing any more: free its place (and its device)."""
        if running.timer is not None:
            running.timer.cancel()
            running.timer = None
        op_id = running.claimed.op.id
        if self._running.get(op_id) is running:
            del self._running[op_id]
        self._progress.set()
        self.wake()  # the device is free: another of its operations may start

    def _view(self, record: DeviceRecord) -> DeviceView:
        """The helper's view of a device (secrets decrypted), cached per device version."""
        key = (record.tenant_id, record.id)
        cached = self._views.get(key)
        if cached is not None and cached[0] == record.updated_at:
            return cached[1]
        if len(self._views) > 200_000:
            self._views.clear()
        view = device_view(record, self.box)
        self._views[key] = (record.updated_at, view)
        return view

    async def _execute(self, running: _Running) -> None:
        op = running.claimed.op
        # The task's own context: these go with every log line of the attempt, helpers' too.
        structlog.contextvars.bind_contextvars(operation_id=op.id, attempt=op.attempts)
        try:
            outcome = await self._attempt(running)
        except asyncio.CancelledError:
            # Lease lost, or shutdown past its grace period: nothing may be written.
            self.log.info("attempt interrupted", operation_id=op.id)
            self._forget(running)
            return
        if running.timer is not None:
            running.timer.cancel()
            running.timer = None
        if running.lease_lost:
            self.log.warning("lease lost while running; result not written", operation_id=op.id)
            metrics.REFUSED_RESULTS.inc()
            self._forget(running)
            return
        running.submitted = True
        # Not awaited: the recorder commits outcomes in batches and then calls back, so the
        # task ends here and holds nothing while the commit runs.
        self.recorder.put(outcome, partial(self._recorded, running, outcome))

    def _recorded(self, running: _Running, outcome: Outcome, accepted: bool) -> None:
        """After the commit that holds ``outcome`` (or its refusal by the lease fence)."""
        op = running.claimed.op
        status = outcome.decision.status
        if not accepted:
            metrics.REFUSED_RESULTS.inc()
            self.log.warning("late result refused: the lease was lost", operation_id=op.id)
        else:
            metrics.attempt_finished(op.operation_type, status.value)
            self.log.info(
                "attempt finished",
                operation_id=op.id,
                attempt=op.attempts,
                status=status.value,
                error_code=outcome.decision.error_code,
            )
        self._forget(running)

    async def _attempt(self, running: _Running) -> Outcome:
        claimed, ctx = running.claimed, running.context
        op = claimed.op

        def failure(code: str, message: str, retryable: bool) -> Outcome:
            decision = decide_failure(
                attempts=op.attempts,
                max_attempts=op.max_attempts,
                retryable=retryable,
                code=code,
                message=message,
                now=self.clock(),
                policy=self.policy,
                cancel_requested=ctx.cancel.is_set(),
                expires_at=op.expires_at,
                rng=self.rng,
            )
            return Outcome(op.id, op.lease_version, op.attempts, decision)

        def timed_out() -> Outcome:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # our own cancellation, handled here
            return failure("timeout", f"no result within {ctx.timeout_s:g}s", True)

        if ctx.cancel.is_set():
            # Cancelled between the claim and the start: the helper is never called.
            decision = Decision(
                Status.CANCELLED, error_code="cancelled", message="cancelled before it started"
            )
            return Outcome(op.id, op.lease_version, op.attempts, decision)
        if claimed.device is None:
            return failure("device_missing", f"device {op.device_id} no longer exists", False)
        helper = self.registry.get(claimed.device.protocol)
        if helper is None:
            return failure(
                "no_helper", f"no helper is installed for protocol {claimed.device.protocol}", False
            )
        if ctx.operation_type not in helper.supported_operations:
            return failure(
                "unsupported",
                f"the {claimed.device.protocol} helper cannot perform {op.operation_type}",
                False,
            )
        self.log.debug("attempt started", operation_id=op.id, device_id=op.device_id)
        try:
            result = await helper.execute(ctx)
        except asyncio.CancelledError:
            if running.timed_out and not running.lease_lost:
                return timed_out()
            raise
        except DeferredError as exc:
            return self._deferred(running, exc)
        except HelperError as exc:
            if running.timed_out:
                return timed_out()
            return failure(exc.code, exc.message, exc.retryable)
        except TimeoutError as exc:
            # The helper's own timeout (ours arrives as a cancellation, above).
            return failure("timeout", str(exc) or "the helper timed out", True)
        except OSError as exc:
            return failure("io_error", f"{type(exc).__name__}: {exc}", True)
        except Exception as exc:
            self.log.exception("helper raised an unexpected error", operation_id=op.id)
            return failure("helper_error", f"{type(exc).__name__}: {exc}", False)
        if not isinstance(result, dict):
            return failure("helper_error", "the helper returned no result object", False)
        status = Status.CANCELLED if ctx.cancel.is_set() else Status.COMPLETED
        decision = Decision(
            status,
            error_code="cancelled" if status is Status.CANCELLED else None,
            message="cancelled while running; the result records what the device did"
            if status is Status.CANCELLED
            else None,
        )
        firmware = ctx.facts.get("firmware_version")
        return Outcome(
            op.id,
            op.lease_version,
            op.attempts,
            decision,
            result=result,
            firmware_version=firmware if isinstance(firmware, str) else None,
        )

    def _deferred(self, running: _Running, exc: DeferredError) -> Outcome:
        """Back to ``pending`` without spending the attempt, until the device shows up (its
        helper releases it), ``recheck_s`` passes, or the operation expires."""
        op, ctx = running.claimed.op, running.context
        now = self.clock()
        if ctx.cancel.is_set():
            decision = Decision(
                Status.CANCELLED, error_code="cancelled", message="cancelled while waiting"
            )
            return Outcome(op.id, op.lease_version, op.attempts, decision)
        run_after = now + timedelta(seconds=exc.recheck_s)
        if op.expires_at is not None and run_after > op.expires_at:
            run_after = op.expires_at  # the expiry sweep then fails it as `expired`
        decision = Decision(
            Status.PENDING,
            run_after=run_after,
            error_code=exc.code,
            message=exc.message,
            wait_reason=exc.wait_reason,
            refund_attempt=True,
        )
        return Outcome(op.id, op.lease_version, op.attempts, decision)

    # -- leases ---------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = max(0.05, self.lease_ttl.total_seconds() / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.heartbeat()
            except Exception:
                self.log.exception("heartbeat failed")

    async def heartbeat(self) -> None:
        """Renew leases; stop operations whose lease was lost; pass on cancellations."""
        # Every lease is renewed, but an attempt whose outcome is already submitted is never
        # taken as lost: the recorder may commit it while this runs, and a row completed by
        # our own hand is no lost lease (the recorder's fencing refuses the outcome if the
        # lease really was lost).
        held = {i: r.claimed.op.lease_version for i, r in self._running.items()}
        lost, cancel = await self.store.heartbeat(self.clock(), held, self.lease_ttl)
        for op_id in lost:
            running = self._running.get(op_id)
            if running is None or running.submitted:
                continue
            running.lease_lost = True
            self.log.warning("lease lost; stopping the local attempt", operation_id=op_id)
            if running.task is not None:
                running.task.cancel()
            else:
                self._forget(running)  # claimed ahead and not started: it never will be
        for op_id in cancel:
            self.request_cancel(op_id)

    async def drain(self, grace: float) -> None:
        """Stop claiming; let running operations finish (and their outcomes commit) within
        ``grace`` seconds, then release the leases of the rest so another worker takes them
        at once."""
        self._claiming = False
        if self._running:
            self.log.info("draining", running=len(self._running), grace_s=grace)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + grace
            while self._running and loop.time() < deadline:
                self._progress.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):
                        await self._progress.wait()
        # Outcomes already with the recorder are written by it (it stops after this).
        left = {i: r for i, r in self._running.items() if not r.submitted}
        if not left:
            return
        tasks = []
        for r in left.values():
            r.lease_lost = True  # nothing they produce may be written now
            if r.task is not None:
                r.task.cancel()
                tasks.append(r.task)
            else:
                self._forget(r)
        released = await self.store.release(
            self.clock(), {i: r.claimed.op.lease_version for i, r in left.items()}
        )
        self.log.info("leases released", count=released)
        await asyncio.gather(*tasks, return_exceptions=True)

    def stats(self) -> dict[str, Any]:
        """For logs and metrics."""
        return {"worker": self.worker_id, "in_flight": len(self._running)}
