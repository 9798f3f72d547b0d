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
from engine.define.types import Array, DataType, Timestamp
from engine.errors import OutputError, one_line

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ARROW_ERRORS = (
    pa.ArrowInvalid,
    pa.ArrowTypeError,
    pa.ArrowNotImplementedError,
    TypeError,
    ValueError,
    OverflowError,
)
_KINDS = {
    "number": (pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal),
    "boolean": (pa.types.is_boolean,),
    "string": (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view),
    "timestamp": (pa.types.is_timestamp, pa.types.is_date),
}


def checked_features(view: BatchFeatureView, source_row: dict[str, Any], returned: Any) -> dict:
    """What a python-mode transform returned for one row, if it is a dict of exactly the
    declared features, plus any join keys or timestamp it overrides; else OutputError."""
    if not isinstance(returned, dict):
        raise OutputError(
            f"Feature view '{view.name}' returned {type(returned).__name__} for the row "
            f"{describe_row(view, source_row)}; a python-mode transform returns a dict of "
            f"features.",
            view=view.name,
        )
    declared = view.feature_names
    if returned.keys() != declared and returned.keys() - view.carried_columns != declared:
        missing = [name for name in declared if name not in returned]
        extra = [n for n in returned if n not in declared and n not in view.carried_columns]
        raise OutputError(
            _mismatch_message(view, source_row, missing, extra, returned), view=view.name
        )
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
        source = source.take(pa.array(kept, pa.int64()))  # typed: an empty list infers null
    features_count = len(view.feature_names)
    overrides = any(len(features) > features_count for features in results)
    arrays = []
    for field in view.row_schema():
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
    table = pa.Table.from_arrays(arrays, schema=view.row_schema())
    _check_keys(view, table, source)
    return _check_window(view, table, start, end)


def frame_to_table(
    view: BatchFeatureView, result: Any, source: pa.RecordBatch, start: datetime, end: datetime
) -> pa.Table:
    """A frame-mode result as a table of the view's output schema. Join keys and timestamp the
    result lacks are taken from the source batch (see _carry)."""
    table = _as_table(view, result)
    lacking = [name for name in view.carried_columns if name not in table.column_names]
    if lacking:
        table = _carry(view, result, table, source, lacking)
    schema = view.row_schema()
    missing = [f.name for f in schema if f.name not in table.column_names]
    extra = [name for name in table.column_names if name not in schema.names]
    if missing or extra:
        rows = table.slice(0, 1).to_pylist() or source.slice(0, 1).to_pylist() or [{}]
        raise OutputError(_mismatch_message(view, rows[0], missing, extra, rows[0]), view=view.name)
    arrays = [_cast(view, field, table[field.name], table) for field in schema]
    table = pa.Table.from_arrays(arrays, schema=schema)
    _check_keys(view, table, table)
    return _check_window(view, table, start, end)


def _carry(
    view: BatchFeatureView, result: Any, table: pa.Table, source: pa.RecordBatch, lacking: list[str]
) -> pa.Table:
    """The result with the `lacking` join keys and timestamp taken from the source batch, row
    for row: it must have one row per source row, and a pandas frame's rows are first put in
    the source's order by their index labels."""
    pandas = view.mode == "pandas" and hasattr(result, "index")
    if table.num_rows != source.num_rows:
        first = source.slice(0, 1).to_pylist()
        order = "labelled with the input's index" if pandas else "in their order"
        raise OutputError(
            f"Feature view '{view.name}' ({view.mode} mode) returned "
            f"{_count(table.num_rows, 'row')} for the {_count(source.num_rows, 'input row')}"
            f"{f' starting at {describe_row(view, first[0])}' if first else ''}, without "
            f"{_listed(lacking)}; a frame without the join keys and timestamp must return one "
            f"row per input row, {order}, or return them as columns.",
            view=view.name,
        )
    if pandas:
        table = _in_input_order(view, result.index, table, lacking)
    for name in lacking:
        with contextlib.suppress(OutputError):  # reported by the caller as missing
            table = table.append_column(name, _source_column(view, source, name))
    return table


