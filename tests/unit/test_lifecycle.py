"""The operation status lifecycle (domain/lifecycle.py), checked pair by pair.

Every (source, target) pair of the six statuses is compared with the table DESIGN.md
draws; terminal statuses never change; ``allowed_sources`` (the SQL guard) agrees with
``is_allowed`` (the Python guard).
"""

from __future__ import annotations

import itertools

import pytest

from headless_ops.domain.lifecycle import (
    ACTIVE,
    TERMINAL,
    WAITING,
    IllegalTransition,
    Status,
    allowed_sources,
    check_transition,
    is_allowed,
)

S = Status

# Written out by hand from DESIGN.md's diagram rather than derived from the code, so a
# change to the table in src must be made here too, on purpose.
INTENDED: dict[Status, set[Status]] = {
    # due -> pending; claimed -> running; expired -> failed; cancel.
    S.SCHEDULED: {S.PENDING, S.RUNNING, S.FAILED, S.CANCELLED},
    # back to scheduled to wait for backoff/window; claimed; expired; cancel.
    S.PENDING: {S.SCHEDULED, S.RUNNING, S.FAILED, S.CANCELLED},
    # retry (or lost lease) -> scheduled; outcome; cancel while running.
    S.RUNNING: {S.SCHEDULED, S.COMPLETED, S.FAILED, S.CANCELLED},
    S.COMPLETED: set(),
    S.FAILED: set(),
    S.CANCELLED: set(),
}

ALL_PAIRS = list(itertools.product(Status, Status))


def test_six_statuses() -> None:
    assert {s.value for s in Status} == {
        "scheduled",
        "pending",
        "running",
        "completed",
        "failed",
        "cancelled",
    }


def test_named_sets() -> None:
    assert {S.COMPLETED, S.FAILED, S.CANCELLED} == TERMINAL
    assert {S.SCHEDULED, S.PENDING, S.RUNNING} == ACTIVE
    assert {S.SCHEDULED, S.PENDING} == WAITING
    # Every status is either active or terminal, never both.
    assert set(Status) == ACTIVE | TERMINAL
    assert not ACTIVE & TERMINAL
    assert WAITING < ACTIVE


@pytest.mark.parametrize(("source", "target"), ALL_PAIRS, ids=lambda s: str(s))
def test_every_pair_matches_the_intended_table(source: Status, target: Status) -> None:
    expected = target in INTENDED[source]
    assert is_allowed(source, target) is expected
    if expected:
        check_transition(source, target)
    else:
        with pytest.raises(IllegalTransition) as info:
            check_transition(source, target)
        assert info.value.source is source
        assert info.value.target is target
        assert f"from {source} to {target}" in str(info.value)


@pytest.mark.parametrize("source", sorted(TERMINAL))
def test_terminal_statuses_never_change(source: Status) -> None:
    assert not any(is_allowed(source, target) for target in Status)


@pytest.mark.parametrize("status", list(Status))
def test_no_status_transitions_to_itself(status: Status) -> None:
    # A self-transition would let two workers both "win" the same update.
    assert not is_allowed(status, status)


@pytest.mark.parametrize("status", sorted(ACTIVE))
def test_every_active_status_can_be_cancelled_and_can_fail(status: Status) -> None:
    assert is_allowed(status, S.CANCELLED)
    assert is_allowed(status, S.FAILED)


def test_completed_only_from_running() -> None:
    assert allowed_sources(S.COMPLETED) == {S.RUNNING}


@pytest.mark.parametrize("target", list(Status))
def test_allowed_sources_agrees_with_is_allowed(target: Status) -> None:
    sources = allowed_sources(target)
    assert sources == {s for s in Status if is_allowed(s, target)}
    assert sources == {s for s, targets in INTENDED.items() if target in targets}
    # The SQL guard never lets a terminal row move.
    assert not sources & TERMINAL


def test_illegal_transition_is_a_value_error() -> None:
    # Callers that treat bad input uniformly (ValueError) also catch it.
    assert issubclass(IllegalTransition, ValueError)
