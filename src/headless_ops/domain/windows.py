"""Maintenance windows: when a device may be worked on.

A window is either recurring — a cron expression giving the local start times in an IANA
time zone, each opening the window for ``duration`` of real time — or a list of one-off
UTC ranges. All arithmetic is on aware datetimes; cron times are interpreted in the
window's zone, so "02:00 every night" stays 02:00 local across daylight-saving changes
(cronsim runs a start that spring-forward skips right after the gap, and a start in the
repeated hour of fall-back once).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

__all__ = ["MaintenanceWindow", "WindowError", "next_start_time"]

#: How far ahead to look for the next opening before saying "never".
HORIZON = timedelta(days=400)


class WindowError(ValueError):
    """The window definition is invalid; ``fields`` names the definition's fields at fault
    (``timezone``, ``cron``, ``duration``, ``ranges``)."""

    def __init__(self, message: str, *fields: str) -> None:
        super().__init__(message)
        self.fields = fields


@dataclass(frozen=True)
class MaintenanceWindow:
    """A recurring (``cron`` + ``duration`` in ``timezone``) or one-off (``ranges``) window."""

    name: str
    timezone: str = "UTC"
    cron: str | None = None
    duration: timedelta | None = None
    ranges: tuple[tuple[datetime, datetime], ...] = field(default=())

    def __post_init__(self) -> None:
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise WindowError(f"unknown time zone {self.timezone!r}", "timezone") from None
        object.__setattr__(self, "_zone", zone)
        if self.cron is not None:
            if self.ranges:
                raise WindowError(
                    "a window is either recurring (cron) or a list of ranges", "cron", "ranges"
                )
            if self.duration is None or self.duration <= timedelta(0):
                raise WindowError("a recurring window needs a positive duration", "duration")
            if len(self.cron.split()) != 5:
                raise WindowError(
                    "cron must have five fields: minute hour day month weekday", "cron"
                )
            try:
                CronSim(self.cron, datetime(2000, 1, 1, tzinfo=zone))
            except CronSimError as exc:
                raise WindowError(f"invalid cron expression: {exc}", "cron") from None
        elif not self.ranges:
            raise WindowError(
                "a window needs a cron expression or at least one range", "cron", "ranges"
            )
        for start, end in self.ranges:
            if start.tzinfo is None or end.tzinfo is None:
                raise WindowError("range bounds must carry a time zone", "ranges")
        # Kept in UTC: two bounds in one zone compare by wall clock, ignoring ``fold``, so
        # 01:30 (second time) would sort before 01:45 (first time) on a fall-back night.
        utc = tuple((start.astimezone(UTC), end.astimezone(UTC)) for start, end in self.ranges)
        object.__setattr__(self, "ranges", utc)
        for start, end in utc:
            if end <= start:
                raise WindowError("a range must end after it starts", "ranges")

    @property
    def zone(self) -> ZoneInfo:
        """The window's time zone."""
        zone: ZoneInfo = object.__getattribute__(self, "_zone")
        return zone

    def _starts_from(self, moment: datetime) -> Iterator[datetime]:
        """Openings strictly after ``moment``, in UTC."""
        assert self.cron is not None
        moment = moment.astimezone(UTC)
        for start in CronSim(self.cron, moment.astimezone(self.zone)):
            start_utc = start.astimezone(UTC)
            # In the repeated hour of a fall-back, cronsim counts from the wall clock and
            # yields that day's first occurrence again, which is already past.
            if start_utc > moment:
                yield start_utc

    def open_interval(
        self, now: datetime, until: datetime | None = None
    ) -> tuple[datetime, datetime] | None:
        """The open interval ``[start, end)`` containing ``now``, merged with any overlapping
        later openings; ``None`` when closed.

        With ``until``, merging stops once ``end >= until``: a window that never closes
        ("* * * * *" for a minute) would otherwise be followed opening by opening for the
        whole ``HORIZON`` on every call."""
        now = now.astimezone(UTC)
        if self.cron is None:
            for start, end in sorted(self.ranges):
                if start <= now < end:
                    return start.astimezone(UTC), self._extend_ranges(end.astimezone(UTC))
            return None
        assert self.duration is not None
        # Starts after (now - duration) and not after now are the openings covering now.
        # CronSim yields times strictly after its argument.
        covering = None
        for start in self._starts_from(now - self.duration):
            start_utc = start.astimezone(UTC)
            if start_utc > now:
                break
            covering = start_utc
            break
        if covering is None:
            return None
        end = covering + self.duration
        # Merge following openings that begin before this one ends.
        for start in self._starts_from(covering):
            if until is not None and end >= until:
                break
            start_utc = start.astimezone(UTC)
            if start_utc > end or start_utc - covering > HORIZON:
                break
            end = max(end, start_utc + self.duration)
        return covering, end

    def _extend_ranges(self, end: datetime) -> datetime:
        changed = True
        while changed:
            changed = False
            for start, stop in self.ranges:
                if start.astimezone(UTC) <= end < stop.astimezone(UTC):
                    end = stop.astimezone(UTC)
                    changed = True
        return end

    def can_start(self, now: datetime, margin: timedelta = timedelta(0)) -> bool:
        """Whether an operation may start at ``now``: open, with at least ``margin`` left."""
        interval = self.open_interval(now, until=now + margin)
        return interval is not None and interval[1] - now.astimezone(UTC) >= margin

    def next_start(self, now: datetime, margin: timedelta = timedelta(0)) -> datetime | None:
        """The earliest time ``>= now`` at which an operation may start; ``None`` if never
        (within ``HORIZON``)."""
        now = now.astimezone(UTC)
        if self.can_start(now, margin):
            return now
        if self.cron is None:
            for start, end in sorted(self.ranges):
                start_utc, end_utc = start.astimezone(UTC), self._extend_ranges(end.astimezone(UTC))
                if start_utc > now and end_utc - start_utc >= margin:
                    return start_utc
            return None
        # One pass over the openings, merging those that overlap or touch: the first
        # opening whose merged period lasts ``margin`` is the answer (rather than asking
        # can_start of each opening, which re-derives its period every time). The period
        # open now is already too short; openings before its end only extend it.
        assert self.duration is not None
        current = self.open_interval(now, until=now + margin)
        begin: datetime | None = None
        period_end = current[1] if current is not None else None
        for start_utc in self._starts_from(now):
            if start_utc - now > HORIZON:
                return None
            if period_end is not None and start_utc <= period_end:
                period_end = max(period_end, start_utc + self.duration)
            else:
                begin, period_end = start_utc, start_utc + self.duration
            if begin is not None and period_end - begin >= margin:
                return begin
        return None  # pragma: no cover - CronSim iterates forever


def next_start_time(
    window: MaintenanceWindow | None, now: datetime, margin: timedelta = timedelta(0)
) -> datetime | None:
    """``now`` without a window; otherwise the window's next start (``None``: never)."""
    if window is None:
        return now
    return window.next_start(now, margin)
