"""Values crossing the serving boundary: request fields in, features out, checked by type.

A request field is checked against its `Field`: JSON gives numbers, strings, booleans and
lists; an Int64 may also come as a string of digits (Tecton's clients send int64 so), and
a Timestamp as an ISO-8601 string. A feature is checked against its `Attribute`; NumPy and
pandas scalars count as the Python values they hold.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

from engine.define.types import Array, DataType

_INT_RANGE = {"Int32": 2**31, "Int64": 2**63}
# Element types that values of exactly these Python types fit as they are (ints are left
# to the per-element path: their range is checked, and a float feature's ints converted).
_PLAIN = {"Float32": {float}, "Float64": {float}, "String": {str}, "Bool": {bool}}
_JSON_TYPE = {
    "String": "string",
    "Int32": "int32",
    "Int64": "int64",
    "Float32": "float32",
    "Float64": "float64",
    "Bool": "bool",
    "Timestamp": "timestamp",
}


def data_type_json(dtype: DataType) -> dict[str, Any]:
    """The type as Tecton's metadata writes it: `{"type": "array", "elementType": {...}}`."""
    if isinstance(dtype, Array):
        return {"type": "array", "elementType": data_type_json(dtype.element_type)}
    return {"type": _JSON_TYPE[repr(dtype)]}


def request_value(dtype: DataType, value: Any) -> tuple[Any, bool]:
    """A request field's value as the transform gets it, and whether it fits `dtype`."""
    return _checked(dtype, value, from_json=True)


def feature_value(dtype: DataType, value: Any) -> tuple[Any, bool]:
    """A transform's value as a plain Python one, and whether it fits `dtype`."""
    return _checked(dtype, value, from_json=False)


def describe(value: Any) -> str:
    """A value's type as an error names it: `list of float`, `str`, `NoneType`."""
    if isinstance(value, list | tuple) and value:
        kinds = sorted({type(item).__name__ for item in value})
        return f"{type(value).__name__} of {' and '.join(kinds)}"
    return type(value).__name__


def to_json(value: Any) -> Any:
    """A checked value in JSON terms: timestamps as ISO-8601 strings in UTC, non-finite
    floats as JSON has them (null for NaN, "Infinity")."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, list):
        kinds = set(map(type, value))
        if kinds <= {float, int} and math.isfinite(sum(value)):  # no inf, no nan
            return value
        if kinds <= {str, bool, type(None)}:
            return value
        return [to_json(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def _checked(dtype: DataType, value: Any, from_json: bool) -> tuple[Any, bool]:
    """(value, fits): null fits any type; JSON's forms of int64 and timestamps are read."""
    if not from_json and hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()  # NumPy arrays and scalars
    if value is None:
        return None, True
    if isinstance(dtype, Array):
        if not isinstance(value, list | tuple):
            return value, False
        if set(map(type, value)) <= _PLAIN.get(repr(dtype.element_type), set()):
            return list(value), True  # an embedding's 1,536 floats: no call per element
        items = [_checked(dtype.element_type, item, from_json) for item in value]
        return [item for item, _ in items], all(fits for _, fits in items)
    name = repr(dtype)
    if from_json and isinstance(value, str):
        if name in _INT_RANGE and re.fullmatch(r"-?[0-9]+", value):
            value = int(value)
        elif name == "Timestamp":
            try:
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return value, False
    if name == "Timestamp":
        if not isinstance(value, datetime):
            return value, False
        return (value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)), True
    if name in _INT_RANGE:
        fits = isinstance(value, int) and not isinstance(value, bool)
        return value, fits and -_INT_RANGE[name] <= value < _INT_RANGE[name]
    if name in ("Float32", "Float64"):
        fits = isinstance(value, int | float) and not isinstance(value, bool)
        return (float(value) if fits else value), fits
    return value, isinstance(value, bool if name == "Bool" else str)
