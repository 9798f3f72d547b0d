"""Where a feature view's rows come from: batch sources and their configs, request sources."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from engine.define.fields import Field
from engine.errors import DefinitionError

FileFormat = Literal["parquet", "csv", "json"]
FILE_FORMATS: tuple[str, ...] = ("parquet", "csv", "json")


@dataclass(frozen=True)
class FileConfig:
    """Files read through DuckDB: one path, a glob, or a directory (read recursively).

    Example: `FileConfig(uri="data/events/*.parquet", timestamp_field="ts")`.
    Relative paths are relative to the working directory of the run. `data_delay` (as in
    Tecton, on every config) is how long after an interval ends its data is complete: the
    interval is due only once that much time has passed since its end.
    """

    uri: str
    file_format: FileFormat = "parquet"
    timestamp_field: str | None = None
    data_delay: timedelta = field(default=timedelta(0), repr=False)

    def __post_init__(self) -> None:
        if self.file_format not in FILE_FORMATS:
            raise DefinitionError(
                f"FileConfig(uri='{self.uri}') has file_format '{self.file_format}'; "
                f"use one of {', '.join(FILE_FORMATS)}."
            )

    def describe(self) -> str:
        return f"{self.file_format} files at '{self.uri}'"


@dataclass(frozen=True)
class DuckDBConfig:
    """A DuckDB SQL query over files or attached databases; the window filter wraps it.

    Example: `DuckDBConfig(query="SELECT * FROM 'events/*.parquet'", timestamp_field="ts")`.
    """

    query: str
    timestamp_field: str | None = None
    data_delay: timedelta = field(default=timedelta(0), repr=False)

    def describe(self) -> str:
        return "a DuckDB query"


@dataclass(frozen=True, eq=False)
class PythonConfig:
    """A Python loader `loader(start_time, end_time)` returning a Polars or pandas frame,
    a Polars LazyFrame (the window filter is then pushed into its plan) or an Arrow table.
    Rows outside the window are dropped either way. The loader is called with keywords,
    `loader(start_time=..., end_time=...)`; one that cannot be is a DefinitionError here.
    """

    loader: Callable[[Any, Any], Any]
    timestamp_field: str | None = None
    data_delay: timedelta = field(default=timedelta(0), repr=False)

    def __post_init__(self) -> None:
        must = (
            "it must accept start_time and end_time as keyword arguments: "
            "loader(start_time=..., end_time=...)."
        )
        if not callable(self.loader):
            raise DefinitionError(
                f"PythonConfig: the loader is {type(self.loader).__name__}, not a function; {must}"
            )
        try:
            signature = inspect.signature(self.loader)
        except (TypeError, ValueError):  # a builtin without a signature: tried when called
            return
        try:
            signature.bind(start_time=None, end_time=None)
        except TypeError:
            name = getattr(self.loader, "__name__", type(self.loader).__name__)
            takes = signature.replace(
                parameters=[p.replace(annotation=p.empty) for p in signature.parameters.values()],
                return_annotation=signature.empty,
            )
            raise DefinitionError(
                f"PythonConfig: the loader '{name}' takes {takes}; {must}"
            ) from None

    def describe(self) -> str:
        return f"the Python loader '{getattr(self.loader, '__name__', self.loader)}'"


BatchConfig = FileConfig | DuckDBConfig | PythonConfig


@dataclass(frozen=True)
class BatchSource:
    """A named batch source, e.g. `BatchSource(name="events", batch_config=FileConfig(...))`."""

    name: str
    batch_config: BatchConfig
    description: str | None = None
    owner: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    def __init__(
        self,
        name: str,
        batch_config: BatchConfig,
        description: str | None = None,
        owner: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        if not isinstance(batch_config, FileConfig | DuckDBConfig | PythonConfig):
            raise DefinitionError(
                f"BatchSource '{name}' needs batch_config=FileConfig(...), DuckDBConfig(...) "
                f"or PythonConfig(...), not {type(batch_config).__name__}."
            )
        delay = batch_config.data_delay
        if not isinstance(delay, timedelta) or delay < timedelta(0):
            raise DefinitionError(
                f"BatchSource '{name}': data_delay must be a non-negative timedelta, not {delay!r}."
            )
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "batch_config", batch_config)
        object.__setattr__(self, "description", description)
        object.__setattr__(self, "owner", owner)
        object.__setattr__(self, "tags", tuple(sorted((tags or {}).items())))

    def unfiltered(self) -> FilteredSource:
        """This source read whole for every interval, as Tecton's `source.unfiltered()`."""
        return FilteredSource(
            self, start=TectonTimeConstant.UNBOUNDED_PAST, end=TectonTimeConstant.UNBOUNDED_FUTURE
        )

    def select_range(self, start_time: TimeReference, end_time: TimeReference) -> FilteredSource:
        """This source read over a range relative to each interval, as Tecton's:
        `select_range(start_time=TectonTimeConstant.MATERIALIZATION_START_TIME
        - timedelta(days=29), end_time=TectonTimeConstant.MATERIALIZATION_END_TIME)`."""
        return FilteredSource(self, start=start_time, end=end_time)


