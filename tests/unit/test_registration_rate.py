"""The ACS's bound on auto-registrations: a token bucket on a controllable clock."""

from __future__ import annotations

from headless_ops.cwmp.engine import _TokenBucket


def test_a_full_minute_at_once_then_one_per_share_of_the_minute() -> None:
    bucket = _TokenBucket(per_minute=3)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(119.0)  # 19 s: not yet a third of a minute
    assert bucket.take(120.0)  # 20 s: one more
    assert not bucket.take(120.0)
    # Idle for long: refilled to the whole minute's worth, never more.
    assert [bucket.take(1000.0) for _ in range(4)] == [True, True, True, False]


def test_zero_means_no_limit() -> None:
    bucket = _TokenBucket(per_minute=0)
    assert all(bucket.take(5.0) for _ in range(10_000))
