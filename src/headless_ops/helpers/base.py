"""The contract every device helper fulfils.

A helper speaks one protocol. It declares the operation types it supports (rather than
raising ``NotImplementedError``), refreshes a device's status, and executes one operation
on one device: it returns a typed result (a JSON object) or raises a :class:`HelperError`
that says whether another attempt can help.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from headless_ops.domain.devices import DeviceStatus
from headless_ops.domain.operations import OperationType

__all__ = [
    "DeferredError",
    "DeviceView",
    "Helper",
    "HelperError",
    "OperationContext",
    "PermanentError",
    "RetryableError",
    "StatusReport",
]


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


@dataclass(slots=True)
class OperationContext:
    """One attempt of one operation, as handed to a helper.

    ``cancel`` is set when the operator asks for cancellation while it runs: a helper whose
    protocol can stop should do so and return what the device did; one that cannot just
    finishes, and the operation still ends ``cancelled``.
    """

    operation_id: str
    operation_type: OperationType
    parameters: dict[str, Any]
    attempt: int
    max_attempts: int
    device: DeviceView
    #: Seconds this attempt may take before it is abandoned as timed out.
    timeout_s: float
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    #: Facts the helper learned on the way (e.g. reported firmware version).
    facts: dict[str, Any] = field(default_factory=dict)
    #: The operation's priority rank (lower runs first).
    priority: int = 0


class HelperError(Exception):
    """The operation failed on the device; ``code`` is a short machine-readable reason."""

    retryable = False

    def __init__(self, code: str, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        if retryable is not None:
            self.retryable = retryable


class RetryableError(HelperError):
    """A failure another attempt may fix (unreachable, timed out, dropped session)."""

    retryable = True


class PermanentError(HelperError):
    """A failure another attempt cannot fix (bad credentials, unsupported, refused)."""

    retryable = False


class DeferredError(HelperError):
    """The device cannot be reached now, through no fault of the operation: the attempt is
    given back and the operation waits ``pending`` (with ``wait_reason``) until the device
    shows up (its helper wakes it) or ``recheck_s`` passes. Its ``expires_at`` still holds."""

    retryable = True

    def __init__(
        self,
        code: str,
        message: str,
        *,
        wait_reason: str = "device_unreachable",
        recheck_s: float = 3600.0,
    ) -> None:
        super().__init__(code, message)
        self.wait_reason = wait_reason
        self.recheck_s = recheck_s


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

    async def execute(self, context: OperationContext) -> dict[str, Any]:
        """Run one attempt; return its result or raise :class:`HelperError`."""
        ...
