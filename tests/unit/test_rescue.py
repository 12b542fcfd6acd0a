"""Rescue of operations whose lease ran out (domain/retry.py ``decide_rescue``), and the
lifecycle moves the scheduler makes, from its point of view (domain/lifecycle.py).

Each situation the scheduler issue names, on an explicit clock with a seeded random:
expired and retryable (back to ``scheduled`` after a backoff, the attempt counted);
expired at max attempts (``failed``, saying so); not yet expired (left alone); already
finished (left alone); cancelled while running (``cancelled``); not running at all (left
alone). Then the transitions the scheduler's SQL performs are checked against the table:
the statuses it claims from, writes outcomes over, defers, holds and expires are exactly
the allowed ones, and the table refuses the moves it must never make.
test_lifecycle.py checks the table pair by pair; this module checks the scheduler's use of it.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headless_ops.domain.lifecycle import (
    TERMINAL,
    WAITING,
    IllegalTransition,
    Status,
    allowed_sources,
    check_transition,
)
from headless_ops.domain.retry import Decision, RetryPolicy, decide_rescue

NOW = datetime(2026, 10, 25, 0, 45, tzinfo=UTC)
POLICY = RetryPolicy(base=timedelta(seconds=5), factor=2.0, cap=timedelta(minutes=30), jitter=0.5)
LEASE_GONE = "the worker running it stopped answering (lease expired)"


def _rescue(**overrides: object) -> Decision | None:
    """decide_rescue for a running first attempt of three whose lease ran out 10 s ago."""
    args: dict[str, object] = {
        "status": Status.RUNNING,
        "lease_expires_at": NOW - timedelta(seconds=10),
        "attempts": 1,
        "max_attempts": 3,
        "cancel_requested": False,
        "now": NOW,
        "policy": POLICY,
        "rng": random.Random(3),
    }
    args.update(overrides)
    return decide_rescue(**args)  # type: ignore[arg-type]


# -- the situations ------------------------------------------------------------------------


def test_expired_and_retryable_goes_back_to_scheduled_after_a_backoff() -> None:
    decision = _rescue()
    assert decision is not None
    assert decision.status is Status.SCHEDULED
    assert decision.error_code == "lease_expired"
    assert decision.message == LEASE_GONE
    # The lost attempt counts: the backoff is the one for attempt 1, with the same draw.
    assert decision.run_after == NOW + POLICY.delay(1, random.Random(3))
    assert decision.run_after is not None
    assert NOW + timedelta(seconds=2.5) <= decision.run_after <= NOW + timedelta(seconds=5)


@pytest.mark.parametrize(("attempts", "nominal_s"), [(1, 5), (2, 10), (4, 40)])
def test_the_backoff_after_a_lost_lease_grows_with_the_attempt(
    attempts: int, nominal_s: int
) -> None:
    exact = RetryPolicy(base=timedelta(seconds=5), factor=2, cap=timedelta(minutes=30), jitter=0)
    decision = _rescue(attempts=attempts, max_attempts=5, policy=exact)
    assert decision is not None
    assert decision.run_after == NOW + timedelta(seconds=nominal_s)


@pytest.mark.parametrize(("attempts", "max_attempts"), [(3, 3), (1, 1), (5, 3)])
def test_expired_at_max_attempts_fails_and_says_so(attempts: int, max_attempts: int) -> None:
    decision = _rescue(attempts=attempts, max_attempts=max_attempts)
    assert decision == Decision(
        Status.FAILED,
        error_code="lease_expired",
        message=f"{LEASE_GONE} (attempts exhausted: {attempts} of {max_attempts})",
    )


@pytest.mark.parametrize(
    "lease_left",
    [timedelta(microseconds=1), timedelta(seconds=1), timedelta(seconds=30), timedelta(days=1)],
)
def test_not_yet_expired_is_left_alone(lease_left: timedelta) -> None:
    assert _rescue(lease_expires_at=NOW + lease_left) is None
    # Even when the attempts are used up or a cancel is pending: its worker is alive.
    assert _rescue(lease_expires_at=NOW + lease_left, attempts=3, cancel_requested=True) is None


def test_a_lease_expiring_exactly_now_is_expired() -> None:
    # A lease is valid strictly before lease_expires_at.
    decision = _rescue(lease_expires_at=NOW)
    assert decision is not None
    assert decision.status is Status.SCHEDULED


def test_running_without_a_lease_is_left_alone() -> None:
    # No expiry recorded means nothing to judge it by: never guess a worker is dead.
    assert _rescue(lease_expires_at=None) is None


@pytest.mark.parametrize("status", sorted(TERMINAL))
@pytest.mark.parametrize("cancel", [False, True])
def test_already_finished_is_left_alone(status: Status, cancel: bool) -> None:
    # A stale lease column on a finished row must never reopen it.
    assert _rescue(status=status, cancel_requested=cancel) is None
    assert _rescue(status=status, attempts=3, lease_expires_at=NOW - timedelta(days=30)) is None


@pytest.mark.parametrize(("attempts", "max_attempts"), [(1, 3), (3, 3)])
def test_cancelled_while_running_ends_cancelled(attempts: int, max_attempts: int) -> None:
    # The cancel wins even when the attempts are used up: the user asked for it to stop.
    decision = _rescue(cancel_requested=True, attempts=attempts, max_attempts=max_attempts)
    assert decision == Decision(
        Status.CANCELLED, error_code="cancelled", message="cancelled while running"
    )


@pytest.mark.parametrize("status", sorted(WAITING))
def test_not_running_is_left_alone(status: Status) -> None:
    # Scheduled and pending rows hold no lease; a leftover expiry must not move them.
    assert _rescue(status=status) is None
    assert _rescue(status=status, cancel_requested=True, attempts=3) is None


def test_a_retry_after_a_lost_lease_that_would_start_after_expires_at_fails_as_expired() -> None:
    decision = _rescue(expires_at=NOW + timedelta(seconds=1))
    assert decision is not None
    assert (decision.status, decision.error_code) == (Status.FAILED, "expired")
    assert decision.message == f"{LEASE_GONE}; the next attempt would start after expires_at"
    # With room before expires_at it is retried as usual.
    later = _rescue(expires_at=NOW + timedelta(minutes=1))
    assert later is not None
    assert later.status is Status.SCHEDULED
    assert later.run_after is not None
    assert later.run_after < NOW + timedelta(minutes=1)


def test_the_clock_decides_the_same_lease_is_alive_then_rescued() -> None:
    # One row seen by the reaper at successive ticks of a controlled clock.
    lease_end = NOW + timedelta(seconds=30)
    ticks = [NOW, NOW + timedelta(seconds=29, microseconds=999_999), lease_end]
    seen = [_rescue(lease_expires_at=lease_end, now=t) for t in ticks]
    assert seen[:2] == [None, None]
    assert seen[2] is not None
    assert seen[2].status is Status.SCHEDULED
    assert seen[2].run_after is not None
    assert seen[2].run_after > lease_end


@settings(max_examples=300, deadline=None)
@given(
    status=st.sampled_from(list(Status)),
    lease_offset_s=st.none() | st.integers(min_value=-3600, max_value=3600),
    attempts=st.integers(min_value=1, max_value=100),
    max_attempts=st.integers(min_value=1, max_value=100),
    cancel=st.booleans(),
    expires_in_s=st.none() | st.integers(min_value=-3600, max_value=7200),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_rescue_acts_only_on_running_rows_with_a_lapsed_lease(
    status: Status,
    lease_offset_s: int | None,
    attempts: int,
    max_attempts: int,
    cancel: bool,
    expires_in_s: int | None,
    seed: int,
) -> None:
    lease = None if lease_offset_s is None else NOW + timedelta(seconds=lease_offset_s)
    expires_at = None if expires_in_s is None else NOW + timedelta(seconds=expires_in_s)
    decision = _rescue(
        status=status,
        lease_expires_at=lease,
        attempts=attempts,
        max_attempts=max_attempts,
        cancel_requested=cancel,
        expires_at=expires_at,
        rng=random.Random(seed),
    )
    lapsed = status is Status.RUNNING and lease is not None and lease <= NOW
    assert (decision is not None) is lapsed
    if decision is None:
        return
    # Whatever it decides is a legal move out of running, and the only three it may make.
    check_transition(Status.RUNNING, decision.status)
    if cancel:
        assert decision.status is Status.CANCELLED
    elif attempts >= max_attempts:
        assert (decision.status, decision.error_code) == (Status.FAILED, "lease_expired")
    elif decision.status is Status.FAILED:
        assert decision.error_code == "expired"
        assert expires_at is not None
    else:
        assert decision.status is Status.SCHEDULED
        assert decision.error_code == "lease_expired"
        assert decision.run_after is not None
        assert decision.run_after >= NOW
        assert expires_at is None or decision.run_after < expires_at


# -- the scheduler's transitions against the table ----------------------------------------


def test_the_scheduler_claims_exactly_from_the_statuses_that_may_become_running() -> None:
    from headless_ops.store import scheduling

    # The claim's and the deferral's WHERE status IN (…) are this list: it must be what
    # the table allows, or the SQL guard and the Python guard disagree.
    assert {Status(s) for s in scheduling._WAITING} == allowed_sources(Status.RUNNING)
    assert allowed_sources(Status.RUNNING) == WAITING
    assert Status.RUNNING.value == scheduling._RUNNING


@pytest.mark.parametrize(
    ("source", "target", "why"),
    [
        (Status.SCHEDULED, Status.RUNNING, "claimed"),
        (Status.PENDING, Status.RUNNING, "claimed after waiting"),
        (Status.SCHEDULED, Status.PENDING, "due but outside its window or over a limit"),
        (Status.PENDING, Status.SCHEDULED, "a retry waits for its backoff again"),
        (Status.SCHEDULED, Status.FAILED, "expired before it started, or window missing"),
        (Status.PENDING, Status.FAILED, "window never opens before expires_at"),
        (Status.SCHEDULED, Status.CANCELLED, "cancelled before it started"),
        (Status.PENDING, Status.CANCELLED, "cancelled while waiting"),
        (Status.RUNNING, Status.COMPLETED, "the helper returned"),
        (Status.RUNNING, Status.FAILED, "permanent error, attempts exhausted, expired"),
        (Status.RUNNING, Status.SCHEDULED, "retryable error or lost lease"),
        (Status.RUNNING, Status.CANCELLED, "cancelled while running"),
    ],
)
def test_every_move_the_scheduler_makes_is_allowed(
    source: Status, target: Status, why: str
) -> None:
    check_transition(source, target)
    assert source in allowed_sources(target), why


@pytest.mark.parametrize(
    ("source", "target", "why"),
    [
        (Status.RUNNING, Status.PENDING, "a running operation never waits for a window again"),
        (Status.RUNNING, Status.RUNNING, "two workers must not both claim it"),
        (Status.SCHEDULED, Status.COMPLETED, "only a run can complete"),
        (Status.PENDING, Status.COMPLETED, "only a run can complete"),
        (Status.COMPLETED, Status.SCHEDULED, "a late retry after success"),
        (Status.FAILED, Status.SCHEDULED, "a rescue of a finished row"),
        (Status.CANCELLED, Status.RUNNING, "a claim of a cancelled row"),
        (Status.FAILED, Status.COMPLETED, "a fenced-out worker's late result"),
        (Status.CANCELLED, Status.COMPLETED, "a result after the cancel was recorded"),
        (Status.COMPLETED, Status.FAILED, "a second outcome"),
    ],
)
def test_moves_the_scheduler_must_never_make_are_refused(
    source: Status, target: Status, why: str
) -> None:
    with pytest.raises(IllegalTransition) as info:
        check_transition(source, target)
    assert (info.value.source, info.value.target) == (source, target), why
    assert source not in allowed_sources(target)
