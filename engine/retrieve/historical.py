"""Point-in-time correct training data: committed features joined onto a spine of events.

For an aggregate view, each spine row gets its windows at its time (see
`engine.define.aggregates`), merged from the committed tiles. For any other feature view,
each spine row gets the feature row with the same join keys and the
latest timestamp at or before the spine's (`feature_ts <= spine_ts`: a feature stamped at
the very instant of the event is used, as in Tecton and Feast). With a view `ttl`, that row
is used only when `spine_ts - ttl <= feature_ts` (an age of exactly `ttl` still counts, as
Feast's `>= spine_ts - ttl`); otherwise the view's features are null. Several feature rows
with the same keys and timestamp: the last in output order (file order: the last row the
transform returned) wins. Null keys or a null spine timestamp match nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from engine.arrow import as_arrow_table, quote
from engine.define.feature_views import BatchFeatureView, RealtimeFeatureView
from engine.define.services import FeatureService
from engine.errors import SettingsError, SpineError, one_line
from engine.plan.job import load_job
from engine.retrieve.offline import read_view
from engine.serve.transform import answer_rows
from engine.store.tiles import tiles_from, windows_at

FeatureRef = str | tuple[str | Path, str] | BatchFeatureView | RealtimeFeatureView | FeatureService
View = BatchFeatureView | RealtimeFeatureView
RowsOf = Callable[[BatchFeatureView, datetime | None, datetime], pa.Table]
_ROW, _TS, _POS = "__rivulet_row", "__rivulet_ts", "__rivulet_pos"
_UTC_MICROS = pa.timestamp("us", "UTC")


def get_historical_features(
    spine: Any,
    features: Sequence[FeatureRef],
    *,
    output: str | Path = "offline_store",
    timestamp_field: str | None = None,
    secrets_file: str | Path | None = None,
) -> pa.Table:
    """Join each feature view's committed features onto `spine`, point-in-time correct, and
    compute realtime views on its rows.

    `spine` is a pyarrow Table, a Polars or pandas DataFrame (or anything Arrow can read)
    holding every join key of the views and a timestamp column: `timestamp_field`, or its only
    timestamp column. Naive spine times are UTC. `features` names views or feature services
    as `"path/to/job.py:name"`, as `(job_path, name)` pairs, or gives the objects.

    A realtime view is computed for each spine row as serving computes a request made at
    the row's time: its request fields from the spine's columns of those names, its batch
    sources' features as of that time (the same rule as above, so None when missing or
    past `ttl`), with its resources, concurrency, rate limits and retries. For the same
    inputs and time, the row equals what serving answers.

    The result has the spine's columns and rows, unchanged and in order, then each view's
    features in declaration order, typed as declared. A feature whose name is a spine column
    or a feature of another requested view is named `<view>__<feature>`.

    Example:
        training = get_historical_features(
            spine, ["jobs/embeddings.py:text_embedding"], timestamp_field="event_time"
        )
    """
    views = [view for ref in features for view in _resolve(ref)]
    return join_features(spine, views, committed_rows(output), timestamp_field, secrets_file)


def committed_rows(output: str | Path) -> RowsOf:
    """`rows_of` for `join_features`: the rows committed under `output`."""

    def rows_of(view: BatchFeatureView, start: datetime | None, end: datetime) -> pa.Table:
        return read_view(view, output=output, start=start, end=end, ordered=not view.aggregates)

    return rows_of


def join_features(
    spine: Any,
    views: Sequence[View],
    rows_of: RowsOf,
    timestamp_field: str | None = None,
    secrets_file: str | Path | None = None,
    prefixed: bool = False,
) -> pa.Table:
    """`get_historical_features` of view objects, their stored rows (an aggregate view's
    tiles) over [start, end) given by `rows_of(view, start, end)`; with `prefixed`, every
    feature column is named `<view>__<feature>`."""
    table = _spine_table(spine)
    repeated = [name for name, n in Counter(v.name for v in views).items() if n > 1]
    if repeated:
        raise SettingsError(f"Feature view '{repeated[0]}' is requested more than once.")
    ts_column = _timestamp_column(table, timestamp_field)
    names = _output_names(table.column_names, views, prefixed)
    realtime = [view for view in views if isinstance(view, RealtimeFeatureView)]
    joined = {view.name: view for view in views if isinstance(view, BatchFeatureView)}
    joined.update((s.name, s) for view in realtime for s in view.batch_sources)
    _check_columns(table, views)
    moments = table[ts_column].cast(_UTC_MICROS, safe=False)  # naive is UTC; ns is cut to us
    found = _point_in_time(table, moments, list(joined.values()), rows_of)
    for view in views:
        if isinstance(view, BatchFeatureView):
            columns = found[view.name]
        else:
            columns = _computed(table, moments, view, found, secrets_file)
        for feature, column in zip(view.features, columns, strict=True):
            arrow_type = feature.dtype.to_arrow()
            table = table.append_column(
                pa.field(names[view.name, feature.name], arrow_type), column.cast(arrow_type)
            )
    return table


def _check_columns(table: pa.Table, views: Sequence[View]) -> None:
    """SpineError naming the first join key or request field the spine lacks."""
    for view in views:
        if isinstance(view, BatchFeatureView):
            needed, what = [k.name for k in view.join_keys], "join key"
        else:
            needed = [k.name for s in view.batch_sources for k in s.join_keys]
            what = "join key or request field"
            needed += [field.name for field in view.request_fields]
        missing = [name for name in needed if name not in table.column_names]
        if missing:
            raise SpineError(
                f"The spine has no {what} '{missing[0]}' of feature view '{view.name}'; its "
                f"columns are {', '.join(table.column_names)}."
            )


def _point_in_time(
    table: pa.Table, moments: pa.Array, views: Sequence[BatchFeatureView], rows_of: RowsOf
) -> dict[str, list[pa.Array]]:
    """Each batch view's feature columns for every spine row, by view name."""
    keys = sorted({k.name for v in views for k in v.join_keys})
    spine_keys = pa.table(
        {**{k: table[k] for k in keys}, _TS: moments, _ROW: pa.array(range(table.num_rows))}
    )
    first, last = pc.min(moments).as_py(), pc.max(moments).as_py()
    found = {}
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.register("spine", spine_keys)
        for view in views:
            if first is None:  # no spine timestamp, nothing to match
                found[view.name] = [
                    pa.nulls(table.num_rows, f.dtype.to_arrow()) for f in view.features
                ]
                continue
            if view.aggregates:
                found[view.name] = _windows(table, moments, view, rows_of, first, last)
                continue
            since = None if view.ttl is None else first - view.ttl
            rows = rows_of(view, since, last + timedelta(0, 0, 1))
            found[view.name] = _join(con, view, rows).columns
    return found


