"""Check a transform's output against its declaration and cast it to the declared Arrow types."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from engine.arrow import as_arrow_table
from engine.define.feature_views import BatchFeatureView
from engine.define.schedule import as_utc
from engine.define.types import DataType, Timestamp
from engine.errors import OutputError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ARROW_ERRORS = (
    pa.ArrowInvalid,
    pa.ArrowTypeError,
    pa.ArrowNotImplementedError,
    TypeError,
    ValueError,
    OverflowError,
)


def checked_features(view: BatchFeatureView, source_row: dict[str, Any], returned: Any) -> dict:
    """What a python-mode transform returned for one row, if it is a dict of exactly the
    declared features, plus any join keys or timestamp it overrides; else OutputError."""
    if not isinstance(returned, dict):
        raise OutputError(
            f"Feature view '{view.name}' returned {type(returned).__name__} for the row "
            f"{describe_row(view, source_row)}; a python-mode transform returns a dict of features."
        )
    declared = view.feature_names
    if returned.keys() != declared and returned.keys() - view.carried_columns != declared:
        missing = [name for name in declared if name not in returned]
        extra = [n for n in returned if n not in declared and n not in view.carried_columns]
        raise OutputError(_mismatch_message(view, source_row, missing, extra, returned))
    return returned


def rows_to_table(
    view: BatchFeatureView,
    source: pa.RecordBatch,
    returned: list[dict[str, Any] | None],
    start: datetime,
    end: datetime,
) -> pa.Table:
    """One source batch's python-mode output as a table of the view's output schema.

    `returned[i]` holds the features of source row i, or None when that row is skipped. Join
    keys and timestamp come from the source's columns as they are, without a round trip
    through Python objects, unless the transform returned them.
    """
    kept = [i for i, features in enumerate(returned) if features is not None]
    results = [returned[i] for i in kept]
    if len(kept) < source.num_rows:
        source = source.take(kept)
    features_count = len(view.feature_names)
    overrides = any(len(features) > features_count for features in results)
    arrays = []
    for field in view.output_schema():
        name = field.name
        if name in view.feature_names:
            values: list | pa.Array = [features[name] for features in results]
        elif overrides and any(name in features for features in results):
            if all(name in features for features in results):  # the source may not have it
                values = [features[name] for features in results]
            else:
                carried = _source_column(view, source, name).to_pylist()
                values = [f.get(name, value) for f, value in zip(results, carried, strict=True)]
        else:
            values = _source_column(view, source, name)
        arrays.append(_cast(view, field, values, source))
    table = pa.Table.from_arrays(arrays, schema=view.output_schema())
    return _check_window(view, table, start, end)


def frame_to_table(
    view: BatchFeatureView, result: Any, source: pa.RecordBatch, start: datetime, end: datetime
) -> pa.Table:
    """A frame-mode result as a table of the view's output schema. Join keys and timestamp the
    result lacks are taken from the source batch when the result has one row per source row."""
    table = _as_table(view, result)
    for name in view.carried_columns:
        if name not in table.column_names and table.num_rows == source.num_rows:
            with contextlib.suppress(OutputError):  # reported below as missing
                table = table.append_column(name, _source_column(view, source, name))
    schema = view.output_schema()
    missing = [f.name for f in schema if f.name not in table.column_names]
    extra = [name for name in table.column_names if name not in schema.names]
    if missing or extra:
        rows = table.slice(0, 1).to_pylist() or source.slice(0, 1).to_pylist() or [{}]
        raise OutputError(_mismatch_message(view, rows[0], missing, extra, rows[0]))
    arrays = [_cast(view, field, table[field.name], table) for field in schema]
    return _check_window(view, pa.Table.from_arrays(arrays, schema=schema), start, end)


def _source_column(
    view: BatchFeatureView, source: pa.RecordBatch | pa.Table, name: str
) -> pa.Array | pa.ChunkedArray:
    """A join key or the timestamp as the source has it (the timestamp may be the window
    column under another name)."""
    if name in source.schema.names:
        return source.column(name)
    if name == view.timestamp_field:
        return source.column(view.window_field)
    raise OutputError(
        f"Feature view '{view.name}': join key '{name}' is neither a column of the source "
        f"(columns: {', '.join(source.schema.names)}) nor returned by the transform."
    )


def _cast(
    view: BatchFeatureView,
    field: pa.Field,
    values: list | pa.Array | pa.ChunkedArray,
    rows: pa.RecordBatch | pa.Table,
) -> pa.Array | pa.ChunkedArray:
    """`values` (the column `field` of `rows`) cast safely to the field's type: inferred first
    when Python values, since pa.array(values, type=...) would truncate 1.5 to 1."""
    try:
        array = pa.array(values, from_pandas=False) if isinstance(values, list) else values
        return array.cast(field.type, safe=True)
    except _ARROW_ERRORS:
        pass
    listed = values if isinstance(values, list) else values.to_pylist()
    arrays = []  # value by value: mixed types may each cast; name the first that does not
    for index, value in enumerate(listed):
        try:
            arrays.append(pa.array([value], from_pandas=False).cast(field.type, safe=True))
        except _ARROW_ERRORS:
            declared = _declared_type(view, field.name)
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            row = rows.slice(index, 1).to_pylist()[0]
            raise OutputError(
                f"Feature view '{view.name}': '{field.name}' is declared {declared!r} but the "
                f"transform returned {type(value).__name__} ({shown}) for the row "
                f"{describe_row(view, row)}; return a value castable to {declared!r}."
            ) from None
    return pa.concat_arrays(arrays) if arrays else pa.array([], field.type)


def _check_window(
    view: BatchFeatureView, table: pa.Table, start: datetime, end: datetime
) -> pa.Table:
    """The table, unless a row's timestamp is outside [start, end). Compared as microseconds
    since the epoch: a datetime scalar would have pyarrow import pandas (~0.2 s) to check it."""
    micros = table[view.timestamp_field].cast(pa.int64())
    low, high = _micros(start), _micros(end)
    bounds = pc.min_max(micros).as_py()
    if bounds["min"] is None or (bounds["min"] >= low and bounds["max"] < high):
        return table
    outside = pc.or_(pc.less(micros, low), pc.greater_equal(micros, high))
    row = table.filter(pc.fill_null(outside, False)).slice(0, 1).to_pylist()[0]
    raise OutputError(
        f"Feature view '{view.name}' returned a row outside its interval "
        f"[{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}): {describe_row(view, row)}; "
        f"a transform must keep '{view.timestamp_field}' within the interval it computes."
    )


def _micros(moment: datetime) -> int:
    return (as_utc(moment) - _EPOCH) // timedelta(microseconds=1)


def _as_table(view: BatchFeatureView, result: Any) -> pa.Table:
    table = as_arrow_table(result)
    if table is not None:
        return table
    raise OutputError(
        f"Feature view '{view.name}' ({view.mode} mode) returned {type(result).__name__}; "
        f"return a {view.mode} frame with the declared features."
    )


def _declared_type(view: BatchFeatureView, name: str) -> DataType:
    declared = {k.name: k.dtype for k in view.join_keys} | {view.timestamp_field: Timestamp}
    return (declared | {f.name: f.dtype for f in view.features})[name]


def describe_row(view: BatchFeatureView, row: dict[str, Any]) -> str:
    """The row's join keys and timestamp, for error messages."""
    names = [*view.carried_columns, view.window_field]
    shown = dict.fromkeys(n for n in names if n in row)
    return ", ".join(f"{name}={_show(row[name])}" for name in shown) or "(no keys)"


def _show(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else repr(value)


def _mismatch_message(
    view: BatchFeatureView, row: dict, missing: list[str], extra: list[str], returned: dict
) -> str:
    problems = [
        f"'{name}' (declared {_declared_type(view, name)!r}) is missing" for name in missing
    ]
    problems += [
        f"'{name}' (returned {_type_name(returned.get(name))}) is not declared" for name in extra
    ]
    return (
        f"Feature view '{view.name}' returned features that do not match its declaration, for "
        f"the row {describe_row(view, row)}: {'; '.join(problems)}. Return exactly the declared "
        f"features, or declare each returned one with Attribute(name, type)."
    )


def _type_name(value: Any) -> str:
    return type(value).__name__
