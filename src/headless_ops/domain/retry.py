"""Retry policy and the decisions taken when an attempt ends or its lease runs out.

Pure functions of their inputs (clock and randomness passed in), so every case is a unit
test on a controllable clock.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from headless_ops.domain.lifecycle import TERMINAL, Status

__all__ = ["Decision", "RetryPolicy", "decide_failure", "decide_rescue"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt n waits ``base * factor**(n-1)``, capped at
    ``cap``, scaled by a random factor in ``[1 - jitter, 1]`` so that a fleet that failed
    together does not retry together."""

    base: timedelta = timedelta(seconds=5)
    factor: float = 2.0
    cap: timedelta = timedelta(minutes=30)
    jitter: float = 0.5

    def delay(self, attempt: int, rng: random.Random | None = None) -> timedelta:
        """The wait before the attempt after ``attempt`` (1-based)."""
        try:
            raw = self.base.total_seconds() * self.factor ** max(0, attempt - 1)
        except OverflowError:
            # factor**n beyond a float is beyond any cap (a zero base stays zero).
            raw = math.inf if self.base > timedelta(0) else 0.0
        capped = min(raw, self.cap.total_seconds())
        scale = 1.0 - self.jitter * (rng or random).random()
        return timedelta(seconds=capped * scale)


class Decision(NamedTuple):
    """What becomes of an operation: its next status, when it may run again, why.

    A named tuple: one is built per attempt, and a frozen dataclass costs several times as
    much to build."""

    status: Status
    run_after: datetime | None = None
    error_code: str | None = None
    message: str | None = None
    #: Why it waits, when it goes back to waiting for another reason than a retry's backoff.
    wait_reason: str | None = None
    #: The attempt does not count (the device could not be reached: nothing was tried).
    refund_attempt: bool = False


def decide_failure(
    *,
    attempts: int,
    max_attempts: int,
    retryable: bool,
    code: str,
    message: str,
    now: datetime,
    policy: RetryPolicy,
    cancel_requested: bool = False,
    expires_at: datetime | None = None,
    rng: random.Random | None = None,
) -> Decision:
    """After a failed attempt: retry later, or fail for good (permanent, exhausted, expired)."""
    if cancel_requested:
        return Decision(Status.CANCELLED, error_code="cancelled", message="cancelled while running")
    if not retryable:
        return Decision(Status.FAILED, error_code=code, message=message)
    if attempts >= max_attempts:
        return Decision(
            Status.FAILED,
            error_code=code,
            message=f"{message} (attempts exhausted: {attempts} of {max_attempts})",
        )
    run_after = now + policy.delay(attempts, rng)
    if expires_at is not None and run_after >= expires_at:
        return Decision(
            Status.FAILED,
            error_code="expired",
            message=f"{message}; the next attempt would start after expires_at",
        )
    return Decision(Status.SCHEDULED, run_after=run_after, error_code=code, message=message)


def decide_rescue(
    *,
    status: Status,
    lease_expires_at: datetime | None,
    attempts: int,
    max_attempts: int,
    cancel_requested: bool,
    now: datetime,
    policy: RetryPolicy,
    expires_at: datetime | None = None,
    rng: random.Random | None = None,
) -> Decision | None:
    """What the reaper does with an operation whose worker may be gone.

    ``None``: leave it alone (not running, or its lease is still valid). Otherwise the
    attempt counts as failed and retryable, unless it was being cancelled.
    """
    if status in TERMINAL or status is not Status.RUNNING:
        return None
    if lease_expires_at is None or lease_expires_at > now:
        return None
    return decide_failure(
        attempts=attempts,
        max_attempts=max_attempts,
        retryable=True,
        code="lease_expired",
        message="the worker running it stopped answering (lease expired)",
        now=now,
        policy=policy,
        cancel_requested=cancel_requested,
        expires_at=expires_at,
        rng=rng,
    )
