"""Time-window aggregations, as Tecton declares them: `Aggregate(input_column=Field(...),
function=..., time_window=...)` features of a view with an `aggregation_interval`.

For a moment t, a window w covers the rows with timestamps in [e - w, e), e the end of the
last aggregation interval ended at or before t (intervals tile time from the Unix epoch).
`TimeWindow(window_size, offset)` shifts that range by `offset` (zero or negative);
`LifetimeWindow()` covers every row before e.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from engine.define.fields import Field
from engine.define.types import Array, DataType, Float32, Float64, Int32, Int64
from engine.errors import DefinitionError

NUMBERS = (Int32, Int64, Float32, Float64)


@dataclass(frozen=True)
class AggregationFunction:
    """A function and its parameter: `approx_percentile(0.5)`, `last_distinct(10)`."""

    name: str
    n: int | None = None
    percentile: float | None = None
    precision: int | None = None

    @property
    def label(self) -> str:
        """Its part of a feature's name: `count`, `last_distinct_10`, `approx_percentile_p50`."""
        if self.n is not None:
            return f"{self.name}_{self.n}"
        if self.percentile is not None:
            return f"{self.name}_p{self.percentile * 100:g}".replace(".", "_")
        return self.name


SPREADS = ("stddev_samp", "stddev_pop", "var_samp", "var_pop")
SIMPLE = ("count", "sum", "mean", "min", "max", "first", "last", *SPREADS, "approx_count_distinct")
NUMERIC = ("sum", "mean", "approx_percentile", *SPREADS)  # need a number column


def first(n: int) -> AggregationFunction:
    """The first `n` values in the window, oldest first."""
    return _with_n("first", n)


def last(n: int) -> AggregationFunction:
    """The last `n` values in the window, oldest first."""
    return _with_n("last", n)


def first_distinct(n: int) -> AggregationFunction:
    """The first `n` distinct values in the window, by first appearance."""
    return _with_n("first_distinct", n)


def last_distinct(n: int) -> AggregationFunction:
    """The last `n` distinct values in the window, by last appearance, oldest first."""
    return _with_n("last_distinct", n)


def approx_count_distinct(precision: int = 8) -> AggregationFunction:
    """How many distinct values the window holds (Rivulet counts them exactly)."""
    return AggregationFunction("approx_count_distinct", precision=precision)


def approx_percentile(percentile: float, precision: int = 100) -> AggregationFunction:
    """The window's `percentile` (0 to 1), interpolated (Rivulet computes it exactly)."""
    if not isinstance(percentile, int | float) or not 0 <= percentile <= 1:
        raise DefinitionError(
            f"approx_percentile: percentile must be a number from 0 to 1, not {percentile!r}."
        )
    return AggregationFunction(
        "approx_percentile", percentile=float(percentile), precision=precision
    )


def _with_n(name: str, n: int) -> AggregationFunction:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise DefinitionError(f"{name}(n): n must be a positive integer, not {n!r}.")
    return AggregationFunction(name, n=n)


@dataclass(frozen=True)
class TimeWindow:
    """The rows in [e + offset - window_size, e + offset): `offset` is zero or negative."""

    window_size: timedelta
    offset: timedelta = timedelta(0)


@dataclass(frozen=True)
class LifetimeWindow:
    """Every row before e (from the view's feature_start_time)."""


@dataclass(frozen=True)
class TimeWindowSeries:
    """A list of windows of `window_size`, oldest first, starting at e + `series_start`
    (negative) and every `step_size` (default: `window_size`) after, each ending at or
    before e + `series_end` (zero or negative): `TimeWindowSeries(series_start=
    timedelta(days=-7), window_size=timedelta(days=1))` is the 7 days before e, a day each."""

    series_start: timedelta
    window_size: timedelta
    step_size: timedelta | None = None
    series_end: timedelta = timedelta(0)

    @property
    def step(self) -> timedelta:
        return self.window_size if self.step_size is None else self.step_size

    def windows(self) -> list[TimeWindow]:
        """Each window of the series as a TimeWindow (its offset its end's, from e)."""
        found, end = [], self.series_start + self.window_size
        while end <= self.series_end:
            found.append(TimeWindow(self.window_size, offset=end))
            end += self.step
        return found


Window = TimeWindow | LifetimeWindow | TimeWindowSeries


