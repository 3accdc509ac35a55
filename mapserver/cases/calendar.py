"""The work calendar case deadlines are counted on: working periods, working days, 调休.

Semantics (pure, no I/O; every result is an aware datetime in the calendar's time zone):

- A *working day* is decided in this order: local working days, local holidays, the
  statutory 调休 working days, the statutory holidays, and last the weekday rule (Mon–Fri).
  Local overrides therefore win over the statutory calendar, which wins over the weekday.
- *Working time* is the wall-clock time inside the working periods (half-open, e.g.
  [08:30, 12:00) and [13:30, 17:30)) of working days.
- ``add(start, n, "working_hours")`` is the earliest moment at which n hours of working time
  have passed since ``start``. A start outside working time therefore counts from the next
  working moment, and a deadline that uses up a period exactly is that period's end
  (17:30, never the next morning's 08:30), so the same day's evening is already overdue.
- ``add(start, n, "working_days")`` is the same point of the working day n working days
  later. Every working day has the same periods, so that is ``n`` times the working day's
  length of working time (7.5 h with the default hours): Mon 10:00 + 1 day = Tue 10:00,
  Mon 08:30 + 1 day = Mon 17:30, Fri 18:00 + 1 day = the next working day's 17:30.
- ``working_time_between(a, b)`` is signed: negative when ``b`` is before ``a``.
- ``remaining(deadline, now)`` is the signed working time from now to the deadline
  (negative: that much working time overdue); ``overdue(deadline, at)`` compares instants,
  so finishing exactly at the deadline is on time and any later instant is not.
- Years the statutory source does not cover fall back to the weekday rule plus local
  overrides (``covers`` tells); list a new year's dates in the local overrides until the
  package knows them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import cache
from typing import TYPE_CHECKING, Literal, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from mapserver.settings import Settings

Unit = Literal["working_hours", "working_days"]
UNITS: tuple[Unit, ...] = ("working_hours", "working_days")
DEFAULT_WORK_HOURS = "08:30-12:00,13:30-17:30"
DEFAULT_TIMEZONE = "Asia/Shanghai"
# A deadline search that passes this many calendar days has met a misconfigured calendar.
_MAX_SCAN_DAYS = 3660


class Period(NamedTuple):
    """One working period of a day, half-open: [start, end)."""

    start: time
    end: time

    @property
    def length(self) -> timedelta:
        return datetime.combine(date.min, self.end) - datetime.combine(date.min, self.start)


class Statutory(NamedTuple):
    """A country's official calendar: holidays, 调休 working days and the years it knows."""

    holidays: frozenset[date]
    workdays: frozenset[date]
    years: tuple[int, int] | None


NO_STATUTORY = Statutory(frozenset(), frozenset(), None)


class StageTiming(NamedTuple):
    """One stage's clock: when it is due, what is left, and whether it is (was) on time."""

    deadline: datetime
    remaining: timedelta
    overdue: bool
    on_time: bool | None  # None while the stage is still open


@cache
def china_statutory() -> Statutory:
    """The State Council's holidays and 调休 working days, from `chinese-calendar`."""
    import chinese_calendar

    holidays = frozenset(chinese_calendar.holidays)
    workdays = frozenset(chinese_calendar.workdays)
    known = holidays | workdays
    years = (min(known).year, max(known).year) if known else None
    return Statutory(holidays, workdays, years)


STATUTORY_SOURCES: dict[str, Callable[[], Statutory]] = {
    "cn": china_statutory,
    "none": lambda: NO_STATUTORY,
}


def parse_work_hours(text: str) -> tuple[Period, ...]:
    """'08:30-12:00,13:30-17:30' → sorted, non-overlapping periods; ValueError says why."""
    periods = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        begin, sep, end = part.partition("-")
        if not sep:
            raise ValueError(f"{part!r} is not HH:MM-HH:MM")
        try:
            period = Period(_clock(begin), _clock(end))
        except ValueError:
            raise ValueError(f"{part!r} is not HH:MM-HH:MM") from None
        if period.end <= period.start:
            raise ValueError(f"{part!r} ends before it starts")
        periods.append(period)
    if not periods:
        raise ValueError("needs at least one period HH:MM-HH:MM")
    periods.sort()
    for before, after in zip(periods, periods[1:], strict=False):
        if after.start < before.end:
            raise ValueError(
                f"periods {before.start:%H:%M}-{before.end:%H:%M} and "
                f"{after.start:%H:%M}-{after.end:%H:%M} overlap"
            )
    return tuple(periods)


def _clock(text: str) -> time:
    hour, sep, minute = text.strip().partition(":")
    if not (
        sep
        and (hour + minute).isascii()
        and hour.isdigit()
        and minute.isdigit()
        and len(minute) == 2
    ):
        raise ValueError(text)
    return time(int(hour), int(minute))


def parse_dates(text: str) -> frozenset[date]:
    """'2026-10-09,2026-10-12' → dates; ValueError names the first that is not an ISO date."""
    days = set()
    for part in (p.strip() for p in text.split(",")):
        if part:
            try:
                days.add(date.fromisoformat(part))
            except ValueError:
                raise ValueError(f"{part!r} is not an ISO date (YYYY-MM-DD)") from None
    return frozenset(days)


