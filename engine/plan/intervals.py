"""Tiling time into a feature view's intervals."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from engine.define.feature_views import BatchFeatureView
from engine.define.schedule import Schedule, as_utc, boundary, interval_index
from engine.errors import SettingsError
from engine.store.tiles import lookback

Interval = tuple[datetime, datetime]
Windows = dict[str, list[Interval]]  # each feature view's intervals, by name
MOST_INTERVALS = 100_000  # per view and run: a century of hours, 270 years of days


def tile(
    feature_start_time: datetime, schedule: Schedule, start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """The intervals aligned on `feature_start_time` that overlap [start, end).

    A range that does not fall on interval boundaries is widened to whole intervals; time
    before `feature_start_time` is left out.
    """
    start, end = as_utc(start), as_utc(end)
    if start >= end:
        raise SettingsError(
            f"The start {start:%Y-%m-%d %H:%M} is not before the end {end:%Y-%m-%d %H:%M}."
        )
    index = interval_index(feature_start_time, schedule, max(start, feature_start_time))
    count = interval_index(feature_start_time, schedule, end) + 1 - index
    if count > MOST_INTERVALS:
        raise SettingsError(
            f"The range [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}) holds about {count:,} "
            f"intervals of {schedule}; a run plans at most {MOST_INTERVALS:,} per feature view. "
            f"Narrow the range, or run it in parts."
        )
    intervals = []
    while (lower := boundary(feature_start_time, schedule, index)) < end:
        index += 1
        intervals.append((lower, boundary(feature_start_time, schedule, index)))
    return intervals


def split_due(
    intervals: list[Interval], data_delay: timedelta, now: datetime
) -> tuple[list[Interval], list[Interval]]:
    """The intervals whose data is complete at `now` (they ended `data_delay` or more ago),
    and those still waiting: an interval is computed only once, so never before it is due."""
    cutoff = as_utc(now) - data_delay
    return [i for i in intervals if i[1] <= cutoff], [i for i in intervals if i[1] > cutoff]


def not_due_note(view: str, data_delay: timedelta, waiting: list[Interval]) -> str:
    """Why a run left out intervals that have not ended (or whose data delay has not passed)."""
    delay = f" plus its source's data_delay of {data_delay}" if data_delay else ""
    return (
        f"Feature view '{view}': {len(waiting)} interval(s) from "
        f"{waiting[0][0]:%Y-%m-%d %H:%M} are not due yet (an interval is due once it has "
        f"ended{delay}) and were left out; a later run computes them."
    )


def complete_before(
    feature_start_time: datetime, schedule: Schedule, start: datetime, until: datetime
) -> list[tuple[datetime, datetime]]:
    """The intervals from `start` whose end is at or before `until` (none still open)."""
    if as_utc(until) <= as_utc(start):
        return []
    return [i for i in tile(feature_start_time, schedule, start, until) if i[1] <= as_utc(until)]


def range_notes(
    view: str,
    feature_start_time: datetime,
    start: datetime,
    end: datetime,
    intervals: list[tuple[datetime, datetime]],
) -> list[str]:
    """What planning changed about a requested range: clipped, or widened to whole intervals."""
    start, end = as_utc(start), as_utc(end)
    notes = []
    if start < feature_start_time:
        notes.append(
            f"Feature view '{view}' starts at {feature_start_time:%Y-%m-%d %H:%M}; the time "
            f"before it is left out."
        )
    if intervals and (intervals[0][0] < max(start, feature_start_time) or intervals[-1][1] > end):
        notes.append(
            f"Feature view '{view}': the range was widened to whole intervals, "
            f"[{intervals[0][0]:%Y-%m-%d %H:%M}, {intervals[-1][1]:%Y-%m-%d %H:%M})."
        )
    return notes


def _reach_back(view: BatchFeatureView, start: datetime) -> datetime:
    """Where the intervals whose tiles feed an aggregate view's windows at `start` begin (not
    before feature_start_time); `start` for other views."""
    if not view.aggregates:
        return start
    reach = lookback(view)
    return view.feature_start_time if reach is None else max(start - reach, view.feature_start_time)


def due_windows(
    views: Sequence[BatchFeatureView], start: datetime, end: datetime, now: datetime | None
) -> tuple[Windows, list[str]]:
    """Each view's intervals over [start, end) that are due at `now` (default: the clock),
    and notes on clipping, widening and intervals not due yet. An aggregate view's range
    starts as far back as its longest window reaches, so its windows at `start` are whole."""
    now = as_utc(now or datetime.now(UTC))
    windows, notes = {}, []
    for view in views:
        first = min(_reach_back(view, as_utc(start)), as_utc(start))
        if first < as_utc(start):
            notes.append(
                f"Feature view '{view.name}': its windows reach back to "
                f"{first:%Y-%m-%d %H:%M}, so the intervals from there on are computed too."
            )
        tiled = tile(view.feature_start_time, view.batch_schedule, first, end)
        notes += range_notes(view.name, view.feature_start_time, first, end, tiled)
        windows[view.name], waiting = split_due(tiled, view.data_delay, now)
        if waiting:
            notes.append(not_due_note(view.name, view.data_delay, waiting))
    return windows, notes