@dataclass(frozen=True)
class TimeReference:
    """A moment relative to the interval being computed: its start or end (plus `offset`),
    or unbounded. Made from TectonTimeConstant's members: `MATERIALIZATION_START_TIME -
    timedelta(days=29)`."""

    anchor: Literal["start", "end", "past", "future"]
    offset: timedelta = timedelta(0)

    def __add__(self, delta: timedelta) -> TimeReference:
        if not isinstance(delta, timedelta):
            return NotImplemented
        return TimeReference(self.anchor, self.offset + delta)

    def __sub__(self, delta: timedelta) -> TimeReference:
        if not isinstance(delta, timedelta):
            return NotImplemented
        return TimeReference(self.anchor, self.offset - delta)

    def at(self, start: datetime, end: datetime) -> datetime | None:
        """The moment for the interval [start, end); None when unbounded."""
        if self.anchor in ("past", "future"):
            return None
        return (start if self.anchor == "start" else end) + self.offset

    def __str__(self) -> str:
        names = {"start": "the interval's start", "end": "the interval's end"}
        if self.anchor not in names:
            return f"unbounded {self.anchor}"
        sign = "-" if self.offset < timedelta(0) else "+"
        return names[self.anchor] + (f" {sign} {abs(self.offset)}" if self.offset else "")


class TectonTimeConstant:
    """The ends of a source's range in `select_range`, named as in Tecton."""

    MATERIALIZATION_START_TIME = TimeReference("start")
    MATERIALIZATION_END_TIME = TimeReference("end")
    UNBOUNDED_PAST = TimeReference("past")
    UNBOUNDED_FUTURE = TimeReference("future")


@dataclass(frozen=True, init=False)
class FilteredSource:
    """A batch source with the range each interval reads of it: by default the interval
    itself; `start_time_offset=-timedelta(days=29)` looks back 29 days more (Tecton's
    FilteredSource); `source.unfiltered()` and `source.select_range(...)` give the others."""

    source: BatchSource
    start: TimeReference
    end: TimeReference

    def __init__(
        self,
        source: BatchSource,
        start_time_offset: timedelta = timedelta(0),
        *,
        start: TimeReference | None = None,
        end: TimeReference | None = None,
    ) -> None:
        if not isinstance(source, BatchSource):
            raise DefinitionError(
                f"FilteredSource needs a BatchSource, not {type(source).__name__}."
            )
        if not isinstance(start_time_offset, timedelta):
            raise DefinitionError(
                f"FilteredSource('{source.name}'): start_time_offset must be a timedelta, "
                f"not {start_time_offset!r}."
            )
        first = start or TectonTimeConstant.MATERIALIZATION_START_TIME + start_time_offset
        last = end or TectonTimeConstant.MATERIALIZATION_END_TIME
        for bound, value in (("start_time", first), ("end_time", last)):
            if not isinstance(value, TimeReference):
                raise DefinitionError(
                    f"Source '{source.name}': select_range's {bound} must be made from "
                    f"TectonTimeConstant (e.g. MATERIALIZATION_START_TIME - timedelta(days=29)), "
                    f"not {value!r}."
                )
        if first.anchor == "future" or last.anchor == "past":
            raise DefinitionError(
                f"Source '{source.name}': select_range from {first} to {last} is empty."
            )
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "start", first)
        object.__setattr__(self, "end", last)

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def batch_config(self) -> BatchConfig:
        return self.source.batch_config

    @property
    def is_interval(self) -> bool:
        """Whether it reads exactly the interval being computed."""
        return self == FilteredSource(self.source)

    @property
    def is_unfiltered(self) -> bool:
        """Whether it is read whole, with no range (so needs no window column)."""
        return self.start.anchor == "past" and self.end.anchor == "future"

    def window(self, start: datetime, end: datetime) -> tuple[datetime | None, datetime | None]:
        """The range [low, high) read for the interval [start, end); None is unbounded."""
        return self.start.at(start, end), self.end.at(start, end)

    def describe(self) -> str:
        """Its name, and its range when it is not the interval: `users (unfiltered)`."""
        if self.is_interval:
            return self.name
        if self.is_unfiltered:
            return f"{self.name} (unfiltered)"
        return f"{self.name} (from {self.start} to {self.end})"


@dataclass(frozen=True)
class RequestSource:
    """The fields a realtime request carries: `RequestSource(schema=[Field("input", String)])`."""

    schema: tuple[Field, ...]

    def __init__(self, schema: Sequence[Field]) -> None:
        if not schema or not all(isinstance(f, Field) for f in schema):
            raise DefinitionError("RequestSource needs schema as a non-empty list of Field(...).")
        object.__setattr__(self, "schema", tuple(schema))