def _windows(
    table: pa.Table,
    moments: pa.Array,
    view: BatchFeatureView,
    rows_of: RowsOf,
    first: datetime,
    last: datetime,
) -> list[pa.Array]:
    """An aggregate view's feature columns at each spine row's time, from the tiles its
    windows reach."""
    tiles = rows_of(view, tiles_from(view, first), last + timedelta(0, 0, 1))
    keys = table.select([k.name for k in view.join_keys])
    return windows_at(view, tiles, keys, moments).columns


def _computed(
    table: pa.Table,
    moments: pa.Array,
    view: RealtimeFeatureView,
    found: dict[str, list[pa.Array]],
    secrets_file: str | Path | None,
) -> list[pa.Array]:
    """The realtime view's feature columns, computed on each spine row."""
    by_source: list[list[dict[str, Any]]] = []
    for source in view.sources:
        if isinstance(source, BatchFeatureView):
            columns = dict(zip((f.name for f in source.features), found[source.name], strict=True))
        else:
            columns = {field.name: table[field.name] for field in source.schema}
        by_source.append(pa.table(columns).to_pylist() if columns else [{}] * table.num_rows)
    times = moments.to_pylist()
    timed = [row for row, at in enumerate(times) if at is not None]  # a null time matches nothing
    requests = list(zip(*by_source, strict=True))
    computed = answer_rows(
        view, [requests[r] for r in timed], [times[r] for r in timed], secrets_file
    )
    answers: list[dict[str, Any] | None] = [None] * table.num_rows
    for row, answer in zip(timed, computed, strict=True):
        answers[row] = answer
    return [
        pa.array([None if a is None else a[f.name] for a in answers], f.dtype.to_arrow())
        for f in view.features
    ]