@dataclass(frozen=True)
class Aggregate:
    """A feature aggregated over a time window: `Aggregate(input_column=Field("amt",
    Float64), function="mean", time_window=timedelta(days=30))`. `name` defaults to
    Tecton's: `<column>_<function>_<window>_<aggregation interval>`, e.g. `amt_mean_30d_1d`
    (set by the view, which knows the interval)."""

    input_column: Field
    function: AggregationFunction
    time_window: Window
    name: str = ""
    description: str | None = None
    interval: timedelta = field(default=timedelta(0), repr=False)

    def __init__(
        self,
        input_column: Field,
        function: str | AggregationFunction,
        time_window: timedelta | TimeWindow | LifetimeWindow,
        name: str | None = None,
        description: str | None = None,
        **unsupported: Any,
    ) -> None:
        column = getattr(input_column, "name", input_column)
        if unsupported:
            raise DefinitionError(
                f"Aggregate over '{column}': unknown argument(s) {', '.join(sorted(unsupported))}."
            )
        if not isinstance(input_column, Field):
            raise DefinitionError(
                f"Aggregate: input_column must be a Field(name, dtype), not {input_column!r}."
            )
        if isinstance(function, str):
            if function not in SIMPLE:
                raise DefinitionError(
                    f"Aggregate over '{column}': unknown function '{function}'; use one of "
                    f"{', '.join(SIMPLE)}, or first(n), last(n), first_distinct(n), "
                    f"last_distinct(n), approx_percentile(p) from engine.aggregation_functions."
                )
            function = AggregationFunction(function)
        if not isinstance(function, AggregationFunction):
            raise DefinitionError(
                f"Aggregate over '{column}': function must be a name such as 'sum' or one of "
                f"engine.aggregation_functions, not {function!r}."
            )
        if isinstance(time_window, timedelta):
            time_window = TimeWindow(time_window)
        if not isinstance(time_window, TimeWindow | LifetimeWindow | TimeWindowSeries):
            raise DefinitionError(
                f"Aggregate over '{column}': time_window must be a timedelta, TimeWindow(...), "
                f"TimeWindowSeries(...) or LifetimeWindow(), not {type(time_window).__name__}."
            )
        if function.name in NUMERIC and input_column.dtype not in NUMBERS:
            raise DefinitionError(
                f"Aggregate over '{column}': {function.name} needs a number column (Int32, "
                f"Int64, Float32 or Float64), not {input_column.dtype!r}."
            )
        object.__setattr__(self, "input_column", input_column)
        object.__setattr__(self, "function", function)
        object.__setattr__(self, "time_window", time_window)
        object.__setattr__(self, "name", name or "")
        object.__setattr__(self, "description", description)
        object.__setattr__(self, "interval", timedelta(0))

    @property
    def column(self) -> str:
        return self.input_column.name

    @property
    def windows(self) -> list[TimeWindow | LifetimeWindow]:
        """The windows it aggregates over: one, or a series' several."""
        window = self.time_window
        return window.windows() if isinstance(window, TimeWindowSeries) else [window]

    @property
    def dtype(self) -> DataType:
        """The feature's type: an Array of one value per window for a series, else the
        value's: counts are Int64; means, deviations and percentiles Float64; sums of
        integers Int64; first/last n values an Array; the rest the column's type."""
        value = self._value_type()
        return Array(value) if isinstance(self.time_window, TimeWindowSeries) else value

    def _value_type(self) -> DataType:
        name, given = self.function.name, self.input_column.dtype
        if name in ("count", "approx_count_distinct"):
            return Int64
        if name == "sum":
            return Int64 if given in (Int32, Int64) else Float64
        if name in ("mean", "approx_percentile", *SPREADS):
            return Float64
        if self.function.n is not None:
            return Array(given)
        return given

    def bound(self, interval: timedelta) -> Aggregate:
        """This aggregate in a view of that aggregation interval (checked, and named)."""
        window, which = self.time_window, f"Aggregate '{self.name or self.column}'"
        sizes = {"time_window": getattr(window, "window_size", interval)}
        if isinstance(window, TimeWindow):
            sizes["offset"] = window.offset
        if isinstance(window, TimeWindowSeries):
            sizes.update(series_start=window.series_start, step_size=window.step,
                         series_end=window.series_end)  # fmt: skip
        for what, size in sizes.items():
            if not isinstance(size, timedelta) or size % interval:
                raise DefinitionError(
                    f"{which}: its {what} {size} is not a multiple of the aggregation_interval "
                    f"{interval}."
                )
        if isinstance(window, TimeWindow) and (
            window.window_size <= timedelta(0) or window.offset > timedelta(0)
        ):
            raise DefinitionError(
                f"{which}: time_window needs a positive window_size and an offset of zero or "
                f"less, not {window}."
            )
        if isinstance(window, TimeWindowSeries) and (
            window.window_size <= timedelta(0)
            or window.step <= timedelta(0)
            or window.series_end > timedelta(0)
            or not window.windows()
        ):
            raise DefinitionError(
                f"{which}: a TimeWindowSeries needs a positive window_size and step_size, a "
                f"series_end of zero or less, and room for a window from series_start to "
                f"series_end, not {window}."
            )
        bound = Aggregate(
            self.input_column, self.function, window, self.name or None, self.description
        )
        object.__setattr__(bound, "name", self.name or default_name(self, interval))
        object.__setattr__(bound, "interval", interval)
        return bound


def default_name(aggregate: Aggregate, interval: timedelta) -> str:
    """Tecton's name: `amt_mean_30d_1d`, `amt_sum_7d_offset_1d_1d`, `amt_max_lifetime_1d`;
    for a series `amt_sum_series_7d_1d_1d` (7 days back, windows of a day)."""
    window = aggregate.time_window
    if isinstance(window, LifetimeWindow):
        span = "lifetime"
    elif isinstance(window, TimeWindowSeries):
        span = f"series_{duration_label(-window.series_start)}_{duration_label(window.window_size)}"
        if window.step != window.window_size:
            span += f"_step_{duration_label(window.step)}"
        if window.series_end:
            span += f"_end_{duration_label(-window.series_end)}"
    else:
        span = duration_label(window.window_size)
        if window.offset:
            span += f"_offset_{duration_label(-window.offset)}"
    return f"{aggregate.column}_{aggregate.function.label}_{span}_{duration_label(interval)}"


def duration_label(duration: timedelta) -> str:
    """`1d`, `12h`, `1h30m`, `45s`: the largest units first."""
    seconds, label = int(duration.total_seconds()), ""
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        if seconds >= size:
            label, seconds = label + f"{seconds // size}{unit}", seconds % size
    return label or "0s"
