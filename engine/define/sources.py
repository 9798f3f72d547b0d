"""Where a feature view's rows come from: batch sources and their configs, request sources."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
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


@dataclass(frozen=True)
class RequestSource:
    """The fields a realtime request carries: `RequestSource(schema=[Field("input", String)])`."""

    schema: tuple[Field, ...]

    def __init__(self, schema: Sequence[Field]) -> None:
        if not schema or not all(isinstance(f, Field) for f in schema):
            raise DefinitionError("RequestSource needs schema as a non-empty list of Field(...).")
        object.__setattr__(self, "schema", tuple(schema))