def _in_input_order(
    view: BatchFeatureView, index: Any, table: pa.Table, lacking: list[str]
) -> pa.Table:
    """A pandas result's rows reordered to match the input's by index label: the input frame is
    `batch.to_pandas()`, labelled 0 to n-1, and the result must have each label once."""
    import pandas as pd

    labels = pd.RangeIndex(table.num_rows)
    if index.equals(labels):
        return table
    index = index.to_flat_index()  # a MultiIndex's labels as tuples
    if not index.is_unique:
        problem = f"the label {index[index.duplicated()].tolist()[0]!r} appears more than once"
    elif not (unknown := index[~index.isin(labels)]).empty:
        problem = f"the label {unknown.tolist()[0]!r} is not an input row's"
    else:
        return table.take(index.get_indexer(labels))
    raise OutputError(
        f"Feature view '{view.name}' (pandas mode) returned its features without "
        f"{_listed(lacking)}, with an index that is not the input's: {problem}. Rivulet matches "
        f"such rows to the input rows (labelled 0 to {table.num_rows - 1}) by index label: keep "
        f"the input's label on each row (do not reset_index() after sorting or grouping), or "
        f"return {_listed(lacking)} as columns.",
        view=view.name,
    )


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
        f"(columns: {', '.join(source.schema.names)}) nor returned by the transform.",
        view=view.name,
    )


def _cast(
    view: BatchFeatureView,
    field: pa.Field,
    values: list | pa.Array | pa.ChunkedArray,
    rows: pa.RecordBatch | pa.Table,
) -> pa.Array | pa.ChunkedArray:
    """`values` (the column `field` of `rows`) converted to the field's type (_converted),
    decided from the column's Arrow type, inferred first when Python values. Value by value
    only when that fails: to name the first that does not fit, or for Python values of mixed
    types that each fit."""
    try:
        array = pa.array(values, from_pandas=False) if isinstance(values, list) else values
        return _converted(array, field.type)
    except _ARROW_ERRORS:
        pass
    listed = values if isinstance(values, list) else values.to_pylist()
    arrays = []
    for index, value in enumerate(listed):
        try:
            arrays.append(_converted(pa.array([value], from_pandas=False), field.type))
        except _ARROW_ERRORS:
            declared = _declared_type(view, field.name)
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            row = rows.slice(index, 1).to_pylist()[0]
            raise OutputError(
                f"Feature view '{view.name}': '{field.name}' is declared {declared!r} but the "
                f"transform returned {type(value).__name__} ({shown}) for the row "
                f"{describe_row(view, row)}; return {_wanted(declared)}.",
                view=view.name,
                feature=field.name,
            ) from None
    return pa.concat_arrays(arrays) if arrays else pa.array([], field.type)


def _converted(
    array: pa.Array | pa.ChunkedArray, target: pa.DataType
) -> pa.Array | pa.ChunkedArray:
    """`array` cast to `target`, a declared type, if its values are of the target's kind and
    fit it; else ValueError. Numbers become the nearest float (so float64 rounds to float32),
    but one beyond Float32's range is an error, not inf; a float becomes an int only when
    integral and in range."""
    if array.type == target:  # already the declared type: it fits as it is
        return array
    if not _of_kind(array.type, target):
        raise ValueError(f"{array.type} is not of the kind of {target}")
    element = _element_type(target)
    converted = array.cast(target, safe=not pa.types.is_floating(element))  # ints may round
    infinite = element == pa.float32() and _infinities(converted)
    if infinite and infinite > _infinities(array.cast(_as_float64(target))):
        raise ValueError("a finite number is beyond Float32's range")
    return converted


