"""Parsing of `batch_schedule`, `ttl` and `feature_start_time` values, and stepping through time."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_UNITS = {"s": "seconds", "m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|min|h|d|w)\s*$")


def parse_duration(value: timedelta | str) -> timedelta:
    """Accept a timedelta or a string such as "1d", "6h", "30min", "1w"; raise ValueError."""
    if isinstance(value, timedelta):
        duration = value
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"'{value}' is not a duration such as timedelta(days=1), '1d' or '6h'")
        duration = timedelta(**{_UNITS[match[2]]: int(match[1])})
    if duration <= timedelta(0):
        raise ValueError(f"{value!r} is not a positive duration")
    return duration


@dataclass(frozen=True)
class Months:
    """A calendar schedule: intervals of `count` months (lengths vary, so no timedelta)."""

    count: int = 1

    def __str__(self) -> str:
        return f"{self.count} month{'s' if self.count > 1 else ''}"


Schedule = timedelta | Months
_NAMED = {"hourly": timedelta(hours=1), "daily": timedelta(days=1), "weekly": timedelta(weeks=1)}
_MONTHS = re.compile(r"^\s*(\d+)\s*(mo|month|months)\s*$")


def parse_schedule(value: timedelta | Months | str) -> Schedule:
    """A batch_schedule: a duration (see parse_duration), "hourly", "daily", "weekly",
    "monthly", or "3mo" / "3 months"; raise ValueError."""
    if isinstance(value, Months):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _NAMED:
            return _NAMED[text]
        if text == "monthly":
            return Months(1)
        if match := _MONTHS.match(text):
            if int(match[1]) < 1:
                raise ValueError(f"{value!r} is not a positive schedule")
            return Months(int(match[1]))
    return parse_duration(value)


def add_months(moment: datetime, months: int) -> datetime:
    """The same day and time `months` calendar months later (earlier when negative)."""
    index = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def boundary(origin: datetime, schedule: Schedule, index: int) -> datetime:
    """The start of interval number `index` (0 starts at `origin`); months count from origin,
    so a short month never shifts the boundaries after it."""
    if isinstance(schedule, timedelta):
        return origin + index * schedule
    return add_months(origin, index * schedule.count)


def interval_index(origin: datetime, schedule: Schedule, moment: datetime) -> int:
    """The number of the interval that contains `moment`."""
    if isinstance(schedule, timedelta):
        return (moment - origin) // schedule
    index = ((moment.year - origin.year) * 12 + moment.month - origin.month) // schedule.count
    while boundary(origin, schedule, index) > moment:
        index -= 1
    while boundary(origin, schedule, index + 1) <= moment:
        index += 1
    return index


def as_utc(moment: datetime) -> datetime:
    """Read a naive datetime as UTC; convert an aware one to UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
