"""Typed rows the store hands out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["DeviceRecord", "OperationRecord"]


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A device row; ``secrets`` is still encrypted."""

    tenant_id: str
    id: str
    name: str
    protocol: str
    connection: dict[str, Any]
    secrets: str | None
    labels: dict[str, str]
    maintenance_window: str | None
    status: str
    status_detail: str | None
    last_seen_at: datetime | None
    firmware_version: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class OperationRecord:
    """An operation row."""

    id: str
    tenant_id: str
    device_id: str
    operation_type: str
    status: str
    priority: int
    scheduled_at: datetime
    run_after: datetime
    expires_at: datetime | None
    maintenance_window: str | None
    parameters: dict[str, Any]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    attempts: int
    max_attempts: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    lease_version: int
    cancel_requested: bool
    wait_reason: str | None = None
