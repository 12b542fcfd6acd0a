"""The contract every device helper fulfils.

A helper speaks one protocol. It declares the operation types it supports (rather than
raising ``NotImplementedError``) and refreshes a device's status. Execution of operations
is added to this contract by the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from headless_ops.domain.devices import DeviceStatus
from headless_ops.domain.operations import OperationType

__all__ = ["DeviceView", "Helper", "StatusReport"]


@dataclass(frozen=True, slots=True)
class DeviceView:
    """What a helper sees of a device: connection fields with secrets decrypted."""

    tenant_id: str
    id: str
    name: str
    protocol: str
    connection: dict[str, Any]
    labels: dict[str, str] = field(default_factory=dict)
    firmware_version: str | None = None


@dataclass(frozen=True, slots=True)
class StatusReport:
    """A helper's answer to "how is this device?"; ``detail`` says why when offline."""

    status: DeviceStatus
    seen_at: datetime | None = None
    firmware_version: str | None = None
    detail: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Helper(Protocol):
    """A device helper for one protocol."""

    #: The protocol name devices use (``cwmp``, ``ssh``, …); unique in a registry.
    protocol: str
    #: Operation types this helper can perform.
    supported_operations: frozenset[OperationType]

    async def refresh_status(self, device: DeviceView) -> StatusReport:
        """Contact ``device`` and report its status; must not raise for an unreachable one."""
        ...
