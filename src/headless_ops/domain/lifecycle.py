"""Operation statuses and the transitions allowed between them.

The same table guards transitions in Python and, through ``allowed_sources``, in the
``WHERE status IN (…)`` of the SQL update that performs each one.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ACTIVE",
    "TERMINAL",
    "WAITING",
    "IllegalTransition",
    "Status",
    "allowed_sources",
    "check_transition",
    "is_allowed",
]


class Status(StrEnum):
    """Where an operation is in its life."""

    SCHEDULED = "scheduled"
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: Waiting to run: not yet due (scheduled) or due and waiting for device, window or slot.
WAITING = frozenset({Status.SCHEDULED, Status.PENDING})
#: Not finished: a device with such an operation cannot be deleted.
ACTIVE = frozenset({Status.SCHEDULED, Status.PENDING, Status.RUNNING})
#: Never change again.
TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})

_ALLOWED: dict[Status, frozenset[Status]] = {
    Status.SCHEDULED: frozenset({Status.PENDING, Status.RUNNING, Status.FAILED, Status.CANCELLED}),
    # pending -> scheduled: a retry waits for its backoff again.
    Status.PENDING: frozenset({Status.SCHEDULED, Status.RUNNING, Status.FAILED, Status.CANCELLED}),
    # running -> scheduled: retry after a retryable failure or an expired lease.
    Status.RUNNING: frozenset(
        {Status.SCHEDULED, Status.COMPLETED, Status.FAILED, Status.CANCELLED}
    ),
    Status.COMPLETED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELLED: frozenset(),
}


class IllegalTransition(ValueError):
    """This status change is not allowed."""

    def __init__(self, source: Status, target: Status) -> None:
        super().__init__(f"an operation cannot go from {source} to {target}")
        self.source = source
        self.target = target


def is_allowed(source: Status, target: Status) -> bool:
    """Whether ``source -> target`` is a legal transition."""
    return target in _ALLOWED[source]


def check_transition(source: Status, target: Status) -> None:
    """Raise :class:`IllegalTransition` unless ``source -> target`` is legal."""
    if not is_allowed(source, target):
        raise IllegalTransition(source, target)


def allowed_sources(target: Status) -> frozenset[Status]:
    """Every status from which ``target`` may be reached (for the SQL guard)."""
    return frozenset(s for s, targets in _ALLOWED.items() if target in targets)
