"""The ``cwmp`` helper: every operation type on TR-069 CPEs, through the ACS.

An attempt queues a job for the CPE, asks the CPE to connect (a connection request to the
ConnectionRequestURL of its last Inform) unless this process already holds a session with
it, and waits for the outcome the session writes back. A CPE that cannot be reached makes
the attempt :class:`DeferredError`: the operation waits ``pending`` and starts again when
the CPE next informs (or at the latest after ``cwmp_recheck_s``, or when it expires).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from headless_ops.config import Settings
from headless_ops.cwmp.connreq import ConnectionRequester
from headless_ops.cwmp.engine import AcsEngine
from headless_ops.cwmp.store import CwmpStore, JobState
from headless_ops.domain.devices import DeviceStatus
from headless_ops.domain.operations import OperationType
from headless_ops.helpers.base import (
    DeferredError,
    DeviceView,
    HelperError,
    OperationContext,
    RetryableError,
    StatusReport,
)
from headless_ops.helpers.resources import HelperResources
from headless_ops.timeutil import utcnow

__all__ = ["CwmpHelper"]

#: How often a waiting attempt looks at its job: often when the CPE's session may be in
#: another ACS process (nothing would signal this one), rarely as a safety net when this
#: process's ACS signals every change.
POLL_S = 1.0
POLL_IN_PROCESS_S = 10.0


class CwmpHelper:
    """TR-069 CPEs, through the ACS of this deployment."""

    protocol = "cwmp"
    supported_operations = frozenset(OperationType)

    def __init__(self) -> None:
        self.resources: HelperResources | None = None
        self.settings = Settings()
        self.store: CwmpStore | None = None
        #: The ACS engine of this process, when it runs one (set by the ACS on start).
        self.engine: AcsEngine | None = None
        self._cr_slots: asyncio.Semaphore | None = None
        self._requester: ConnectionRequester | None = None

    def bind(self, resources: HelperResources) -> None:
        """Take the server's settings and stores."""
        self.resources = resources
        self.settings = resources.settings
        self.store = CwmpStore(resources.db)

    def _store(self) -> CwmpStore:
        if self.store is None:
            raise RetryableError(
                "not_configured", "the cwmp helper was not given the server's stores"
            )
        return self.store

    async def _reach(self, device: DeviceView, cpe: Any) -> tuple[bool, str]:
        """Ask the CPE to open a session (or find it already in one here)."""
        if self.engine is not None and self.engine.in_session(cpe.device_key):
            self.engine.job_queued(cpe.device_key)
            return True, ""
        c = device.connection
        if self._requester is None:
            self._requester = ConnectionRequester(
                self.settings.cwmp_connection_request_timeout_s,
                self.settings.cwmp_max_connection_requests,
            )
            self._cr_slots = asyncio.Semaphore(self.settings.cwmp_max_connection_requests)
        assert self._cr_slots is not None
        async with self._cr_slots:
            return await self._requester.request(
                c.get("connection_request_url") or cpe.connection_request_url,
                c.get("connection_request_username"),
                c.get("connection_request_password"),
            )

    async def aclose(self) -> None:
        """Close the connection-request client."""
        if self._requester is not None:
            await self._requester.aclose()
            self._requester = None

    # -- operations --------------------------------------------------------------------

    async def execute(self, context: OperationContext) -> dict[str, Any]:
        """Run one attempt through the CPE's next session."""
        store = self._store()
        device = context.device
        cpe = await store.device_of(device.tenant_id, device.id)
        if cpe is None:
            raise DeferredError(
                "cpe_never_seen",
                "the CPE has not informed this ACS yet; the operation starts when it does",
                recheck_s=self.settings.cwmp_recheck_s,
            )
        now = utcnow()
        key = (context.operation_id, context.attempt)
        event = asyncio.Event()
        if self.engine is not None:
            self.engine.job_changed[key] = event
        try:
            await store.put_job(
                {
                    "operation_id": context.operation_id,
                    "attempt": context.attempt,
                    "tenant_id": device.tenant_id,
                    "device_id": device.id,
                    "device_key": cpe.device_key,
                    "operation_type": context.operation_type.value,
                    "parameters": context.parameters,
                    "priority": context.priority,
                    "state": JobState.QUEUED,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            reached, why = await self._reach(device, cpe)
            if not reached and self.engine is not None and self.engine.in_session(cpe.device_key):
                # It began to inform here meanwhile: that session takes the job.
                self.engine.job_queued(cpe.device_key)
            elif not reached:
                await self._withdraw(context, "cpe_unreachable", why)
            job = await self._wait_taken(context, event)
            if job is None:
                await self._withdraw(
                    context,
                    "cpe_no_session",
                    f"the CPE accepted the connection request but opened no session within "
                    f"{self.settings.cwmp_session_wait_s:g} s",
                )
            job = await self._wait_done(context, event)
        finally:
            if self.engine is not None:
                self.engine.job_changed.pop(key, None)
        with contextlib.suppress(Exception):
            await store.drop_job(context.operation_id, context.attempt)
        if job.error:
            error = job.error
            raise HelperError(
                str(error.get("code", "cwmp_error")),
                str(error.get("message", "")),
                retryable=bool(error.get("retryable", False)),
            )
        result = dict(job.result or {})
        version = result.get("firmware_version")
        if isinstance(version, str) and version:
            context.facts["firmware_version"] = version
        return result

    async def _withdraw(self, context: OperationContext, code: str, why: str) -> None:
        """Take the job back (if no session took it meanwhile) and defer the operation."""
        store = self._store()
        taken = await store.transition(
            context.operation_id,
            context.attempt,
            from_states=(JobState.QUEUED,),
            now=utcnow(),
            state=JobState.DONE,
        )
        if taken:
            await store.drop_job(context.operation_id, context.attempt)
            if self.engine is not None:
                # The CPE's next Inform here releases it; so does a session of the CPE open
                # here once the deferral is recorded (AcsEngine.refresh_deferred, every
                # second: other ACS processes learn it from the database the same way).
                self.engine.deferred.add((context.device.tenant_id, context.device.id))
            raise DeferredError(code, why, recheck_s=self.settings.cwmp_recheck_s)

    async def _wait_taken(self, context: OperationContext, event: asyncio.Event) -> Any:
        """The job once a session took it, or None when none did in time."""
        deadline = time.monotonic() + self.settings.cwmp_session_wait_s
        while True:
            job = await self._store().job(context.operation_id, context.attempt)
            if job is None or job.state != JobState.QUEUED:
                return job
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            await self._sleep(event, min(self._poll_s(), remaining))

    async def _wait_done(self, context: OperationContext, event: asyncio.Event) -> Any:
        """The job once finished; a transfer or reboot that never completes times out."""
        store = self._store()
        while True:
            job = await store.job(context.operation_id, context.attempt)
            if job is None:
                raise RetryableError("job_lost", "the ACS lost track of this attempt")
            if job.state == JobState.DONE:
                return job
            if job.state == JobState.WAITING:
                kind = (job.progress or {}).get("kind")
                limit = (
                    self.settings.cwmp_transfer_timeout_s
                    if kind == "transfer"
                    else self.settings.cwmp_boot_timeout_s
                )
                waited = (utcnow() - job.updated_at).total_seconds()
                if waited > limit:
                    what = "TransferComplete" if kind == "transfer" else "the CPE's reboot"
                    code = "transfer_timeout" if kind == "transfer" else "boot_timeout"
                    moved = await store.transition(
                        context.operation_id,
                        context.attempt,
                        from_states=(JobState.WAITING,),
                        now=utcnow(),
                        state=JobState.DONE,
                        error={
                            "code": code,
                            "message": f"no {what} within {limit:g} s",
                            "retryable": True,
                        },
                    )
                    if moved:
                        continue
                await self._sleep(event, min(self._poll_s(), limit - waited + 0.05))
                continue
            await self._sleep(event, self._poll_s())

    def _poll_s(self) -> float:
        return POLL_S if self.engine is None else POLL_IN_PROCESS_S

    @staticmethod
    async def _sleep(event: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)
        event.clear()

    # -- status ------------------------------------------------------------------------

    async def refresh_status(self, device: DeviceView) -> StatusReport:
        """A connection request, then a bounded wait for the CPE's Inform."""
        store = self._store()
        cpe = await store.device_of(device.tenant_id, device.id)
        if cpe is None:
            return StatusReport(DeviceStatus.UNKNOWN, detail="the CPE has never informed this ACS")
        informed = asyncio.Event()
        if self.engine is not None:
            self.engine.informed[cpe.device_key] = informed
        try:
            before = cpe.last_inform_at
            reached, why = await self._reach(device, cpe)
            if not reached:
                return StatusReport(DeviceStatus.OFFLINE, seen_at=None, detail=why)
            deadline = time.monotonic() + self.settings.status_refresh_timeout_s
            while time.monotonic() < deadline:
                cpe = await store.device_of(device.tenant_id, device.id)
                if cpe is not None and cpe.last_inform_at != before:
                    return StatusReport(
                        DeviceStatus.ONLINE,
                        seen_at=cpe.last_inform_at,
                        firmware_version=cpe.software_version,
                        facts={
                            "hardware_version": cpe.hardware_version,
                            "uptime_s": cpe.uptime_s,
                        },
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(informed.wait(), 0.2)
            return StatusReport(
                DeviceStatus.OFFLINE,
                detail="the CPE accepted the connection request but did not inform in time",
            )
        finally:
            if (
                self.engine is not None
                and self.engine.informed.get(cpe.device_key if cpe else "") is informed
            ):
                del self.engine.informed[cpe.device_key]
