"""Maintenance windows (domain/windows.py): when an operation may start.

Property tests (hypothesis) compare ``next_start``, ``can_start`` and ``open_interval``
with an independent model of the window, across IANA time zones (a 30-minute DST in
Lord Howe, a 45-minute offset in Chatham, none in Kolkata and Sao Paulo) and with ``now``
drawn both uniformly and within two days of each 2026 daylight-saving change. The model
does not use cronsim: it finds openings by reading local wall-clock time minute by minute
(for "*/15"-style patterns, which follow the clock through a change) or by placing each
day's fixed start at the first instant whose local time reaches it (for "0 2 * * *"-style
patterns: a start that spring-forward skips runs right after the gap, a start in the
repeated hour of fall-back runs once). Durations are real time. Overlapping or touching
openings form one open period; an operation may start at ``t`` when ``t`` is in an open
period that lasts at least ``margin`` after ``t``. The result of ``next_start`` is then
checked to be startable and, by brute force at one-minute steps, the earliest.

Explicit regression cases pin the 2026 changes in Europe/Paris, America/New_York,
Australia/Lord_Howe and Pacific/Chatham; invalid definitions raise ``WindowError``.
"""

from __future__ import annotations

import bisect
import time as clock
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headless_ops.domain.windows import MaintenanceWindow, WindowError, next_start_time

MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)
BRUTE_FORCE_SPAN = timedelta(days=2)

ZONES = [
    "Europe/Paris",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "America/Sao_Paulo",
    "UTC",
]


