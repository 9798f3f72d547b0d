"""Small conversions shared by reading and writing: frames to Arrow, rows, SQL identifiers,
and the process's DuckDB database that queries Arrow tables."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator
from datetime import UTC
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    import duckdb


@contextlib.contextmanager
def duckdb_cursor() -> Iterator[duckdb.DuckDBPyConnection]:
    """A cursor on this process's in-memory DuckDB database, in UTC and without a progress
    bar, closed after (a new database per query would cost ~15 ms). Tables registered on it
    are its own."""
    con = _database().cursor()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")  # a streamed read looks long to DuckDB
    try:
        yield con
    finally:
        con.close()


@functools.cache
def _database() -> duckdb.DuckDBPyConnection:
    import duckdb

    return duckdb.connect()


def as_arrow_table(frame: Any) -> pa.Table | None:
    """A pyarrow Table, RecordBatch, Polars or pandas DataFrame as an Arrow table; None for
    anything else (the caller says what it expected)."""
    if isinstance(frame, pa.Table):
        return frame
    if isinstance(frame, pa.RecordBatch):
        return pa.Table.from_batches([frame])
    module = type(frame).__module__
    if module.startswith("polars") and hasattr(frame, "to_arrow"):
        return frame.to_arrow()
    if module.startswith("pandas") and hasattr(frame, "columns"):
        return pa.Table.from_pandas(frame, preserve_index=False)
    return None


def coalesced(batches: Iterable[pa.RecordBatch], most_bytes: int) -> Iterator[pa.RecordBatch]:
    """The batches, in order, merged into batches of about `most_bytes` each: consecutive
    ones are merged until they reach it (a batch larger than it stays as it is)."""
    group: list[pa.RecordBatch] = []
    size = 0
    for batch in batches:
        if group and size + batch.nbytes > most_bytes:
            yield _merged(group)
            group, size = [], 0
        group.append(batch)
        size += batch.nbytes
    if group:
        yield _merged(group)


def _merged(group: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(group) == 1:
        return group[0]
    return pa.Table.from_batches(group).combine_chunks().to_batches()[0]


def quote(name: str) -> str:
    """A column name as a DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


def to_rows(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """The batch's rows as dicts, as `batch.to_pylist()` gives them, except that UTC
    timestamps carry `datetime.timezone.utc`: pyarrow converts each through zoneinfo, which
    costs more than the rest of the row."""
    utc = [
        i
        for i, field in enumerate(batch.schema)
        if pa.types.is_timestamp(field.type)
        and field.type.tz in ("UTC", "+00:00")
        and field.type.unit != "ns"  # naive nanoseconds may come back as pandas Timestamps
    ]
    for i in utc:
        naive = pa.timestamp(batch.schema.field(i).type.unit)
        batch = batch.set_column(i, batch.schema.field(i).name, batch.column(i).cast(naive))
    rows = batch.to_pylist()
    names = [batch.schema.field(i).name for i in utc]
    for row in rows:
        for name in names:
            if (value := row[name]) is not None:
                row[name] = value.replace(tzinfo=UTC)
    return rows
