"""Rows as golden files hold them: JSON values, one object per line, in a stable order.

A cell's golden form is the JSON value of the output's Arrow value: timestamps as ISO-8601
UTC with microseconds, dates as ISO dates, float32 as the shortest decimal that reads back as
the same float32, float64 as Python's repr (both round-trip), lists as lists, structs as
objects. Two cells are equal when their JSON texts are.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from engine.define.feature_views import BatchFeatureView
from engine.errors import GoldenError

Row = dict[str, Any]


def cell_text(value: Any) -> str:
    """The canonical JSON text of a golden value, the unit of comparison."""
    return json.dumps(value, ensure_ascii=False)


def row_line(row: Row) -> str:
    """One line of a golden file."""
    return json.dumps(row, ensure_ascii=False)


def to_golden(value: Any, dtype: pa.DataType) -> Any:
    """The golden (JSON) form of one Arrow value of type `dtype`."""
    if value is None:
        return None
    if pa.types.is_float32(dtype):
        return _shortest_float32(value)
    if pa.types.is_floating(dtype):
        return float(value)
    if isinstance(value, datetime):
        moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return moment.isoformat(timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    if (
        pa.types.is_list(dtype)
        or pa.types.is_large_list(dtype)
        or pa.types.is_fixed_size_list(dtype)
    ):
        return [to_golden(item, dtype.value_type) for item in value]
    if pa.types.is_struct(dtype):
        return {f.name: to_golden(value.get(f.name), f.type) for f in dtype}
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, bool | int | str):
        return value
    return str(value)  # decimals, times, durations: their text


def _shortest_float32(value: float) -> float:
    """The float with the fewest digits that is the same float32 as `value`."""
    if not math.isfinite(value):
        return value
    exact = struct.pack("<f", value)
    for digits in range(1, 10):
        short = float(f"{value:.{digits}g}")
        if struct.pack("<f", short) == exact:
            return short
    return value


def read_output(output: Path, view: BatchFeatureView) -> tuple[list[str], list[Row]]:
    """The committed rows of `view` under `output` in golden form, with the column names,
    sorted by timestamp, join keys, then every other column (so the order is stable). An
    aggregate view's rows are its features at each aggregation interval's end."""
    import duckdb

    from engine.retrieve.offline import aggregated_features

    schema = view.output_schema()
    files = sorted((output / view.name).glob("*/*.parquet"))
    if not files:
        return list(schema.names), []
    first = [view.timestamp_field, *(key.name for key in view.join_keys)]
    order = first + [name for name in schema.names if name not in first]
    quoted = ", ".join('"' + name.replace('"', '""') + '"' for name in order)
    if view.aggregates:
        table = aggregated_features(view, output=output)
    else:
        with duckdb.connect() as con:
            table = con.sql(
                f"SELECT * FROM read_parquet($files, hive_partitioning = false) ORDER BY {quoted}",
                params={"files": [str(f) for f in files]},
            ).to_arrow_table()
    columns = table.schema.names
    types = [table.schema.field(name).type for name in columns]
    rows = [
        {name: to_golden(record[name], dtype) for name, dtype in zip(columns, types, strict=True)}
        for record in table.to_pylist()
    ]
    return columns, rows


def read_golden(path: Path) -> tuple[list[str], list[Row]]:
    """The rows of a golden file and its columns (in first-seen order); a GoldenError names
    the file and line of anything that is not a JSON object."""
    columns: dict[str, None] = {}
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            row = exc
        if not isinstance(row, dict):
            raise GoldenError(
                f"Golden file '{path}' line {number} is not a JSON object: {line[:120]!r}. "
                f"Fix it, or rewrite the file with `rivulet test JOB --update`."
            )
        columns.update(dict.fromkeys(row))
        rows.append(row)
    return list(columns), rows


def golden_text(rows: list[Row]) -> str:
    """A golden file's text: one JSON object per line."""
    return "".join(row_line(row) + "\n" for row in rows)
