"""Where a feature view's rows come from: batch sources and their configs, request sources."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from engine.define.fields import Field
from engine.errors import DefinitionError

FileFormat = Literal["parquet", "csv", "json"]
FILE_FORMATS: tuple[str, ...] = ("parquet", "csv", "json")


@dataclass(frozen=True)
class FileConfig:
    """Files read through DuckDB: one path, a glob, or a directory (read recursively).

    Example: `FileConfig(uri="data/events/*.parquet", timestamp_field="ts")`.
    Relative paths are relative to the working directory of the run.
    """

    uri: str
    file_format: FileFormat = "parquet"
    timestamp_field: str | None = None

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

    def describe(self) -> str:
        return "a DuckDB query"


@dataclass(frozen=True, eq=False)
class PythonConfig:
    """A Python loader `loader(start_time, end_time)` returning a Polars or pandas frame,
    a Polars LazyFrame (the window filter is then pushed into its plan) or an Arrow table.
    Rows outside the window are dropped either way.
    """

    loader: Callable[[Any, Any], Any]
    timestamp_field: str | None = None

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