def _join(con: duckdb.DuckDBPyConnection, view: BatchFeatureView, rows: pa.Table) -> pa.Table:
    """The view's features for every spine row, in spine order. Rows sharing keys and
    timestamp are cut to the last one first, so the ASOF JOIN has a single candidate."""
    q = quote
    keys = [q(k.name) for k in view.join_keys]
    ts = q(view.timestamp_field)
    con.register("found", rows.append_column(_POS, pa.array(range(rows.num_rows), pa.int64())))
    fresh = None if view.ttl is None else f"f.{ts} >= s.{_TS} - $ttl"
    picked = ", ".join(
        f"CASE WHEN {fresh} THEN f.{q(a.name)} END" if fresh else f"f.{q(a.name)}"
        for a in view.features
    )
    on = " AND ".join([*(f"s.{k} = f.{k}" for k in keys), f"s.{_TS} >= f.{ts}"])
    same = ", ".join([*keys, ts])
    query = f"""
        WITH latest AS (
            SELECT * FROM found
            QUALIFY row_number() OVER (PARTITION BY {same} ORDER BY {_POS} DESC) = 1
        )
        SELECT {picked} FROM spine AS s ASOF LEFT JOIN latest AS f ON {on} ORDER BY s.{_ROW}"""
    try:
        return con.sql(query, params={"ttl": view.ttl} if view.ttl else None).to_arrow_table()
    except duckdb.Error as exc:
        raise SpineError(
            f"Feature view '{view.name}' cannot be joined onto the spine on "
            f"{', '.join(k.name for k in view.join_keys)}: {one_line(exc)}"
        ) from exc
    finally:
        con.unregister("found")


def _spine_table(spine: Any) -> pa.Table:
    table = as_arrow_table(spine)
    if table is not None:
        return table
    try:
        return pa.table(spine)
    except (TypeError, ValueError) as exc:
        raise SpineError(
            f"The spine is a {type(spine).__name__}; give a pyarrow Table, or a Polars or pandas "
            f"DataFrame."
        ) from exc


def _resolve(ref: FeatureRef) -> list[View]:
    """The views a reference names: a view, or a feature service's views."""
    if isinstance(ref, BatchFeatureView | RealtimeFeatureView):
        return [ref]
    if isinstance(ref, FeatureService):
        return list(ref.features)
    if isinstance(ref, str):
        job, sep, name = ref.rpartition(":")
        if not sep or not job or not name:
            raise SettingsError(f"'{ref}' does not name a feature view as 'path/to/job.py:view'.")
    elif isinstance(ref, tuple) and len(ref) == 2:
        job, name = ref
    else:
        raise SettingsError(
            f"{ref!r} does not name a feature view; use 'job.py:view', (job, view) or the view."
        )
    loaded = load_job(job)
    if name in loaded.services:
        return list(loaded.services[name].features)
    if name in loaded.realtime_views:
        return [loaded.realtime_views[name]]
    return list(loaded.select([name]))


def _timestamp_column(table: pa.Table, name: str | None) -> str:
    if name is None:
        found = [f.name for f in table.schema if pa.types.is_timestamp(f.type)]
        if len(found) != 1:
            raise SpineError(
                f"The spine has {len(found)} timestamp columns ({', '.join(found) or 'none'}); "
                f"name the one to join on with timestamp_field."
            )
        return found[0]
    if name not in table.column_names:
        raise SpineError(
            f"The spine has no column '{name}'; its columns are {', '.join(table.column_names)}."
        )
    if not (pa.types.is_timestamp(table[name].type) or pa.types.is_date(table[name].type)):
        raise SpineError(f"The spine column '{name}' is {table[name].type}, not a timestamp.")
    return name


def _output_names(
    spine_columns: Sequence[str], views: Sequence[View], prefixed: bool
) -> dict[tuple[str, str], str]:
    """Each (view, feature)'s output column: the feature's name, or `<view>__<feature>` when
    `prefixed` or that name is a spine column or a feature of another requested view."""
    counts = Counter(f.name for v in views for f in v.features)
    names = {
        (v.name, f.name): f"{v.name}__{f.name}"
        if prefixed or f.name in spine_columns or counts[f.name] > 1
        else f.name
        for v in views
        for f in v.features
    }
    clashes = [n for n, c in Counter([*spine_columns, *names.values()]).items() if c > 1]
    if clashes:
        raise SettingsError(f"The output would have two columns named '{clashes[0]}'.")
    return names