def _of_kind(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether values of Arrow type `source` are of the kind of `target`: numbers, booleans,
    strings, timestamps (or dates), or lists of one of these; nulls are of every kind."""
    if pa.types.is_dictionary(source):
        source = source.value_type
    if pa.types.is_null(source):
        return True
    if pa.types.is_list(target):
        is_list = pa.types.is_list(source) or pa.types.is_large_list(source)
        is_list = is_list or pa.types.is_fixed_size_list(source)
        return is_list and _of_kind(source.value_type, target.value_type)
    kind = _kind(source)
    return kind is not None and kind == _kind(target)


def _kind(type_: pa.DataType) -> str | None:
    """A scalar Arrow type's kind: number, boolean, string or timestamp (None for others)."""
    return next((k for k, tests in _KINDS.items() if any(t(type_) for t in tests)), None)


def _element_type(type_: pa.DataType) -> pa.DataType:
    """A declared type's scalar: the innermost element of an Array."""
    return _element_type(type_.value_type) if pa.types.is_list(type_) else type_


def _as_float64(type_: pa.DataType) -> pa.DataType:
    """The declared type with float64 for its scalar."""
    return pa.list_(_as_float64(type_.value_type)) if pa.types.is_list(type_) else pa.float64()


def _infinities(array: pa.Array | pa.ChunkedArray) -> int:
    """How many values are ±inf, lists flattened."""
    while pa.types.is_list(array.type):
        array = pc.list_flatten(array)
    return pc.sum(pc.is_inf(array)).as_py() or 0


def _check_keys(view: BatchFeatureView, table: pa.Table, rows: pa.RecordBatch | pa.Table) -> None:
    """OutputError if a join key or the timestamp is null in a row of `table`, named by the
    same row of `rows` (the source row in python mode)."""
    for name in view.carried_columns:
        if table[name].null_count:
            index = pc.index(pc.is_null(table[name]), True).as_py()
            row = rows.slice(index, 1).to_pylist()[0]
            raise OutputError(
                f"Feature view '{view.name}': '{name}' is null for the row "
                f"{describe_row(view, row)}; every output row needs its join keys and "
                f"timestamp: return a non-null '{name}' for each row, or filter out the rows "
                f"that have none.",
                view=view.name,
            )


def _check_window(
    view: BatchFeatureView, table: pa.Table, start: datetime, end: datetime
) -> pa.Table:
    """The table, unless a row's timestamp is outside [start, end): then an OutputError, or
    for a view reading beyond the interval the table without those rows. Compared as
    microseconds since the epoch: a datetime scalar would have pyarrow import pandas
    (~0.2 s) to check it."""
    micros = table[view.timestamp_field].cast(pa.int64())
    low, high = _micros(start), _micros(end)
    bounds = pc.min_max(micros).as_py()
    if bounds["min"] is None or (bounds["min"] >= low and bounds["max"] < high):
        return table
    outside = pc.or_(pc.less(micros, low), pc.greater_equal(micros, high))
    if view.reads_beyond_interval:
        return table.filter(pc.invert(pc.fill_null(outside, True)))
    row = table.filter(pc.fill_null(outside, False)).slice(0, 1).to_pylist()[0]
    raise OutputError(
        f"Feature view '{view.name}' returned a row outside its interval "
        f"[{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}): {describe_row(view, row)}; "
        f"a transform must keep '{view.timestamp_field}' within the interval it computes.",
        view=view.name,
    )


def _micros(moment: datetime) -> int:
    return (as_utc(moment) - _EPOCH) // timedelta(microseconds=1)


def _as_table(view: BatchFeatureView, result: Any) -> pa.Table:
    try:
        table = as_arrow_table(result)
    except _ARROW_ERRORS as error:  # a pandas column of Python values of mixed types
        raise OutputError(
            f"Feature view '{view.name}' ({view.mode} mode) returned a frame Arrow cannot "
            f"convert: {'; '.join(map(one_line, error.args))}; return values of one type in "
            f"each column.",
            view=view.name,
        ) from None
    if table is not None:
        return table
    raise OutputError(
        f"Feature view '{view.name}' ({view.mode} mode) returned {type(result).__name__}; "
        f"return a {view.mode} frame with the declared features.",
        view=view.name,
    )


def _declared_type(view: BatchFeatureView, name: str) -> DataType:
    declared = {k.name: k.dtype for k in view.join_keys} | {view.timestamp_field: Timestamp}
    return (declared | {f.name: f.dtype for f in view.row_features})[name]


def _wanted(dtype: DataType) -> str:
    """What a value of a declared type is, for error messages."""
    if isinstance(dtype, Array):
        return f"a list whose every element is {_wanted(dtype.element_type)}"
    name = repr(dtype)
    if name.startswith("Int"):
        return f"an int (or an integral float such as 2.0) within {name}'s range"
    if name.startswith("Float"):
        return f"an int or float within {name}'s range"
    return {"Bool": "a bool", "String": "a str", "Timestamp": "a datetime or date"}[name]


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _listed(names: list[str]) -> str:
    quoted = [f"'{name}'" for name in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"


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
