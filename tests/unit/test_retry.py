"""Retry policy and the decision taken when an attempt fails (domain/retry.py).

Everything runs on an explicit clock (``now`` is passed in) with seeded ``random.Random``
instances, so each case is exact: backoff grows by ``factor`` up to ``cap``; jitter only
ever shortens the wait, by at most ``jitter``; ``decide_failure`` retries what is
retryable and fails for good what is permanent, exhausted or would start after
``expires_at``; a cancel request wins over everything. Each decision is also checked
against the lifecycle table as the scheduler uses it (a failed attempt leaves ``running``).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headless_ops.domain.lifecycle import Status, check_transition, is_allowed
from headless_ops.domain.retry import Decision, RetryPolicy, decide_failure

NOW = datetime(2026, 3, 29, 0, 59, 30, tzinfo=UTC)
# The defaults of config.py, spelled out so a change there does not silently change these.
POLICY = RetryPolicy(base=timedelta(seconds=5), factor=2.0, cap=timedelta(minutes=30), jitter=0.5)
EXACT = RetryPolicy(base=timedelta(seconds=5), factor=2.0, cap=timedelta(minutes=30), jitter=0)


def _fail(**overrides: object) -> Decision:
    """decide_failure with a retryable first attempt of three, overridable per test."""
    args: dict[str, object] = {
        "attempts": 1,
        "max_attempts": 3,
        "retryable": True,
        "code": "connection_refused",
        "message": "device refused the connection",
        "now": NOW,
        "policy": POLICY,
        "rng": random.Random(7),
    }
    args.update(overrides)
    return decide_failure(**args)  # type: ignore[arg-type]


# -- RetryPolicy -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "seconds"),
    [(1, 5), (2, 10), (3, 20), (4, 40), (9, 1280), (10, 1800), (11, 1800), (100, 1800)],
)
def test_without_jitter_the_delay_doubles_until_the_cap(attempt: int, seconds: int) -> None:
    assert EXACT.delay(attempt, random.Random(0)) == timedelta(seconds=seconds)


@pytest.mark.parametrize("attempt", [0, -3])
def test_an_attempt_below_one_waits_the_base(attempt: int) -> None:
    # max(0, attempt - 1): never a shorter wait than the base for a nonsensical count.
    assert EXACT.delay(attempt) == timedelta(seconds=5)


def test_zero_base_retries_at_once() -> None:
    policy = RetryPolicy(base=timedelta(0), factor=2.0, cap=timedelta(minutes=30), jitter=0.5)
    assert {policy.delay(n, random.Random(n)) for n in range(1, 101)} == {timedelta(0)}


def test_factor_one_keeps_the_delay_constant() -> None:
    policy = RetryPolicy(base=timedelta(seconds=7), factor=1.0, cap=timedelta(hours=1), jitter=0)
    assert {policy.delay(n) for n in range(1, 101)} == {timedelta(seconds=7)}


def test_the_same_seed_gives_the_same_delay() -> None:
    # Reproducible given the seed; and different seeds really do spread a fleet out.
    first = [POLICY.delay(3, random.Random(42)) for _ in range(3)]
    assert len(set(first)) == 1
    spread = {POLICY.delay(3, random.Random(seed)) for seed in range(50)}
    assert len(spread) > 40
    assert min(spread) >= timedelta(seconds=10)
    assert max(spread) <= timedelta(seconds=20)


def test_delay_uses_the_module_random_when_no_rng_is_given() -> None:
    random.seed(1234)
    expected = POLICY.delay(2, random.Random(1234))
    random.seed(1234)
    assert POLICY.delay(2) == expected


@settings(max_examples=200, deadline=None)
@given(
    attempt=st.integers(min_value=1, max_value=100),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    base_s=st.floats(min_value=0.001, max_value=600, allow_nan=False),
    factor=st.floats(min_value=1.0, max_value=10.0, allow_nan=False),
    cap_s=st.floats(min_value=0.001, max_value=86_400, allow_nan=False),
    jitter=st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
)
def test_delay_is_the_capped_exponential_shortened_by_at_most_jitter(
    attempt: int, seed: int, base_s: float, factor: float, cap_s: float, jitter: float
) -> None:
    policy = RetryPolicy(
        base=timedelta(seconds=base_s),
        factor=factor,
        cap=timedelta(seconds=cap_s),
        jitter=jitter,
    )
    # From the stored (microsecond-rounded) base and cap, as the policy sees them.
    base_s, cap_s = policy.base.total_seconds(), policy.cap.total_seconds()
    nominal = min(base_s * factor ** (attempt - 1), cap_s)
    delay = policy.delay(attempt, random.Random(seed)).total_seconds()
    # timedelta keeps microseconds: allow one either side of the exact float bounds.
    assert nominal * (1 - jitter) - 1e-6 <= delay <= nominal + 1e-6
    # Growing: with the same random draw, a later attempt never waits less.
    later = policy.delay(attempt + 1, random.Random(seed)).total_seconds()
    assert later >= delay - 1e-6
    assert later <= cap_s + 1e-6


@settings(max_examples=100, deadline=None)
@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    factor=st.floats(min_value=1.0, max_value=1e6, allow_nan=False),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_delay_never_exceeds_the_cap_however_large_the_exponent(
    attempt: int, factor: float, seed: int
) -> None:
    # retry_factor is only bounded below in config.py; a huge factor**attempt must still
    # give the cap, not an OverflowError in the middle of recording an outcome.
    policy = RetryPolicy(base=timedelta(seconds=5), factor=factor, cap=timedelta(hours=1))
    delay = policy.delay(attempt, random.Random(seed))
    assert timedelta(0) < delay <= timedelta(hours=1)


# -- decide_failure ----------------------------------------------------------------------


def test_retryable_failure_is_rescheduled_after_the_backoff() -> None:
    decision = _fail()
    assert decision.status is Status.SCHEDULED
    assert decision.error_code == "connection_refused"
    assert decision.message == "device refused the connection"
    # Exactly the policy's delay for this attempt with the same random draw...
    assert decision.run_after == NOW + POLICY.delay(1, random.Random(7))
    # ... which lies in [now + delay * (1 - jitter), now + delay].
    assert decision.run_after is not None
    assert NOW + timedelta(seconds=2.5) <= decision.run_after <= NOW + timedelta(seconds=5)


@pytest.mark.parametrize(("attempts", "nominal_s"), [(1, 5), (2, 10), (5, 80), (20, 1800)])
def test_the_wait_grows_with_the_attempt_number(attempts: int, nominal_s: int) -> None:
    decision = _fail(attempts=attempts, max_attempts=100, policy=EXACT)
    assert decision.status is Status.SCHEDULED
    assert decision.run_after == NOW + timedelta(seconds=nominal_s)


@settings(max_examples=150, deadline=None)
@given(
    attempts=st.integers(min_value=1, max_value=99),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    offset_s=st.integers(min_value=-86_400 * 365, max_value=86_400 * 365),
)
def test_retry_run_after_lies_within_the_jitter_bounds(
    attempts: int, seed: int, offset_s: int
) -> None:
    now = NOW + timedelta(seconds=offset_s)
    decision = _fail(attempts=attempts, max_attempts=100, now=now, rng=random.Random(seed))
    nominal = timedelta(seconds=min(5 * 2 ** (attempts - 1), 1800))
    assert decision.status is Status.SCHEDULED
    assert decision.run_after is not None
    assert now + nominal * 0.5 - timedelta(microseconds=1) <= decision.run_after
    assert decision.run_after <= now + nominal


@pytest.mark.parametrize("attempts", [1, 2])
def test_permanent_failure_fails_at_once_with_the_helpers_code(attempts: int) -> None:
    decision = _fail(
        attempts=attempts,
        retryable=False,
        code="unsupported_firmware",
        message="image not accepted by the device",
    )
    assert decision == Decision(
        Status.FAILED, error_code="unsupported_firmware", message="image not accepted by the device"
    )


@pytest.mark.parametrize(("attempts", "max_attempts"), [(3, 3), (1, 1), (4, 3)])
def test_exhausted_attempts_fail_and_say_so(attempts: int, max_attempts: int) -> None:
    decision = _fail(attempts=attempts, max_attempts=max_attempts)
    assert decision.status is Status.FAILED
    assert decision.run_after is None
    # The helper's code is kept: it says why the last attempt failed.
    assert decision.error_code == "connection_refused"
    assert decision.message == (
        f"device refused the connection (attempts exhausted: {attempts} of {max_attempts})"
    )


def test_the_last_but_one_attempt_still_retries() -> None:
    assert _fail(attempts=2, max_attempts=3).status is Status.SCHEDULED


@pytest.mark.parametrize(
    ("retryable", "attempts", "expires_in"),
    [
        (True, 1, None),
        (False, 1, None),  # wins over a permanent error
        (True, 3, None),  # wins over exhaustion
        (True, 1, timedelta(seconds=1)),  # wins over expiry
    ],
)
def test_a_cancel_request_ends_the_operation_cancelled(
    retryable: bool, attempts: int, expires_in: timedelta | None
) -> None:
    decision = _fail(
        retryable=retryable,
        attempts=attempts,
        cancel_requested=True,
        expires_at=None if expires_in is None else NOW + expires_in,
    )
    assert decision == Decision(
        Status.CANCELLED, error_code="cancelled", message="cancelled while running"
    )


def test_a_retry_that_would_start_after_expires_at_fails_as_expired() -> None:
    decision = _fail(policy=EXACT, expires_at=NOW + timedelta(seconds=4))
    assert decision.status is Status.FAILED
    assert decision.error_code == "expired"
    assert decision.run_after is None
    assert decision.message == (
        "device refused the connection; the next attempt would start after expires_at"
    )


def test_expiry_boundary_starting_exactly_at_expires_at_is_too_late() -> None:
    # run_after >= expires_at: an operation not started *before* expires_at has expired.
    at = _fail(policy=EXACT, expires_at=NOW + timedelta(seconds=5))
    assert (at.status, at.error_code) == (Status.FAILED, "expired")
    just_before = _fail(policy=EXACT, expires_at=NOW + timedelta(seconds=5, microseconds=1))
    assert just_before.status is Status.SCHEDULED
    assert just_before.run_after == NOW + timedelta(seconds=5)


def test_already_past_expires_at_fails_as_expired() -> None:
    decision = _fail(expires_at=NOW - timedelta(hours=1))
    assert (decision.status, decision.error_code) == (Status.FAILED, "expired")


def test_permanent_and_exhausted_keep_their_own_code_even_past_expires_at() -> None:
    # Why it failed matters more than when: the helper's verdict is reported, not "expired".
    past = NOW - timedelta(hours=1)
    permanent = _fail(retryable=False, code="bad_image", message="m", expires_at=past)
    assert (permanent.status, permanent.error_code) == (Status.FAILED, "bad_image")
    exhausted = _fail(attempts=3, expires_at=past)
    assert (exhausted.status, exhausted.error_code) == (Status.FAILED, "connection_refused")
    assert "attempts exhausted: 3 of 3" in (exhausted.message or "")


@settings(max_examples=300, deadline=None)
@given(
    attempts=st.integers(min_value=1, max_value=100),
    max_attempts=st.integers(min_value=1, max_value=100),
    retryable=st.booleans(),
    cancel=st.booleans(),
    expires_in_s=st.none() | st.integers(min_value=-3600, max_value=7200),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_every_failure_decision_is_a_legal_move_out_of_running(
    attempts: int,
    max_attempts: int,
    retryable: bool,
    cancel: bool,
    expires_in_s: int | None,
    seed: int,
) -> None:
    expires_at = None if expires_in_s is None else NOW + timedelta(seconds=expires_in_s)
    decision = _fail(
        attempts=attempts,
        max_attempts=max_attempts,
        retryable=retryable,
        cancel_requested=cancel,
        expires_at=expires_at,
        rng=random.Random(seed),
    )
    # The scheduler writes this status over a running row: the table must allow it.
    check_transition(Status.RUNNING, decision.status)
    assert decision.status in {Status.SCHEDULED, Status.FAILED, Status.CANCELLED}
    assert decision.error_code is not None
    # Exactly one rule decides, in this order: cancel, permanent, exhausted, expiry.
    retry_at = NOW + POLICY.delay(attempts, random.Random(seed))
    too_late = expires_at is not None and retry_at >= expires_at
    if cancel:
        expected = (Status.CANCELLED, "cancelled")
    elif not retryable or attempts >= max_attempts:
        expected = (Status.FAILED, "connection_refused")
    elif too_late:
        expected = (Status.FAILED, "expired")
    else:
        expected = (Status.SCHEDULED, "connection_refused")
    assert (decision.status, decision.error_code) == expected
    if decision.status is Status.SCHEDULED:
        assert decision.run_after is not None
        assert decision.run_after >= NOW
        assert expires_at is None or decision.run_after < expires_at
    else:
        assert decision.run_after is None


def test_a_failed_attempt_never_goes_back_to_pending_or_running() -> None:
    # A retry waits for its backoff as scheduled; pending is only for due operations.
    assert not is_allowed(Status.RUNNING, Status.PENDING)
    assert not is_allowed(Status.RUNNING, Status.RUNNING)
