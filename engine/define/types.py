"""Feature and key types, and their Arrow equivalents."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa


class DataType:
    """A declared column type; `to_arrow()` gives the type written to Parquet."""

    def to_arrow(self) -> pa.DataType:
        raise NotImplementedError


@dataclass(frozen=True)
class _Scalar(DataType):
    name: str

    def to_arrow(self) -> pa.DataType:
        import pyarrow as pa

        return {
            "String": pa.string(),
            "Int32": pa.int32(),
            "Int64": pa.int64(),
            "Float32": pa.float32(),
            "Float64": pa.float64(),
            "Bool": pa.bool_(),
            "Timestamp": pa.timestamp("us", tz="UTC"),
        }[self.name]

    def __repr__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Array(DataType):
    """A list of values of one element type, e.g. `Array(Float32)` for an embedding."""

    element_type: DataType

    def __post_init__(self) -> None:
        if not isinstance(self.element_type, DataType):
            raise TypeError(
                f"Array() takes a Rivulet type such as Float32, not {self.element_type!r}"
            )

    def to_arrow(self) -> pa.DataType:
        import pyarrow as pa

        return pa.list_(self.element_type.to_arrow())

    def __repr__(self) -> str:
        return f"Array({self.element_type!r})"


String = _Scalar("String")
Int32 = _Scalar("Int32")
Int64 = _Scalar("Int64")
Float32 = _Scalar("Float32")
Float64 = _Scalar("Float64")
Bool = _Scalar("Bool")
Timestamp = _Scalar("Timestamp")