def parse_timezone(name: str) -> ZoneInfo:
    """An IANA zone name → ZoneInfo; ValueError when the zone is unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone") from None


@dataclass(frozen=True)
class WorkCalendar:
    """Working periods and working days in one time zone; immutable, no I/O."""

    periods: tuple[Period, ...] = parse_work_hours(DEFAULT_WORK_HOURS)
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo(DEFAULT_TIMEZONE))
    statutory: Statutory = field(default=NO_STATUTORY, repr=False)  # thousands of dates
    local_holidays: frozenset[date] = frozenset()
    local_workdays: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        if not self.periods or tuple(sorted(self.periods)) != self.periods:
            raise ValueError("periods must be a non-empty sorted tuple")
        both = self.local_holidays & self.local_workdays
        if both:
            raise ValueError(f"dates both holiday and working day: {sorted(both)}")

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkCalendar:
        """The install's calendar: its hours, zone, statutory source and local overrides."""
        return cls(
            periods=parse_work_hours(settings.work_hours),
            tz=parse_timezone(settings.work_timezone),
            statutory=STATUTORY_SOURCES[settings.calendar_statutory](),
            local_holidays=parse_dates(settings.calendar_holidays),
            local_workdays=parse_dates(settings.calendar_workdays),
        )

    @property
    def day_length(self) -> timedelta:
        """Working time in one working day: what one working day of a limit is worth."""
        return sum((p.length for p in self.periods), timedelta())

    def covers(self, day: date) -> bool:
        """Whether the statutory source knows `day`'s year (else the weekday rule decides)."""
        years = self.statutory.years
        return years is not None and years[0] <= day.year <= years[1]

    def is_working_day(self, day: date) -> bool:
        """Local overrides, then statutory 调休 and holidays, then Mon–Fri."""
        if isinstance(day, datetime):
            day = self._local(day).date()
        if day in self.local_workdays:
            return True
        if day in self.local_holidays:
            return False
        if day in self.statutory.workdays:
            return True
        if day in self.statutory.holidays:
            return False
        return day.weekday() < 5

    def is_working_moment(self, at: datetime) -> bool:
        """Whether `at` lies inside a working period of a working day."""
        local = self._local(at)
        clock = local.time().replace(tzinfo=None)
        return self.is_working_day(local.date()) and any(
            p.start <= clock < p.end for p in self.periods
        )

    def add(self, start: datetime, amount: float, unit: Unit) -> datetime:
        """The deadline `amount` working hours or days after `start` (see module doc)."""
        if unit == "working_hours":
            return self.add_working_time(start, timedelta(hours=amount))
        if unit == "working_days":
            return self.add_working_time(start, amount * self.day_length)
        raise ValueError(f"unit must be one of {', '.join(UNITS)}, not {unit!r}")

    def add_working_time(self, start: datetime, duration: timedelta) -> datetime:
        """The earliest moment at which `duration` of working time has passed since `start`."""
        if duration < timedelta():
            raise ValueError("a time limit cannot be negative")
        cursor = self._local(start)
        if not duration:
            return cursor
        left = duration
        for day in self._days_from(cursor.date()):
            for begin, end in self._spans(day):
                if end <= cursor:
                    continue
                begin = max(begin, cursor)
                if left <= end - begin:
                    return begin + left
                left -= end - begin
        raise ValueError("a time limit may not reach more than ten years ahead")

    def working_time_between(self, a: datetime, b: datetime) -> timedelta:
        """Working time from `a` to `b`; negative when `b` is before `a`."""
        a, b = self._local(a), self._local(b)
        if b < a:
            return -self.working_time_between(b, a)
        total = timedelta()
        day = a.date()
        while day <= b.date():
            for begin, end in self._spans(day):
                overlap = min(end, b) - max(begin, a)
                if overlap > timedelta():
                    total += overlap
            day += timedelta(days=1)
        return total

    def remaining(self, deadline: datetime, now: datetime) -> timedelta:
        """Working time left until `deadline`; negative once it has passed."""
        return self.working_time_between(now, deadline)

    def overdue(self, deadline: datetime, at: datetime) -> bool:
        """Whether `at` is past the deadline; finishing exactly at the deadline is on time."""
        return self._local(at) > self._local(deadline)

    def timing(
        self,
        started: datetime,
        amount: float,
        unit: Unit,
        now: datetime,
        finished: datetime | None = None,
    ) -> StageTiming:
        """One stage's deadline and status; on-time is decided by when it finished."""
        deadline = self.add(started, amount, unit)
        until = now if finished is None else finished
        on_time = None if finished is None else not self.overdue(deadline, finished)
        return StageTiming(
            deadline=deadline,
            remaining=self.remaining(deadline, until),
            overdue=self.overdue(deadline, until),
            on_time=on_time,
        )

    def _local(self, at: datetime) -> datetime:
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError("work calendar times must be timezone-aware")
        return at.astimezone(self.tz)

    def _spans(self, day: date) -> Iterable[tuple[datetime, datetime]]:
        if not self.is_working_day(day):
            return ()
        return [
            (
                datetime.combine(day, p.start, tzinfo=self.tz),
                datetime.combine(day, p.end, tzinfo=self.tz),
            )
            for p in self.periods
        ]

    def _days_from(self, first: date) -> Iterable[date]:
        for offset in range(_MAX_SCAN_DAYS):
            yield first + timedelta(days=offset)
