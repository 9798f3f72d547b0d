"""Tiling time into a feature view's intervals."""

from __future__ import annotations

from datetime import datetime, timedelta

from engine.define.schedule import as_utc
from engine.errors import SettingsError


def tile(
    feature_start_time: datetime, schedule: timedelta, start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """The intervals `[t, t + schedule)` aligned on `feature_start_time` that overlap [start, end).

    A range that does not fall on interval boundaries is widened to whole intervals; time
    before `feature_start_time` is left out.
    """
    start, end = as_utc(start), as_utc(end)
    if start >= end:
        raise SettingsError(
            f"The start {start:%Y-%m-%d %H:%M} is not before the end {end:%Y-%m-%d %H:%M}."
        )
    first = max(start, feature_start_time)
    cursor = feature_start_time + ((first - feature_start_time) // schedule) * schedule
    intervals = []
    while cursor < end:
        intervals.append((cursor, cursor + schedule))
        cursor += schedule
    return intervals
