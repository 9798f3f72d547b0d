"""An online view's rows as the online store keeps them, and as serving reads them back.

An interval's file gives each entity's newest row: the latest timestamp, and among rows
with the same keys and timestamp the last in file order (the rule of point-in-time
retrieval). It is kept as its join keys (a JSON list, the key), its timestamp in
microseconds, and its features as JSON (timestamps as ISO-8601). A view's `ttl` applies
when it is read: a row older than `now - ttl` is EXPIRED, as retrieval would not use it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from engine.arrow import quote
from engine.define.feature_views import BatchFeatureView
from engine.define.types import Array, DataType, Timestamp
from engine.online.stores import Entry, OnlineStore

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Found:
    """One entity's features as read: values by feature name (None each when not PRESENT),
    `status` "PRESENT", "MISSING" or "EXPIRED", and the row's timestamp when there is one."""

    values: dict[str, Any]
    status: str
    timestamp: datetime | None


def namespace(job: str, view: BatchFeatureView) -> str:
    return f"{job}:{view.name}"


def entity_key(values: Sequence[Any]) -> str:
    """The store's key for join key values, in the view's join key order."""
    return json.dumps(list(values), separators=(",", ":"), default=_iso)


def newest_entries(view: BatchFeatureView, paths: Sequence[Path]) -> list[Entry]:
    """Each entity's newest row across committed files (of disjoint intervals), as store
    entries; rows with a null join key are left out, as they match nothing. Files of an
    older definition lacking a feature give it as null."""
    names = [key.name for key in view.join_keys]
    keys = ", ".join(map(quote, names))
    ts = quote(view.timestamp_field)
    features = [feature.name for feature in view.features]
    files = "read_parquet($path, file_row_number = true, union_by_name = true)"
    params = {"path": [str(path) for path in paths]}
    con = duckdb.connect()
    try:
        held = set(con.sql(f"SELECT * FROM {files}", params=params).columns)
        picked = ", ".join(quote(f) if f in held else f"NULL AS {quote(f)}" for f in features)
        query = f"""
            SELECT {keys}, epoch_us({ts}) AS __ts, {picked} FROM {files}
            WHERE {" AND ".join(f"{quote(k)} IS NOT NULL" for k in names)}
            QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {ts} DESC,
                file_row_number DESC) = 1"""
        rows = con.sql(query, params=params).fetchall()
    finally:
        con.close()
    width = len(names)
    return [
        (
            entity_key(row[:width]),
            row[width],
            _encode(dict(zip(features, row[width + 1 :], strict=True))),
        )
        for row in rows
    ]


def table_entries(view: BatchFeatureView, table: Any) -> list[Entry]:
    """Store entries of an Arrow table of the view's rows (join keys, the timestamp, the
    features), one per row."""
    names = [key.name for key in view.join_keys]
    features = [feature.name for feature in view.features]
    micros = table[view.timestamp_field].cast("int64").to_pylist()
    return [
        (entity_key([row[k] for k in names]), at, _encode({f: row[f] for f in features}))
        for row, at in zip(table.to_pylist(), micros, strict=True)
    ]


def read_features(
    store: OnlineStore,
    job: str,
    wanted: Sequence[tuple[BatchFeatureView, Sequence[Any]]],
    now: datetime,
) -> list[Found]:
    """Each (view, join key values)'s features, read at `now`, in one round trip."""
    held = store.read([(namespace(job, view), entity_key(keys)) for view, keys in wanted])
    return [_found(view, entry, now) for (view, _), entry in zip(wanted, held, strict=True)]


def _found(view: BatchFeatureView, entry: tuple[int, str] | None, now: datetime) -> Found:
    dtypes = {feature.name: feature.dtype for feature in view.features}
    if entry is None:
        return Found(dict.fromkeys(dtypes), "MISSING", None)
    at = _EPOCH + timedelta(microseconds=entry[0])
    if view.ttl is not None and at < now - view.ttl:
        return Found(dict.fromkeys(dtypes), "EXPIRED", at)
    values = json.loads(entry[1])
    return Found({k: _decode(dtypes[k], values.get(k)) for k in dtypes}, "PRESENT", at)


def _encode(features: dict[str, Any]) -> str:
    return json.dumps(features, separators=(",", ":"), default=_iso)


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    raise TypeError(f"{type(value).__name__} is not a feature value")


def _decode(dtype: DataType, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(dtype, Array):
        return [_decode(dtype.element_type, item) for item in value]
    return datetime.fromisoformat(value) if dtype == Timestamp else value
