"""Response shapes (for the OpenAPI document) and the functions that render them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from headless_ops.crypto import SecretBox
from headless_ops.domain.lifecycle import Status
from headless_ops.domain.operations import Priority
from headless_ops.services.operations import OperationView
from headless_ops.store.records import DeviceRecord
from headless_ops.timeutil import iso

__all__ = [
    "DeviceList",
    "DeviceOut",
    "OperationError",
    "OperationList",
    "OperationOut",
    "render_device",
    "render_operation",
]


class OperationError(BaseModel):
    """Why an operation failed: ``{"code": "expired", "message": "…"}``."""

    code: str
    message: str


class HistoryEntry(BaseModel):
    """One transition or attempt: ``{"at": "…Z", "event": "running", "attempt": 1, …}``."""

    at: str
    event: str
    attempt: int
    error_code: str | None
    message: str | None
    worker: str | None


class OperationOut(BaseModel):
    """An operation as the API shows it."""

    id: str = Field(examples=["op_01jd8x3k9v0000000000000000"])
    device_id: str
    device_name: str | None = None
    operation_type: str
    status: Status
    scheduled_at: str
    created_at: str
    updated_at: str
    parameters: dict[str, Any]
    priority: Priority
    attempts: int
    max_attempts: int
    expires_at: str | None
    maintenance_window: str | None
    started_at: str | None
    finished_at: str | None
    result: dict[str, Any] | None
    error: OperationError | None
    #: Why a due operation waits: device_busy, maintenance_window, limit, backoff.
    wait_reason: str | None = None
    #: For an operation waiting for its maintenance window: when the window next opens.
    next_window_start: str | None = None
    #: Transitions and attempts, oldest first (on ``GET /{id}/`` only).
    history: list[HistoryEntry] | None = None


class OperationList(BaseModel):
    """A page of operations: ``count`` is the total matching the filters."""

    count: int
    next: str | None
    previous: str | None
    results: list[OperationOut]


class ReportedOut(BaseModel):
    """What a TR-069 CPE reported in its last Inform."""

    software_version: str | None
    hardware_version: str | None
    uptime_s: int | None
    data_model: str | None
    connection_request_url: str | None
    last_inform_at: str | None
    last_events: list[str] | None


class DeviceOut(BaseModel):
    """A device; secrets are never shown, only the names of those that are set."""

    id: str
    name: str
    protocol: Literal["cwmp", "ssh"]
    connection: dict[str, Any]
    secrets_set: list[str]
    labels: dict[str, str]
    maintenance_window: str | None
    status: Literal["online", "offline", "unknown"]
    status_detail: str | None
    last_seen_at: str | None
    firmware_version: str | None
    #: What a TR-069 CPE last reported (null for other devices and CPEs never seen).
    reported: ReportedOut | None = None
    created_at: str
    updated_at: str


class DeviceList(BaseModel):
    """A page of devices."""

    count: int
    next: str | None
    previous: str | None
    results: list[DeviceOut]


def render_operation(view: OperationView) -> dict[str, Any]:
    """The JSON object of one operation (the original's fields first, in its order)."""
    op = view.op
    out: dict[str, Any] = {
        "id": op.id,
        "device_id": op.device_id,
        "device_name": view.device_name,
        "operation_type": op.operation_type,
        "status": op.status,
        "scheduled_at": iso(op.scheduled_at),
        "created_at": iso(op.created_at),
        "updated_at": iso(op.updated_at),
        "parameters": op.parameters,
        "priority": Priority.from_rank(op.priority).value,
        "attempts": op.attempts,
        "max_attempts": op.max_attempts,
        "expires_at": iso(op.expires_at),
        "maintenance_window": op.maintenance_window,
        "started_at": iso(op.started_at),
        "finished_at": iso(op.finished_at),
        "result": op.result,
        "error": op.error,
        "wait_reason": op.wait_reason,
        "next_window_start": iso(op.run_after)
        if op.wait_reason == "maintenance_window" and op.status in ("scheduled", "pending")
        else None,
    }
    if view.history is not None:
        out["history"] = [
            {
                "at": iso(e["at"]),
                "event": e["event"],
                "attempt": e["attempt"],
                "error_code": e["error_code"],
                "message": e["message"],
                "worker": e["worker"],
            }
            for e in view.history
        ]
    return out


def render_device(
    record: DeviceRecord, box: SecretBox, reported: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON object of one device, without secret values."""
    return {
        "id": record.id,
        "name": record.name,
        "protocol": record.protocol,
        "connection": record.connection,
        "secrets_set": sorted(box.open(record.secrets)),
        "labels": record.labels,
        "maintenance_window": record.maintenance_window,
        "status": record.status,
        "status_detail": record.status_detail,
        "last_seen_at": iso(record.last_seen_at),
        "firmware_version": record.firmware_version,
        "reported": reported,
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
    }