def _z(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# The 2026 offset changes, written out by hand (and checked against tzdata below).
TRANSITIONS: dict[str, list[datetime]] = {
    # 02:00 CET -> 03:00 CEST; 03:00 CEST -> 02:00 CET.
    "Europe/Paris": [_z("2026-03-29T01:00Z"), _z("2026-10-25T01:00Z")],
    # 02:00 EST -> 03:00 EDT; 02:00 EDT -> 01:00 EST.
    "America/New_York": [_z("2026-03-08T07:00Z"), _z("2026-11-01T06:00Z")],
    # 02:00 +11 -> 01:30 +10:30; 02:00 +10:30 -> 02:30 +11.
    "Australia/Lord_Howe": [_z("2026-04-04T15:00Z"), _z("2026-10-03T15:30Z")],
    # 03:45 +13:45 -> 02:45 +12:45; 02:45 +12:45 -> 03:45 +13:45.
    "Pacific/Chatham": [_z("2026-04-04T14:00Z"), _z("2026-09-26T14:00Z")],
    "Asia/Kolkata": [],
    "America/Sao_Paulo": [],  # no DST since 2019
    "UTC": [],
}
ALL_TRANSITIONS = sorted(t for ts in TRANSITIONS.values() for t in ts)

#: Patterns that open at least daily (brute-forced over the whole span) and sparser ones.
DAILY_CRONS = [
    "0 2 * * *",
    "30 1 * * *",
    "30 2 * * *",
    "45 1 * * *",
    "15 2 * * *",
    "0 3 * * *",
    "*/15 * * * *",
    "0 * * * *",
]
SPARSE_CRONS = ["30 1 * * 0", "0 0 1 * *", "0 3 * * 1-5"]


# -- an independent model of a window ------------------------------------------------------


def _wall(moment: datetime, zone: ZoneInfo) -> datetime:
    """Local wall-clock time, naive."""
    return moment.astimezone(zone).replace(tzinfo=None)


def _values(spec: str, lo: int, hi: int) -> frozenset[int]:
    out: set[int] = set()
    for part in spec.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/")
            step = int(step_text)
        if part == "*":
            first, last = lo, hi
        elif "-" in part:
            first, last = (int(x) for x in part.split("-"))
        else:
            first = last = int(part)
        out.update(range(first, last + 1, step))
    return frozenset(out)


@dataclass(frozen=True)
class CronModel:
    """The five fields of the patterns used here, and which DST rule applies."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    fixed: bool  # minute and hour are specific: Debian-cron DST rules

    @classmethod
    def parse(cls, cron: str) -> CronModel:
        minute, hour, dom, month, dow = cron.split()
        return cls(
            _values(minute, 0, 59),
            _values(hour, 0, 23),
            _values(dom, 1, 31),
            _values(month, 1, 12),
            _values(dow, 0, 6),
            fixed=not minute.startswith("*") and not hour.startswith("*"),
        )

    def day_matches(self, day: date) -> bool:
        # None of the patterns restricts both day fields, so they combine with "and".
        return (
            day.month in self.months
            and day.day in self.days
            and (day.weekday() + 1) % 7 in self.weekdays
        )

    def starts(self, zone: ZoneInfo, lo: datetime, hi: datetime) -> list[datetime]:
        """Openings in ``(lo, hi]``, UTC, sorted."""
        found: set[datetime] = set()
        if self.fixed:
            day = _wall(lo, zone).date() - DAY
            while day <= _wall(hi, zone).date() + DAY:
                if self.day_matches(day):
                    for h in self.hours:
                        for m in self.minutes:
                            found.add(_first_reaching(datetime.combine(day, time(h, m)), zone))
                day += DAY
        else:
            moment = lo.replace(second=0, microsecond=0) + MINUTE
            while moment <= hi:
                local = _wall(moment, zone)
                if (
                    local.minute in self.minutes
                    and local.hour in self.hours
                    and self.day_matches(local.date())
                ):
                    found.add(moment)
                moment += MINUTE
        return sorted(s for s in found if lo < s <= hi)


def _first_reaching(target: datetime, zone: ZoneInfo) -> datetime:
    """The first instant (on the minute) whose local time is ``target`` or later: the time
    itself, its first occurrence when repeated, the end of the gap when skipped."""
    # Offsets change by at most an hour here, so three hours earlier is safely before.
    moment = target.replace(tzinfo=zone).astimezone(UTC) - timedelta(hours=3)
    while _wall(moment, zone) < target:
        moment += MINUTE
    return moment


class Periods:
    """Open periods ``[a, e)`` (touching or overlapping openings merged), with queries."""

    def __init__(self, intervals: list[tuple[datetime, datetime]]) -> None:
        merged: list[list[datetime]] = []
        for a, e in sorted(intervals):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([a, e])
        self.periods = [(a, e) for a, e in merged]
        self._starts = [a for a, _ in self.periods]

    def containing(self, t: datetime) -> tuple[datetime, datetime] | None:
        i = bisect.bisect_right(self._starts, t) - 1
        if i >= 0 and t < self.periods[i][1]:
            return self.periods[i]
        return None

    def startable(self, t: datetime, margin: timedelta) -> bool:
        period = self.containing(t)
        return period is not None and period[1] - t >= margin

    def earliest(self, now: datetime, margin: timedelta) -> datetime | None:
        for a, e in self.periods:
            candidate = max(a, now)
            if candidate < e and e - candidate >= margin:
                return candidate
        return None


def _model_periods(window: MaintenanceWindow, lo: datetime, hi: datetime) -> Periods:
    """The model's open periods covering ``[lo, hi]`` (those reaching past ``hi`` cut there,
    which only ever shortens a period that is already longer than anything asked of it)."""
    if window.cron is None:
        return Periods([(a.astimezone(UTC), e.astimezone(UTC)) for a, e in window.ranges])
    assert window.duration is not None
    starts = CronModel.parse(window.cron).starts(window.zone, lo - window.duration - MINUTE, hi)
    return Periods([(s, s + window.duration) for s in starts])


def _brute_force_steps(now: datetime, until: datetime) -> Iterator[datetime]:
    """``now`` plus whole minutes, and every minute boundary, strictly before ``until``
    (and at most BRUTE_FORCE_SPAN after ``now``)."""
    stop = min(until, now + BRUTE_FORCE_SPAN)
    t = now
    while t < stop:
        yield t
        t += MINUTE
    t = now.replace(second=0, microsecond=0) + MINUTE
    while t < stop:
        yield t
        t += MINUTE


def _check_against_model(window: MaintenanceWindow, now: datetime, margin: timedelta) -> None:
    """Every property of next_start / can_start / open_interval at ``now``."""
    result = window.next_start(now, margin)
    horizon = (result if result is not None else now) + margin + BRUTE_FORCE_SPAN + DAY
    model = _model_periods(window, now - DAY, horizon)

    # The earliest startable moment per the model is what next_start says...
    expected = model.earliest(now, margin)
    if result is None:
        assert expected is None or expected - now > BRUTE_FORCE_SPAN + DAY
    else:
        assert result == expected
        assert result >= now
        assert result.utcoffset() == timedelta(0)
        # ... the window itself agrees that it may start then, with margin left ...
        assert window.can_start(result, margin)
        interval = window.open_interval(result, until=result + margin)
        assert interval is not None
        assert interval[0] <= result < interval[1]
        assert interval[1] - result >= margin
        # ... and one second earlier (when still after now) it may not.
        if result > now:
            assert not window.can_start(result - timedelta(seconds=1), margin)
    # Brute force: no earlier startable moment at one-minute steps.
    for t in _brute_force_steps(now, result or horizon):
        assert not model.startable(t, margin), t

    # open_interval(now): containing now exactly when the model says it is open.
    bound = now + DAY
    interval = window.open_interval(now, until=bound)
    period = model.containing(now)
    if period is None:
        assert interval is None
    else:
        assert interval is not None
        assert interval[0] <= now < interval[1]
        # Inside the model's period, ending where it ends (or past the bound asked for).
        assert period[0] <= interval[0]
        if period[1] < bound:
            assert interval[1] == period[1]
        else:
            assert interval[1] >= bound
    assert window.can_start(now, margin) is model.startable(now, margin)
    assert window.can_start(now) is (period is not None)


# -- strategies ----------------------------------------------------------------------------

UNIFORM_FROM = datetime(2025, 12, 20, tzinfo=UTC)
UNIFORM_SPAN_S = int(timedelta(days=390).total_seconds())


@st.composite
def moments(draw: st.DrawFn, zone: str) -> datetime:
    """Uniform over 2026, or within two days of a DST change (of this zone if it has any)."""
    second = draw(st.sampled_from([0, 0, 1, 30, 59]))
    micro = draw(st.sampled_from([0, 0, 1, 999_999]))
    if draw(st.booleans()):
        offset = draw(st.integers(min_value=0, max_value=UNIFORM_SPAN_S // 60))
        return UNIFORM_FROM + timedelta(minutes=offset, seconds=second, microseconds=micro)
    change = draw(st.sampled_from(TRANSITIONS[zone] or ALL_TRANSITIONS))
    offset = draw(st.integers(min_value=-2 * 24 * 60, max_value=2 * 24 * 60))
    return change + timedelta(minutes=offset, seconds=second, microseconds=micro)


@st.composite
def recurring_cases(draw: st.DrawFn) -> tuple[MaintenanceWindow, datetime, timedelta]:
    zone = draw(st.sampled_from(ZONES))
    cron = draw(st.sampled_from(DAILY_CRONS + SPARSE_CRONS))
    duration = timedelta(minutes=draw(st.integers(min_value=1, max_value=360)))
    sub_daily = cron.startswith(("*", "0 *"))
    if sub_daily and duration < timedelta(hours=1):
        # Frequent short openings: a margin above the duration can never be met unless
        # openings merge, and proving "never" means walking 400 days of them.
        margin_s = draw(st.integers(min_value=0, max_value=int(duration.total_seconds())))
    else:
        margin_s = draw(
            st.integers(min_value=0, max_value=int((duration + timedelta(hours=2)).total_seconds()))
        )
    now = draw(moments(zone))
    return MaintenanceWindow("w", zone, cron, duration), now, timedelta(seconds=margin_s)


@st.composite
def range_cases(draw: st.DrawFn) -> tuple[MaintenanceWindow, datetime, timedelta]:
    zone = draw(st.sampled_from(ZONES))
    now = draw(moments(zone))
    base = now.replace(second=0, microsecond=0)
    tz = ZoneInfo(draw(st.sampled_from(ZONES)))
    ranges = []
    for _ in range(draw(st.integers(min_value=1, max_value=5))):
        start = base + timedelta(minutes=draw(st.integers(min_value=-24 * 60, max_value=36 * 60)))
        length = timedelta(minutes=draw(st.integers(min_value=1, max_value=360)))
        # Bounds in any zone: only the instant matters.
        ranges.append((start.astimezone(tz), (start + length).astimezone(tz)))
    margin = timedelta(seconds=draw(st.integers(min_value=0, max_value=8 * 3600)))
    return MaintenanceWindow("r", zone, ranges=tuple(ranges)), now, margin


# -- the properties ------------------------------------------------------------------------


@settings(max_examples=250, deadline=None)
@given(case=recurring_cases())
def test_recurring_window_next_start_is_the_earliest_startable_moment(
    case: tuple[MaintenanceWindow, datetime, timedelta],
) -> None:
    window, now, margin = case
    _check_against_model(window, now, margin)


@settings(max_examples=200, deadline=None)
@given(case=range_cases())
def test_one_off_ranges_next_start_is_the_earliest_startable_moment(
    case: tuple[MaintenanceWindow, datetime, timedelta],
) -> None:
    window, now, margin = case
    _check_against_model(window, now, margin)


@settings(max_examples=60, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    cron=st.sampled_from(DAILY_CRONS),
    data=st.data(),
)
def test_recurring_window_agrees_with_the_model_minute_by_minute(
    zone: str, cron: str, data: st.DataObject
) -> None:
    # can_start itself (margin 0: "is it open") at every minute of three hours around
    # a moment, most often a DST change.
    duration = timedelta(minutes=data.draw(st.sampled_from([1, 10, 45, 90])))
    start = data.draw(moments(zone)).replace(second=0, microsecond=0)
    window = MaintenanceWindow("w", zone, cron, duration)
    model = _model_periods(window, start - DAY, start + DAY)
    for k in range(-90, 90):
        t = start + k * MINUTE
        assert window.can_start(t) is (model.containing(t) is not None), t


def test_transitions_table_matches_tzdata() -> None:
    # The table drives the "near a DST change" draws: a wrong entry would silently test
    # ordinary days instead.
    for name, changes in TRANSITIONS.items():
        zone = ZoneInfo(name)
        found = []
        t = datetime(2026, 1, 1, tzinfo=UTC)
        before = t.astimezone(zone).utcoffset()
        while t.year == 2026:
            offset = t.astimezone(zone).utcoffset()
            if offset != before:
                found.append(t)
                before = offset
            t += timedelta(minutes=30)
        assert found == changes, name


def test_model_places_fixed_starts_like_debian_cron() -> None:
    # The model's own DST rules, pinned by hand so that the model is not just trusted.
    paris = ZoneInfo("Europe/Paris")
    assert _first_reaching(datetime(2026, 3, 29, 2, 30), paris) == _z("2026-03-29T01:00Z")
    assert _first_reaching(datetime(2026, 10, 25, 2, 30), paris) == _z("2026-10-25T00:30Z")
    assert _first_reaching(datetime(2026, 7, 1, 2, 0), paris) == _z("2026-07-01T00:00Z")
    daily = CronModel.parse("30 2 * * *").starts(
        paris, _z("2026-10-24T12:00Z"), _z("2026-10-26T12:00Z")
    )
    assert daily == [_z("2026-10-25T00:30Z"), _z("2026-10-26T01:30Z")]
    quarter = CronModel.parse("*/15 * * * *").starts(
        paris, _z("2026-10-25T00:50Z"), _z("2026-10-25T01:20Z")
    )
    # Wall-clock patterns follow the clock: 02:00 and 02:15 come round twice.
    assert quarter == [_z("2026-10-25T01:00Z"), _z("2026-10-25T01:15Z")]


# -- DST regression cases ------------------------------------------------------------------


def _openings(window: MaintenanceWindow, since: datetime, until: datetime) -> list[datetime]:
    """Successive openings of a window whose openings never overlap, via next_start."""
    assert window.duration is not None
    found = []
    t = window.next_start(since)
    while t is not None and t < until:
        found.append(t)
        t = window.next_start(t + window.duration)
    return found


def test_paris_spring_forward_runs_the_skipped_0200_at_0300() -> None:
    window = MaintenanceWindow("nightly", "Europe/Paris", "0 2 * * *", timedelta(hours=1))
    assert _openings(window, _z("2026-03-27T12:00Z"), _z("2026-03-31T12:00Z")) == [
        _z("2026-03-28T01:00Z"),  # 02:00 CET
        _z("2026-03-29T01:00Z"),  # 02:00 does not exist: 03:00 CEST
        _z("2026-03-30T00:00Z"),  # 02:00 CEST
        _z("2026-03-31T00:00Z"),
    ]
    # One real hour long: open 01:00Z-02:00Z (03:00-04:00 CEST).
    assert window.open_interval(_z("2026-03-29T01:30Z")) == (
        _z("2026-03-29T01:00Z"),
        _z("2026-03-29T02:00Z"),
    )
    assert window.open_interval(_z("2026-03-29T00:59:59Z")) is None
    assert window.open_interval(_z("2026-03-29T02:00Z")) is None


def test_paris_fall_back_opens_once_in_the_repeated_hour() -> None:
    window = MaintenanceWindow("nightly", "Europe/Paris", "30 2 * * *", timedelta(minutes=20))
    # 02:30 local happens at 00:30Z (CEST) and again at 01:30Z (CET): the window opens once.
    assert _openings(window, _z("2026-10-24T12:00Z"), _z("2026-10-26T12:00Z")) == [
        _z("2026-10-25T00:30Z"),
        _z("2026-10-26T01:30Z"),
    ]
    assert window.open_interval(_z("2026-10-25T00:40Z")) == (
        _z("2026-10-25T00:30Z"),
        _z("2026-10-25T00:50Z"),
    )
    assert window.open_interval(_z("2026-10-25T01:35Z")) is None
    assert not window.can_start(_z("2026-10-25T01:35Z"))


@pytest.mark.parametrize(
    "now",
    [
        "2026-10-25T00:50Z",  # 02:50 CEST, just closed
        "2026-10-25T01:00Z",  # 02:00 CET: the repeated hour begins
        "2026-10-25T01:15Z",  # 02:15 CET, wall time before 02:30 again
        "2026-10-25T01:29:59Z",
        "2026-10-25T01:30Z",  # 02:30 CET: the second 02:30
        "2026-10-25T01:45Z",
    ],
)
def test_paris_repeated_hour_never_answers_a_time_in_the_past(now: str) -> None:
    # In the repeated hour the wall clock reads before 02:30 again; the answer must still
    # be the next day's opening, never the 00:30Z one already gone.
    window = MaintenanceWindow("nightly", "Europe/Paris", "30 2 * * *", timedelta(minutes=20))
    assert window.next_start(_z(now)) == _z("2026-10-26T01:30Z")
    assert window.open_interval(_z(now)) is None


def test_paris_0200_window_opens_once_on_fall_back_day() -> None:
    window = MaintenanceWindow("nightly", "Europe/Paris", "0 2 * * *", timedelta(minutes=30))
    assert _openings(window, _z("2026-10-24T12:00Z"), _z("2026-10-26T12:00Z")) == [
        _z("2026-10-25T00:00Z"),  # 02:00 CEST; not again at 01:00Z (02:00 CET)
        _z("2026-10-26T01:00Z"),
    ]
    assert window.next_start(_z("2026-10-25T01:00Z")) == _z("2026-10-26T01:00Z")


def test_new_york_spring_forward() -> None:
    # 2026-03-08: 02:00 EST becomes 03:00 EDT at 07:00Z.
    for cron in ("0 2 * * *", "30 2 * * *"):
        window = MaintenanceWindow("n", "America/New_York", cron, timedelta(minutes=20))
        minute = int(cron.split()[0])
        assert _openings(window, _z("2026-03-06T12:00Z"), _z("2026-03-09T12:00Z")) == [
            _z("2026-03-07T07:00Z") + timedelta(minutes=minute),  # EST
            _z("2026-03-08T07:00Z"),  # skipped: right after the gap, 03:00 EDT
            _z("2026-03-09T06:00Z") + timedelta(minutes=minute),  # EDT
        ], cron


def test_new_york_fall_back() -> None:
    # 2026-11-01: 02:00 EDT becomes 01:00 EST at 06:00Z; 01:30 happens twice.
    window = MaintenanceWindow("n", "America/New_York", "30 1 * * *", timedelta(minutes=20))
    assert _openings(window, _z("2026-10-31T00:00Z"), _z("2026-11-02T12:00Z")) == [
        _z("2026-10-31T05:30Z"),
        _z("2026-11-01T05:30Z"),  # 01:30 EDT only
        _z("2026-11-02T06:30Z"),
    ]
    assert window.open_interval(_z("2026-11-01T06:35Z")) is None
    assert window.next_start(_z("2026-11-01T06:10Z")) == _z("2026-11-02T06:30Z")


def test_new_york_duration_is_real_time_across_the_change() -> None:
    # Opens 01:00 EDT (05:00Z) for three real hours: closes 08:00Z = 03:00 EST.
    window = MaintenanceWindow("n", "America/New_York", "0 1 * * *", timedelta(hours=3))
    assert window.open_interval(_z("2026-11-01T07:59Z")) == (
        _z("2026-11-01T05:00Z"),
        _z("2026-11-01T08:00Z"),
    )
    assert window.can_start(_z("2026-11-01T07:00Z"), timedelta(hours=1))
    assert not window.can_start(_z("2026-11-01T07:00:01Z"), timedelta(hours=1))


def test_lord_howe_half_hour_changes() -> None:
    # April: 02:00 +11 -> 01:30 +10:30, so 01:30-02:00 repeats: "45 1" opens once.
    repeat = MaintenanceWindow("n", "Australia/Lord_Howe", "45 1 * * *", timedelta(minutes=10))
    assert _openings(repeat, _z("2026-04-03T12:00Z"), _z("2026-04-05T16:00Z")) == [
        _z("2026-04-03T14:45Z"),
        _z("2026-04-04T14:45Z"),  # 01:45 +11; not at 15:15Z (01:45 +10:30)
        _z("2026-04-05T15:15Z"),
    ]
    # October: 02:00 +10:30 -> 02:30 +11, so 02:15 does not exist: it runs at 02:30.
    gap = MaintenanceWindow("n", "Australia/Lord_Howe", "15 2 * * *", timedelta(minutes=10))
    assert _openings(gap, _z("2026-10-02T12:00Z"), _z("2026-10-04T16:00Z")) == [
        _z("2026-10-02T15:45Z"),
        _z("2026-10-03T15:30Z"),
        _z("2026-10-04T15:15Z"),
    ]


def test_chatham_spring_forward_with_a_45_minute_offset() -> None:
    # 2026-09-27: 02:45 +12:45 -> 03:45 +13:45 at 14:00Z; 03:00 does not exist.
    window = MaintenanceWindow("n", "Pacific/Chatham", "0 3 * * *", timedelta(minutes=30))
    assert _openings(window, _z("2026-09-25T00:00Z"), _z("2026-09-27T18:00Z")) == [
        _z("2026-09-25T14:15Z"),
        _z("2026-09-26T14:00Z"),
        _z("2026-09-27T13:15Z"),
    ]


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "America/Sao_Paulo", "UTC"])
def test_zones_without_dst_keep_a_fixed_utc_time(zone: str) -> None:
    window = MaintenanceWindow("n", zone, "0 2 * * *", timedelta(minutes=15))
    since = _z("2026-01-01T00:00Z")
    openings = _openings(window, since, since + timedelta(days=365))
    assert len(openings) == 365
    assert len({t.time() for t in openings}) == 1


# -- margin, ranges and merging ------------------------------------------------------------


def test_margin_nothing_starts_with_less_than_margin_left() -> None:
    window = MaintenanceWindow("n", "UTC", "0 2 * * *", timedelta(hours=1))
    margin = timedelta(minutes=15)
    assert window.can_start(_z("2026-05-01T02:45Z"), margin)
    assert not window.can_start(_z("2026-05-01T02:45:01Z"), margin)
    assert window.next_start(_z("2026-05-01T02:50Z"), margin) == _z("2026-05-02T02:00Z")
    assert window.next_start(_z("2026-05-01T01:00Z"), margin) == _z("2026-05-01T02:00Z")
    # A margin equal to the duration still allows the very start; one longer never starts.
    assert window.next_start(_z("2026-05-01T01:00Z"), timedelta(hours=1)) == _z("2026-05-01T02:00Z")
    assert window.next_start(_z("2026-05-01T01:00Z"), timedelta(hours=1, seconds=1)) is None


def test_touching_openings_form_one_period_for_the_margin() -> None:
    # Hourly for an hour: always open, and any margin is met by the openings that follow.
    window = MaintenanceWindow("n", "Europe/Paris", "0 * * * *", timedelta(hours=1))
    now = _z("2026-03-29T00:59:59Z")
    assert window.can_start(now, timedelta(hours=5))
    assert window.next_start(now, timedelta(hours=5)) == now
    interval = window.open_interval(now, until=now + timedelta(hours=5))
    assert interval is not None
    assert interval[1] >= now + timedelta(hours=5)


def test_ranges_merge_when_they_touch_or_overlap() -> None:
    paris = ZoneInfo("Europe/Paris")
    window = MaintenanceWindow(
        "freeze-lift",
        ranges=(
            (_z("2026-12-01T01:00Z"), _z("2026-12-01T01:30Z")),
            # Same instant written in Paris time: touches the first range.
            (_z("2026-12-01T01:30Z").astimezone(paris), _z("2026-12-01T02:00Z").astimezone(paris)),
            (_z("2026-12-02T01:00Z"), _z("2026-12-02T01:10Z")),
        ),
    )
    assert window.open_interval(_z("2026-12-01T01:10Z")) == (
        _z("2026-12-01T01:00Z"),
        _z("2026-12-01T02:00Z"),
    )
    assert window.next_start(_z("2026-12-01T00:00Z"), timedelta(minutes=45)) == _z(
        "2026-12-01T01:00Z"
    )
    # Too little left today and tomorrow's range is too short: never.
    assert window.next_start(_z("2026-12-01T01:20Z"), timedelta(minutes=45)) is None
    assert window.next_start(_z("2026-12-01T01:20Z"), timedelta(minutes=10)) == _z(
        "2026-12-01T01:20Z"
    )
    # Answers are in UTC whatever zone the bounds were given in.
    result = window.next_start(_z("2026-12-01T01:40Z"), timedelta(minutes=20))
    assert result == _z("2026-12-01T01:40Z")
    assert result is not None and result.tzinfo is UTC
    assert window.next_start(_z("2026-12-03T00:00Z")) is None


def test_range_bounds_in_the_repeated_hour_are_ordered_by_real_time() -> None:
    # Same-zone aware datetimes compare by wall clock and ignore ``fold``: 02:15 (second
    # time, CET) reads earlier than 02:45 (first time, CEST) but comes 30 minutes later.
    paris = ZoneInfo("Europe/Paris")
    first_0245 = datetime(2026, 10, 25, 2, 45, tzinfo=paris)  # 00:45Z
    second_0215 = datetime(2026, 10, 25, 2, 15, fold=1, tzinfo=paris)  # 01:15Z
    window = MaintenanceWindow("fold", ranges=((first_0245, second_0215),))
    assert window.open_interval(_z("2026-10-25T01:00Z")) == (
        _z("2026-10-25T00:45Z"),
        _z("2026-10-25T01:15Z"),
    )
    # Two ranges whose wall-clock order is the reverse of their real order.
    later = (
        datetime(2026, 10, 25, 2, 40, fold=1, tzinfo=paris),  # 01:40Z
        datetime(2026, 10, 25, 2, 50, fold=1, tzinfo=paris),  # 01:50Z
    )
    earlier = (
        datetime(2026, 10, 25, 2, 50, tzinfo=paris),  # 00:50Z
        datetime(2026, 10, 25, 2, 55, tzinfo=paris),  # 00:55Z
    )
    both = MaintenanceWindow("fold", ranges=(later, earlier))
    assert both.next_start(_z("2026-10-25T00:00Z")) == _z("2026-10-25T00:50Z")
    assert both.next_start(_z("2026-10-25T01:00Z")) == _z("2026-10-25T01:40Z")


def test_next_start_time_without_a_window_is_now() -> None:
    now = _z("2026-03-29T01:30Z")
    assert next_start_time(None, now) == now
    window = MaintenanceWindow("n", "UTC", "0 2 * * *", timedelta(hours=1))
    assert next_start_time(window, now) == _z("2026-03-29T02:00Z")


# -- windows that never close or never suffice must answer quickly ---------------------------


def test_a_window_that_never_closes_answers_at_once() -> None:
    # Every minute for a minute: open forever. The claim loop asks this of every due
    # operation on such devices, inside its transaction; following each opening to the
    # 400-day horizon used to take about ten seconds per question.
    window = MaintenanceWindow("always", "Europe/Paris", "* * * * *", timedelta(minutes=1))
    now = _z("2026-03-29T00:59:30Z")
    began = clock.perf_counter()
    for k in range(50):
        t = now + k * timedelta(minutes=7)
        assert window.can_start(t, timedelta(minutes=30))
        assert window.next_start(t, timedelta(minutes=30)) == t
        interval = window.open_interval(t, until=t + timedelta(hours=1))
        assert interval is not None
        assert interval[1] >= t + timedelta(hours=1)
    # Milliseconds when bounded; generous for a busy machine, far below one old call.
    assert clock.perf_counter() - began < 5.0


def test_openings_that_never_last_the_margin_give_none() -> None:
    # Thirty minutes every two hours, in Chatham: never 45 minutes, never merged.
    window = MaintenanceWindow("blips", "Pacific/Chatham", "0 */2 * * *", timedelta(minutes=30))
    assert window.next_start(_z("2026-01-01T00:00:30Z"), timedelta(minutes=45)) is None
    # 00:15Z is 14:00 at +13:45 (summer there): an even hour.
    assert window.next_start(_z("2026-01-01T00:00:30Z"), timedelta(minutes=30)) == _z(
        "2026-01-01T00:15Z"
    )


# -- invalid definitions -------------------------------------------------------------------


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "Europe/paris", "UTC ", "../etc/passwd"])
def test_unknown_time_zone(zone: str) -> None:
    with pytest.raises(WindowError, match="unknown time zone"):
        MaintenanceWindow("n", zone, "0 2 * * *", timedelta(hours=1))


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("61 * * * *", "invalid cron expression"),
        ("0 24 * * *", "invalid cron expression"),
        ("0 2 * * 8", "invalid cron expression"),
        ("0 2 30 2 *", "invalid cron expression"),  # 30 February never comes
        ("not a cron at all", "invalid cron expression"),
        ("* * *", "five fields"),
        ("0 2 * * * *", "five fields"),
        ("@daily", "five fields"),
    ],
)
def test_bad_cron(cron: str, message: str) -> None:
    with pytest.raises(WindowError, match=message):
        MaintenanceWindow("n", "UTC", cron, timedelta(hours=1))


def test_cron_and_ranges_together() -> None:
    with pytest.raises(WindowError, match="either recurring"):
        MaintenanceWindow(
            "n",
            "UTC",
            "0 2 * * *",
            timedelta(hours=1),
            ranges=((_z("2026-01-01T00:00Z"), _z("2026-01-01T01:00Z")),),
        )


@pytest.mark.parametrize("duration", [None, timedelta(0), timedelta(minutes=-5)])
def test_recurring_without_a_positive_duration(duration: timedelta | None) -> None:
    with pytest.raises(WindowError, match="positive duration"):
        MaintenanceWindow("n", "UTC", "0 2 * * *", duration)


def test_neither_cron_nor_ranges() -> None:
    with pytest.raises(WindowError, match="cron expression or at least one range"):
        MaintenanceWindow("n", "UTC")


@pytest.mark.parametrize("naive", ["start", "end", "both"])
def test_naive_range_bounds(naive: str) -> None:
    start, end = _z("2026-01-01T00:00Z"), _z("2026-01-01T01:00Z")
    if naive in ("start", "both"):
        start = start.replace(tzinfo=None)
    if naive in ("end", "both"):
        end = end.replace(tzinfo=None)
    with pytest.raises(WindowError, match="must carry a time zone"):
        MaintenanceWindow("n", ranges=((start, end),))


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2026-01-01T01:00Z", "2026-01-01T01:00Z"),
        ("2026-01-01T01:00Z", "2026-01-01T00:59Z"),
        # 02:00+01:00 is 01:00Z: ends exactly when it starts although it reads later.
        ("2026-01-01T01:00Z", "2026-01-01T02:00+01:00"),
    ],
)
def test_range_must_end_after_it_starts(start: str, end: str) -> None:
    with pytest.raises(WindowError, match="end after it starts"):
        MaintenanceWindow(
            "n", ranges=((_z("2026-01-01T00:00Z"), _z("2026-01-01T00:30Z")), (_z(start), _z(end)))
        )


def test_window_error_is_a_value_error() -> None:
    # The service layer turns it into a 400 with the message.
    assert issubclass(WindowError, ValueError)
    with pytest.raises(ValueError, match="unknown time zone"):
        MaintenanceWindow("n", "Nowhere/Land", "0 2 * * *", timedelta(hours=1))


def test_fixed_offset_bounds_are_accepted() -> None:
    # An aware bound with a fixed offset (as parsed from "+05:30") is fine.
    kolkata = timezone(timedelta(hours=5, minutes=30))
    window = MaintenanceWindow(
        "n", ranges=((datetime(2026, 1, 1, 5, 30, tzinfo=kolkata), _z("2026-01-01T01:00Z")),)
    )
    assert window.open_interval(_z("2026-01-01T00:30Z")) == (
        _z("2026-01-01T00:00Z"),
        _z("2026-01-01T01:00Z"),
    )
