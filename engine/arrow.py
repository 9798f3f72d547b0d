"""Small conversions shared by reading and writing: frames to Arrow, SQL identifiers."""

from __future__ import annotations

from typing import Any

import pyarrow as pa


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


def quote(name: str) -> str:
    """A column name as a DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'
