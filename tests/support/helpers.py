"""Helpers (device drivers) that tests register: succeeding, failing, slow, hanging, recording."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from headless_ops.domain.devices import DeviceStatus
from headless_ops.domain.operations import OperationType
from headless_ops.helpers.base import (
    DeviceView,
    HelperError,
    OperationContext,
    StatusReport,
)

__all__ = ["ScriptedHelper"]


@dataclass
class ScriptedHelper:
    """A helper whose behaviour each test scripts.

    ``script(context)`` may return a result dict, raise a HelperError, or await something;
    by default every attempt succeeds at once with ``{"ok": True}``.
    """

    protocol: str = "ssh"
    supported_operations: frozenset[OperationType] = frozenset(OperationType)
    script: Callable[[OperationContext], Any] | None = None
    calls: list[tuple[str, int]] = field(default_factory=list)
    active: int = 0
    max_active_per_device: dict[str, int] = field(default_factory=dict)

    async def refresh_status(self, device: DeviceView) -> StatusReport:
        return StatusReport(DeviceStatus.ONLINE, firmware_version="1.0")

    async def execute(self, context: OperationContext) -> dict[str, Any]:
        self.calls.append((context.operation_id, context.attempt))
        key = context.device.id
        self.active += 1
        self.max_active_per_device[key] = max(self.max_active_per_device.get(key, 0), 1)
        try:
            if self.script is None:
                return {"ok": True}
            value = self.script(context)
            if asyncio.iscoroutine(value):
                value = await value
            if isinstance(value, HelperError):
                raise value
            return value  # type: ignore[no-any-return]
        finally:
            self.active -= 1
