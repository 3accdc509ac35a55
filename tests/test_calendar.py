"""Work calendar: deadlines worked out by hand on the real 2026 schedule, overrides, settings."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapserver import days
from mapserver.cases.calendar import (
    NO_STATUTORY,
    WorkCalendar,
    china_statutory,
    parse_work_hours,
)
from mapserver.settings import Settings, SettingsError, load

SH = ZoneInfo("Asia/Shanghai")
H = timedelta(hours=1)
# Default hours 08:30–12:00 (3.5 h) and 13:30–17:30 (4 h): a working day is 7.5 h.
CAL = WorkCalendar(statutory=china_statutory())


def at(text: str) -> datetime:
    """A Beijing wall-clock moment, 'YYYY-MM-DD HH:MM'."""
    return datetime.fromisoformat(text).replace(tzinfo=SH)


def test_package_has_the_2026_national_day_schedule() -> None:
    # 国办发明电〔2025〕7号: Oct 1–7 off; Sun Sep 20 and Sat Oct 10 are 调休 working days;
    # Mid-Autumn Fri Sep 25 – Sun Sep 27 off.
    off = [date(2026, 10, d) for d in range(1, 8)] + [date(2026, 9, 25)]
    assert not any(CAL.is_working_day(d) for d in off)
    assert CAL.is_working_day(date(2026, 9, 20))  # Sunday, 调休
    assert CAL.is_working_day(date(2026, 10, 10))  # Saturday, 调休
    assert CAL.is_working_day(date(2026, 10, 8))  # Thursday after the holiday
    assert not CAL.is_working_day(date(2026, 10, 11))  # an ordinary Sunday
    assert CAL.covers(date(2026, 12, 31))


def test_hours_across_the_national_day_week() -> None:
    # Wed Sep 30 16:00–17:30 is 1.5 h; Oct 1–7 off; Thu Oct 8 08:30 + 0.5 h.
    deadline = CAL.add(at("2026-09-30 16:00"), 2, "working_hours")
    assert deadline == at("2026-10-08 09:00")
    assert CAL.working_time_between(at("2026-09-30 16:00"), deadline) == 2 * H
    assert CAL.working_time_between(deadline, at("2026-09-30 16:00")) == -2 * H


def test_days_across_the_national_day_week_and_the_tiaoxiu_saturday() -> None:
    start = at("2026-09-29 10:00")  # Tuesday
    assert CAL.add(start, 1, "working_days") == at("2026-09-30 10:00")
    assert CAL.add(start, 2, "working_days") == at("2026-10-08 10:00")
    assert CAL.add(start, 3, "working_days") == at("2026-10-09 10:00")
    assert CAL.add(start, 4, "working_days") == at("2026-10-10 10:00")  # 调休 Saturday
    assert CAL.add(start, 5, "working_days") == at("2026-10-12 10:00")  # Sunday skipped


def test_a_tiaoxiu_saturday_counts_hours() -> None:
    # Fri Oct 9 15:00–17:30 = 2.5 h; Sat Oct 10 08:30–12:00 = 3.5 h; 13:30 + 1.5 h = 15:00.
    assert CAL.add(at("2026-10-09 15:00"), 1, "working_days") == at("2026-10-10 15:00")
    # 7 h: 2.5 h + 3.5 h, then 13:30 + 1 h.
    assert CAL.add(at("2026-10-09 15:00"), 7, "working_hours") == at("2026-10-10 14:30")
    # Without the statutory calendar the same Saturday is a weekend: Monday instead.
    plain = WorkCalendar(statutory=NO_STATUTORY)
    assert plain.add(at("2026-10-09 15:00"), 1, "working_days") == at("2026-10-12 15:00")


def test_a_tiaoxiu_sunday_and_a_start_on_the_weekend_before_it() -> None:
    # Sat Sep 19 is off, Sun Sep 20 works: 08:30 + 3 h.
    assert CAL.add(at("2026-09-19 10:00"), 3, "working_hours") == at("2026-09-20 11:30")


def test_mid_autumn_long_weekend_in_days() -> None:
    # Thu Sep 24 14:00; Fri–Sun Sep 25–27 off; Mon Sep 28 is the first working day after.
    assert CAL.add(at("2026-09-24 14:00"), 2, "working_days") == at("2026-09-29 14:00")


def test_lunch_break_is_not_working_time() -> None:
    # Mon Jun 1: 11:00–12:00 = 1 h, then 13:30 + 1 h.
    assert CAL.add(at("2026-06-01 11:00"), 2, "working_hours") == at("2026-06-01 14:30")
    # A start in the lunch break counts from 13:30.
    assert CAL.add(at("2026-06-01 12:15"), 1, "working_hours") == at("2026-06-01 14:30")
    assert CAL.working_time_between(at("2026-06-01 11:30"), at("2026-06-01 14:00")) == H
    assert not CAL.is_working_moment(at("2026-06-01 12:00"))
    assert CAL.is_working_moment(at("2026-06-01 13:30"))


def test_a_limit_that_uses_up_a_period_ends_at_its_end() -> None:
    assert CAL.add(at("2026-06-01 16:30"), 1, "working_hours") == at("2026-06-01 17:30")
    assert CAL.add(at("2026-06-01 08:30"), 1, "working_days") == at("2026-06-01 17:30")
    assert CAL.add(at("2026-06-01 11:00"), 1, "working_hours") == at("2026-06-01 12:00")


def test_starts_at_night_and_on_a_weekend() -> None:
    assert CAL.add(at("2026-06-02 22:00"), 1, "working_hours") == at("2026-06-03 09:30")
    assert CAL.add(at("2026-06-03 06:00"), 1, "working_hours") == at("2026-06-03 09:30")
    # Sat Jun 6 → Mon Jun 8: 08:30–12:00 = 3.5 h, then 13:30 + 0.5 h.
    assert CAL.add(at("2026-06-06 10:00"), 4, "working_hours") == at("2026-06-08 14:00")
    # Filed Friday evening, one working day: all of Monday.
    assert CAL.add(at("2026-06-05 18:00"), 1, "working_days") == at("2026-06-08 17:30")


def test_working_days_are_whole_days_of_working_time() -> None:
    start = at("2026-06-01 10:00")
    assert CAL.day_length == timedelta(hours=7, minutes=30)
    assert CAL.add(start, 5, "working_days") == at("2026-06-08 10:00")
    # Dragon Boat Festival: Fri Jun 19 – Sun Jun 21 off.
    assert CAL.add(at("2026-06-18 10:00"), 1, "working_days") == at("2026-06-22 10:00")
    # 8 working hours is more than one 7.5 h working day.
    assert CAL.add(start, 8, "working_hours") == at("2026-06-02 10:30")
    assert CAL.add(start, 0, "working_hours") == start


def test_local_overrides_win_over_package_and_weekday() -> None:
    local = WorkCalendar(
        statutory=china_statutory(),
        local_holidays=frozenset({date(2026, 6, 8)}),  # a Monday off
        local_workdays=frozenset({date(2026, 6, 7), date(2026, 10, 2)}),  # Sunday, holiday
    )
    assert local.is_working_day(date(2026, 6, 7)) and not local.is_working_day(date(2026, 6, 8))
    assert local.is_working_day(date(2026, 10, 2))
    # Fri Jun 5 17:00–17:30 = 0.5 h, then Sunday Jun 7 08:30 + 0.5 h.
    assert local.add(at("2026-06-05 17:00"), 1, "working_hours") == at("2026-06-07 09:00")
    # Sep 30 16:00: 1.5 h, then the local working day Oct 2 08:30 + 0.5 h.
    assert local.add(at("2026-09-30 16:00"), 2, "working_hours") == at("2026-10-02 09:00")
    with pytest.raises(ValueError, match="both"):
        WorkCalendar(
            local_holidays=frozenset({date(2026, 6, 8)}),
            local_workdays=frozenset({date(2026, 6, 8)}),
        )


def test_years_the_package_does_not_know_fall_back_to_weekdays() -> None:
    assert not CAL.covers(date(2100, 1, 4))
    assert CAL.is_working_day(date(2100, 1, 4))  # a Monday
    assert not CAL.is_working_day(date(2100, 1, 2))  # a Saturday


def test_remaining_overdue_and_stage_timing() -> None:
    deadline = at("2026-10-08 09:00")
    assert CAL.remaining(deadline, at("2026-09-30 17:00")) == H  # 0.5 h + 0.5 h
    assert CAL.remaining(deadline, at("2026-10-03 12:00")) == H / 2
    assert CAL.remaining(deadline, at("2026-10-08 10:00")) == -H
    assert not CAL.overdue(deadline, deadline)
    assert CAL.overdue(deadline, deadline + timedelta(minutes=1))
    # Past 17:30 no working time is left, and the deadline of 17:30 has passed.
    due = at("2026-06-01 17:30")
    assert CAL.remaining(due, at("2026-06-01 20:00")) == timedelta()
    assert CAL.overdue(due, at("2026-06-01 20:00"))

    open_stage = CAL.timing(at("2026-09-30 16:00"), 2, "working_hours", now=at("2026-10-05 09:00"))
    assert open_stage == (deadline, H / 2, False, None)
    late = CAL.timing(
        at("2026-09-30 16:00"),
        2,
        "working_hours",
        now=at("2026-10-09 09:00"),
        finished=at("2026-10-08 09:30"),
    )
    assert late.overdue and late.on_time is False and late.remaining == -H / 2
    on_time = CAL.timing(
        at("2026-09-30 16:00"),
        2,
        "working_hours",
        now=at("2026-10-09 09:00"),
        finished=deadline,
    )
    assert on_time.on_time is True and not on_time.overdue


def test_times_in_other_zones_and_naive_times() -> None:
    utc_start = datetime(2026, 6, 1, 2, 0, tzinfo=UTC)  # 10:00 in Beijing
    deadline = CAL.add(utc_start, 1, "working_hours")
    assert deadline == at("2026-06-01 11:00") and deadline.tzinfo == SH
    with pytest.raises(ValueError, match="timezone-aware"):
        CAL.add(datetime(2026, 6, 1, 10, 0), 1, "working_hours")
    with pytest.raises(ValueError, match="unit"):
        CAL.add(at("2026-06-01 10:00"), 1, "working_weeks")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        CAL.add(at("2026-06-01 10:00"), -1, "working_hours")
    with pytest.raises(ValueError, match="ten years"):
        CAL.add(at("2026-06-01 10:00"), 3000, "working_days")


def test_other_working_hours() -> None:
    summer = WorkCalendar(periods=parse_work_hours("15:00-18:00, 08:00-12:00"))
    assert summer.day_length == 7 * H
    assert summer.add(at("2026-06-01 11:00"), 2, "working_hours") == at("2026-06-01 16:00")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "at least one"),
        ("08:30-12:00,11:00-13:00", "overlap"),
        ("12:00-08:30", "ends before"),
        ("8.30-12", "HH:MM"),
        ("08:30-25:00", "HH:MM"),
    ],
)
def test_bad_working_hours_are_refused(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_work_hours(text)


def test_from_settings_and_settings_named_by_key() -> None:
    cal = WorkCalendar.from_settings(
        load(
            environ={
                "CITYGRID_CALENDAR_WORKDAYS": "2026-06-07",
                "CITYGRID_WORK_HOURS": "09:00-17:00",
            }
        )
    )
    assert cal.is_working_day(date(2026, 6, 7)) and cal.day_length == 8 * H
    assert not cal.is_working_day(date(2026, 10, 1))
    assert not WorkCalendar.from_settings(Settings(calendar_statutory="none")).covers(
        date(2026, 10, 1)
    )
    bad = {
        "CITYGRID_WORK_HOURS": "08:30-12:00,11:00-13:00",
        "CITYGRID_WORK_TIMEZONE": "Mars/Olympus",
        "CITYGRID_CALENDAR_HOLIDAYS": "2026-13-01",
        "CITYGRID_CALENDAR_STATUTORY": "jp",
    }
    with pytest.raises(SettingsError) as caught:
        load(environ=bad)
    assert sorted(p.split(":")[0] for p in caught.value.problems) == sorted(bad)
    with pytest.raises(SettingsError) as caught:
        load(
            environ={
                "CITYGRID_CALENDAR_HOLIDAYS": "2026-06-08",
                "CITYGRID_CALENDAR_WORKDAYS": "2026-06-08",
            }
        )
    assert caught.value.problems == [
        "CITYGRID_CALENDAR_WORKDAYS: also listed as holidays: 2026-06-08"
    ]


moments = st.datetimes(min_value=datetime(2025, 12, 20), max_value=datetime(2026, 12, 20)).map(
    lambda d: d.replace(second=0, microsecond=0, tzinfo=SH)
)
durations = st.integers(min_value=0, max_value=60 * 7 * 30).map(lambda m: timedelta(minutes=m))


@settings(max_examples=150, deadline=None)
@given(moments, durations)
def test_adding_then_measuring_gives_the_limit_back(start: datetime, limit: timedelta) -> None:
    deadline = CAL.add_working_time(start, limit)
    assert deadline >= start
    assert CAL.working_time_between(start, deadline) == limit
    if limit:
        # Earliest moment: a minute earlier the limit was not yet used up.
        assert CAL.working_time_between(start, deadline - timedelta(minutes=1)) < limit


@settings(max_examples=100, deadline=None)
@given(moments, moments, moments)
def test_working_time_is_additive_and_signed(a: datetime, b: datetime, c: datetime) -> None:
    ab, bc = CAL.working_time_between(a, b), CAL.working_time_between(b, c)
    assert ab + bc == CAL.working_time_between(a, c)
    assert CAL.working_time_between(b, a) == -ab


@settings(max_examples=100, deadline=None)
@given(moments, st.integers(min_value=0, max_value=20))
def test_days_are_day_lengths_of_hours(start: datetime, days: int) -> None:
    assert CAL.add(start, days, "working_days") == CAL.add_working_time(
        start, days * CAL.day_length
    )


@pytest.mark.parametrize(
    "text", ["20261010", "2026-W41-6", "2026-10-1", " 2026-10-10", "2026-02-30"]
)
def test_a_day_is_written_yyyy_mm_dd_only(text: str) -> None:
    with pytest.raises(ValueError):
        days.day(text)
    assert days.day("2026-10-10") == date(2026, 10, 10)
