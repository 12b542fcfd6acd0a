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


def test_the_wait_until_the_next_token_and_a_token_given_back() -> None:
    bucket = _TokenBucket(per_minute=2)  # one token every 30 s
    assert bucket.take(0.0) and bucket.take(0.0)
    assert not bucket.take(0.0)
    assert bucket.wait_s() == 30
    assert not bucket.take(12.0)
    assert bucket.wait_s() == 18  # 12 s of the 30 already refilled
    bucket.give_back()  # a registration that failed: its token is not spent
    assert bucket.take(12.0)
    bucket.give_back()
    bucket.give_back()
    bucket.give_back()
    assert bucket.tokens == 2  # never more than a minute's worth
