"""The scheduler's running limits (store/scheduling.py ``Limits`` and ``_LimitCounter``).

The counter is built directly with the counts the claim would have loaded, then asked to
admit candidates one by one, as the claim loop does: total running, running per operation
type, running per distinct value of a device label (``{"site": 2}``: two per site), and
starts per minute (reported as ``"rate"`` so the loop knows to wait for time to pass, not
for an operation to finish). Admitting counts the operation; refusing counts nothing. A
limit of 0 or an absent one means no limit, as config.py documents.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from headless_ops.store.scheduling import Limits, _LimitCounter

FW = "firmware_update"
REBOOT = "reboot"


def _counter(
    limits: Limits,
    *,
    total: int = 0,
    by_type: dict[str, int] | None = None,
    by_label: dict[tuple[str, str], int] | None = None,
    starts: int = 0,
) -> _LimitCounter:
    return _LimitCounter(limits, total, dict(by_type or {}), dict(by_label or {}), starts)


def _admit_all(counter: _LimitCounter, items: list[tuple[str, dict[str, str]]]) -> list[str | None]:
    return [counter.admit(t, labels) for t, labels in items]


def test_limits_any_is_false_only_when_nothing_is_set() -> None:
    # With nothing set the claim skips loading the counts altogether.
    assert not Limits().any
    assert not Limits(max_running=0, per_type={}, per_label={}, starts_per_minute=0).any
    assert Limits(max_running=1).any
    assert Limits(per_type={FW: 5}).any
    assert Limits(per_label={"site": 2}).any
    assert Limits(starts_per_minute=60).any


def test_no_limits_admit_everything_and_still_count() -> None:
    counter = _counter(Limits(), total=7)
    assert _admit_all(counter, [(FW, {"site": "a"})] * 100) == [None] * 100
    assert counter.total == 107
    assert counter.starts == 100
    assert counter.by_type == {FW: 100}


def test_total_running_limit() -> None:
    counter = _counter(Limits(max_running=3), total=1, by_type={REBOOT: 1})
    verdicts = _admit_all(counter, [(FW, {}), (REBOOT, {}), (FW, {}), (REBOOT, {})])
    assert verdicts == [None, None, "limit", "limit"]
    assert counter.total == 3
    assert counter.by_type == {FW: 1, REBOOT: 2}


def test_total_limit_already_reached_by_running_operations() -> None:
    # Operations started by other workers count: nothing more starts.
    counter = _counter(Limits(max_running=2), total=2)
    assert counter.admit(FW, {}) == "limit"
    assert counter.total == 2


def test_per_type_limit_counts_only_its_type() -> None:
    counter = _counter(Limits(per_type={FW: 2}), total=10, by_type={FW: 1, REBOOT: 9})
    assert counter.admit(FW, {}) is None
    assert counter.admit(FW, {}) == "limit"
    # Another type is not held by the firmware limit, however many of it run.
    assert _admit_all(counter, [(REBOOT, {})] * 5) == [None] * 5
    assert counter.by_type == {FW: 2, REBOOT: 14}
    assert counter.total == 16


def test_per_label_limit_is_per_distinct_value() -> None:
    counter = _counter(Limits(per_label={"site": 2}))
    paris, lyon = {"site": "paris"}, {"site": "lyon"}
    verdicts = _admit_all(counter, [(FW, paris), (FW, paris), (FW, paris), (FW, lyon)])
    assert verdicts == [None, None, "limit", None]
    assert counter.admit(REBOOT, lyon) is None
    assert counter.admit(REBOOT, lyon) == "limit"
    assert counter.by_label == {("site", "paris"): 2, ("site", "lyon"): 2}


def test_per_label_limit_starts_from_the_running_counts() -> None:
    counter = _counter(Limits(per_label={"site": 2}), by_label={("site", "paris"): 2})
    assert counter.admit(FW, {"site": "paris"}) == "limit"
    assert counter.admit(FW, {"site": "nice"}) is None


def test_devices_without_the_label_are_not_limited_by_it() -> None:
    counter = _counter(Limits(per_label={"site": 1}))
    assert _admit_all(counter, [(FW, {}), (FW, {"rack": "r1"}), (FW, {})]) == [None] * 3
    # Nothing counted under a value nobody has.
    assert counter.by_label == {}
    assert counter.total == 3


def test_other_labels_are_not_counted() -> None:
    counter = _counter(Limits(per_label={"site": 5}))
    assert counter.admit(FW, {"site": "a", "rack": "r1", "tier": "gold"}) is None
    assert counter.by_label == {("site", "a"): 1}


def test_every_label_limit_must_allow_it() -> None:
    counter = _counter(Limits(per_label={"site": 3, "rack": 1}))
    assert counter.admit(FW, {"site": "a", "rack": "r1"}) is None
    # Same site has room, same rack has not.
    assert counter.admit(FW, {"site": "a", "rack": "r1"}) == "limit"
    assert counter.admit(FW, {"site": "a", "rack": "r2"}) is None
    assert counter.by_label == {("site", "a"): 2, ("rack", "r1"): 1, ("rack", "r2"): 1}


def test_label_values_of_different_keys_do_not_mix() -> None:
    # ("site", "x") and ("rack", "x") are different buckets.
    counter = _counter(Limits(per_label={"site": 1, "rack": 1}))
    assert counter.admit(FW, {"site": "x"}) is None
    assert counter.admit(FW, {"rack": "x"}) is None
    assert counter.admit(FW, {"site": "x"}) == "limit"


def test_starts_per_minute_says_rate() -> None:
    counter = _counter(Limits(starts_per_minute=5), starts=3, total=0)
    assert _admit_all(counter, [(FW, {})] * 4) == [None, None, "rate", "rate"]
    assert counter.starts == 5


def test_rate_is_reported_when_both_a_rate_and_a_limit_hold() -> None:
    # "rate" tells the loop to wake when the minute rolls over, not only on a finish.
    counter = _counter(Limits(max_running=1, starts_per_minute=1), total=1, starts=1)
    assert counter.admit(FW, {}) == "rate"


def test_starts_count_even_when_earlier_ones_already_finished() -> None:
    # Started in the last minute counts for the rate however few are still running.
    counter = _counter(Limits(starts_per_minute=2, max_running=100), total=0, starts=2)
    assert counter.admit(FW, {}) == "rate"


def test_a_refusal_counts_nothing() -> None:
    limits = Limits(max_running=10, per_type={FW: 1}, per_label={"site": 1})
    counter = _counter(limits, total=1, by_type={FW: 1}, by_label={("site", "a"): 1}, starts=4)
    before = (counter.total, dict(counter.by_type), dict(counter.by_label), counter.starts)
    assert counter.admit(FW, {"site": "b"}) == "limit"
    assert counter.admit(REBOOT, {"site": "a"}) == "limit"
    assert (counter.total, counter.by_type, counter.by_label, counter.starts) == before


def test_a_limit_of_zero_means_no_limit() -> None:
    # config.py: "Limits (0 or absent: none)"; a 0 in a per-type or per-label map must not
    # leave that type or label waiting pending forever.
    limits = Limits(max_running=0, per_type={FW: 0}, per_label={"site": 0}, starts_per_minute=0)
    counter = _counter(limits, total=50, by_type={FW: 50}, by_label={("site", "a"): 50})
    assert _admit_all(counter, [(FW, {"site": "a"})] * 3) == [None] * 3
    assert counter.by_type == {FW: 53}


@settings(max_examples=200, deadline=None)
@given(
    max_running=st.integers(min_value=0, max_value=6),
    fw_cap=st.none() | st.integers(min_value=0, max_value=4),
    site_cap=st.none() | st.integers(min_value=0, max_value=3),
    rate=st.integers(min_value=0, max_value=8),
    running=st.lists(
        st.tuples(st.sampled_from([FW, REBOOT]), st.sampled_from([None, "a", "b"])),
        max_size=5,
    ),
    recent_starts=st.integers(min_value=0, max_value=5),
    candidates=st.lists(
        st.tuples(st.sampled_from([FW, REBOOT]), st.sampled_from([None, "a", "b", "c"])),
        max_size=25,
    ),
)
def test_admitted_never_exceed_any_limit(
    max_running: int,
    fw_cap: int | None,
    site_cap: int | None,
    rate: int,
    running: list[tuple[str, str | None]],
    recent_starts: int,
    candidates: list[tuple[str, str | None]],
) -> None:
    limits = Limits(
        max_running=max_running,
        per_type={} if fw_cap is None else {FW: fw_cap},
        per_label={} if site_cap is None else {"site": site_cap},
        starts_per_minute=rate,
    )

    def labels(site: str | None) -> dict[str, str]:
        return {} if site is None else {"site": site}

    by_type: dict[str, int] = {}
    by_label: dict[tuple[str, str], int] = {}
    for kind, site in running:
        by_type[kind] = by_type.get(kind, 0) + 1
        if site is not None and site_cap is not None:
            by_label[("site", site)] = by_label.get(("site", site), 0) + 1
    counter = _counter(
        limits,
        total=len(running),
        by_type=by_type,
        by_label=by_label,
        starts=max(recent_starts, len(running)),
    )
    starts0 = counter.starts
    admitted: list[tuple[str, str | None]] = []
    for kind, site in candidates:
        verdict = counter.admit(kind, labels(site))
        # A model of the rules, independent of the counter's own bookkeeping.
        now_running = running + admitted
        over_rate = bool(rate) and starts0 + len(admitted) >= rate
        over_total = bool(max_running) and len(now_running) >= max_running
        over_type = (
            bool(fw_cap) and kind == FW and sum(k == FW for k, _ in now_running) >= (fw_cap or 0)
        )
        over_site = (
            bool(site_cap)
            and site is not None
            and sum(s == site for _, s in now_running) >= (site_cap or 0)
        )
        if over_rate:
            assert verdict == "rate"
        elif over_total or over_type or over_site:
            assert verdict == "limit"
        else:
            assert verdict is None
        if verdict is None:
            admitted.append((kind, site))
    # And the counter's totals agree with what it let through.
    assert counter.total == len(running) + len(admitted)
    assert counter.starts == starts0 + len(admitted)
    assert counter.by_type.get(FW, 0) == sum(k == FW for k, _ in running + admitted)
