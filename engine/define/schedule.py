"""Parsing of `batch_schedule`, `ttl` and `feature_start_time` values."""

from __future__ import annotations

import re
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


def as_utc(moment: datetime) -> datetime:
    """Read a naive datetime as UTC; convert an aware one to UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
