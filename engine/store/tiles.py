"""Partial aggregates ("tiles"): what an aggregate view keeps offline, and the windows
merged from them, both computed by DuckDB over Arrow.

A tile holds one entity's rows of one aggregation interval, summed up in a few partial
columns per input column, `<column>__<part>` (a count, a sum, a list of values, ...;
aggregates needing the same part share it), stamped with the interval's start. A window at
moment t merges the tiles that started in [e - w, e), e being t rounded down to the
aggregation interval (the end of the last interval ended at or before t), as
`define.aggregates` states. Merging is a window function over each entity's tiles, sorted
once per entity; its cost grows with tiles plus moments asked about, not their product.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from engine.arrow import duckdb_cursor, quote
from engine.define.aggregates import (
    SPREADS,
    Aggregate,
    LifetimeWindow,
    TimeWindow,
    TimeWindowSeries,
)
from engine.define.feature_views import BatchFeatureView

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
AT, ROW = "__at", "__row"  # a point's e - interval (its last tile's start) in µs; its row
_UTC_MICROS = pa.timestamp("us", "UTC")
_LISTS = ("first", "last", "first_distinct", "last_distinct")  # with n: lists of values


@dataclass(frozen=True)
class Part:
    """One partial column: its name's suffix, its SQL over an interval's rows (`{c}` the
    input column, `{t}` the timestamp) and its Arrow type."""

    suffix: str
    sql: str
    arrow: pa.DataType


def parts(aggregate: Aggregate) -> list[Part]:
    """The partial columns a tile keeps for the aggregate."""
    function = aggregate.function
    given = aggregate.input_column.dtype.to_arrow()
    name, n, kept = function.name, function.n, " FILTER (WHERE {c} IS NOT NULL)"
    count = Part("n", "count({c})", pa.int64())
    if name == "count":
        return [count]
    if name in ("sum", "mean"):
        summed = Part("sum", "sum({c})", pa.int64() if pa.types.is_integer(given) else pa.float64())
        return [summed] if name == "sum" else [summed, count]
    if name in ("min", "max"):
        return [Part(name, name + "({c})", given)]
    if name in ("first", "last") and n is None:
        pick, when = ("arg_min", "min") if name == "first" else ("arg_max", "max")
        return [  # rows of one time in their order, as the lists keep them
            Part(name, pick + "({c}, {{'t': {t}, 'p': __pos}})" + kept, given),
            Part(f"{name}_t", when + "({t})" + kept, _UTC_MICROS),
        ]
    if name in SPREADS:
        return [
            count,
            Part("avg", "avg({c})::DOUBLE", pa.float64()),
            Part("m2", "(var_pop({c}) * count({c}))::DOUBLE", pa.float64()),
        ]
    if name in _LISTS:
        values = "(list({c} ORDER BY {t}, __pos)" + kept + ")"
        return [Part(f"{name}_{n}", _picked(name, n, values), pa.list_(given))]
    if name == "approx_count_distinct":
        return [Part("distinct", "list(DISTINCT {c})" + kept, pa.list_(given))]
    return [Part("values", "list({c})" + kept, pa.list_(given))]  # approx_percentile


def _picked(name: str, n: int | None, values: str) -> str:
    """The first or last `n` of a list of values in time order, distinct ones for
    first_distinct (by first appearance) and last_distinct (by last appearance)."""
    if name == "first_distinct":
        values = f"list_filter({values}, lambda v, i: list_position({values}, v) = i)"
    elif name == "last_distinct":
        values = f"list_filter({values}, lambda v, i: NOT list_contains({values}[i + 1:], v))"
    return f"{values}[1:{n}]" if name.startswith("first") else f"{values}[-{n}:]"


def _partial_columns(view: BatchFeatureView) -> dict[str, tuple[Aggregate, Part]]:
    """Each partial column by name, once, with an aggregate that needs it."""
    columns: dict[str, tuple[Aggregate, Part]] = {}
    for aggregate in view.aggregates:
        for part in parts(aggregate):
            columns.setdefault(f"{aggregate.column}__{part.suffix}", (aggregate, part))
    return columns


def stored_schema(view: BatchFeatureView) -> pa.Schema:
    """What the view's offline files hold: its features, or for an aggregate view its tiles
    (join keys, the interval's start as the timestamp, the partial columns)."""
    if not view.aggregates:
        return view.output_schema()
    fields = [pa.field(k.name, k.dtype.to_arrow()) for k in view.join_keys]
    fields.append(pa.field(view.timestamp_field, _UTC_MICROS))
    fields += [pa.field(name, part.arrow) for name, (_, part) in _partial_columns(view).items()]
    return pa.schema(fields)


def tile_rows(view: BatchFeatureView, rows: pa.Table) -> pa.Table:
    """The tiles of the transform's rows (the view's `row_schema`), ordered by interval then
    join keys. Rows with a null join key are left out, as they match nothing."""
    keys = ", ".join(quote(k.name) for k in view.join_keys)
    ts, micros = quote(view.timestamp_field), _micros(view.aggregation_interval)
    columns = [
        f"{part.sql.format(c=quote(aggregate.column), t=ts)} AS {quote(name)}"
        for name, (aggregate, part) in _partial_columns(view).items()
    ]
    not_null = " AND ".join(f"{quote(k.name)} IS NOT NULL" for k in view.join_keys)
    query = f"""
        SELECT {keys}, {ts} - to_microseconds(epoch_us({ts}) % {micros}) AS {ts},
               {", ".join(columns)}
        FROM rows WHERE {not_null} GROUP BY ALL ORDER BY {ts}, {keys}"""
    with duckdb_cursor() as con:
        if "__pos" in query:  # lists keep rows of one time in their order
            rows = rows.append_column("__pos", pa.array(range(rows.num_rows)))
        con.register("rows", rows)
        return con.sql(query).to_arrow_table().cast(stored_schema(view))


def windows_at(
    view: BatchFeatureView, tiles: pa.Table, keys: pa.Table, moments: pa.Array
) -> pa.Table:
    """The view's features at each moment (UTC timestamps), for the join keys in the same
    row of `keys`: one row per moment, in order. A null moment gives nulls, and null keys
    match no tile."""
    micros = _micros(view.aggregation_interval)
    values = moments.cast(_UTC_MICROS).cast(pa.int64())  # times from 1970 on: / truncates
    at = pc.subtract(pc.multiply(pc.divide(values, micros), micros), micros)
    points = keys.append_column(AT, at).append_column(ROW, pa.array(range(len(at)), pa.int64()))
    names = [quote(k.name) for k in view.join_keys]
    ts = quote(view.timestamp_field)
    stream = f"""
        SELECT * EXCLUDE ({ts}), epoch_us({ts}) AS {AT}, NULL::BIGINT AS {ROW}, TRUE AS __tile
        FROM tiles
        UNION ALL BY NAME
        SELECT {", ".join(names)}, {AT}, {ROW}, FALSE AS __tile FROM points"""
    query = _merge_query(view, stream, [ROW], lambda size, offset: _range(size, offset, micros))
    with duckdb_cursor() as con:
        con.register("tiles", tiles)
        con.register("points", points)
        found = con.sql(f"SELECT * FROM ({query}) WHERE {ROW} IS NOT NULL ORDER BY {ROW}")
        found = found.to_arrow_table()
    schema = pa.schema([pa.field(f.name, f.dtype.to_arrow()) for f in view.features])
    found = found.select(schema.names).cast(schema)
    missing = pc.is_null(at)
    if not pc.any(missing).as_py():
        return found
    columns = [pc.if_else(missing, pa.nulls(len(found), c.type), c) for c in found.columns]
    return pa.table(columns, schema=schema)


def windows_over(
    view: BatchFeatureView, tiles: pa.Table, start: datetime | None, end: datetime | None
) -> pa.Table:
    """The view's features at every aggregation interval's end e in [start, end), for each
    entity with rows in its longest window there: join keys, e as the timestamp, features,
    sorted by timestamp then keys. Without `start`, from the first tile's end; without
    `end`, up to the last tile's end. Each entity's tiles are laid on a dense grid of
    intervals, so a window is a fixed number of rows."""
    micros = _micros(view.aggregation_interval)
    names = [quote(k.name) for k in view.join_keys]
    keys, ts = ", ".join(names), quote(view.timestamp_field)
    reach = _longest(view)
    with duckdb_cursor() as con:
        con.register("tiles", tiles)
        span = f"min(epoch_us({ts})) + {micros}, max(epoch_us({ts})) + {micros}"
        [(first, last)] = con.sql(f"SELECT {span} FROM tiles").fetchall()
        if first is None:
            return view.output_schema().empty_table()
        first = first if start is None else -_floor(-_us(start), micros)
        last = last if end is None else _floor(_us(end) - 1, micros)
        until = f"{last - micros}"
        if reach is not None:
            until = f"least(max(epoch_us({ts})) + {reach - micros}, {until})"
        stream = f"""
            SELECT * FROM (
                SELECT {keys}, unnest(generate_series(first_at, last_at, {micros})) AS {AT}
                FROM (SELECT {keys}, min(epoch_us({ts})) AS first_at, {until} AS last_at
                      FROM tiles GROUP BY ALL)
            ) AS grid
            LEFT JOIN (SELECT * EXCLUDE ({ts}), epoch_us({ts}) AS {AT}, TRUE AS __tile FROM tiles)
            USING ({keys}, {AT})"""
        query = _merge_query(view, stream, [], lambda size, offset: _rows(size, offset, micros))
        features = ", ".join(quote(f.name) for f in view.features)
        table = con.sql(f"""
            SELECT {keys}, make_timestamp({AT} + {micros})::TIMESTAMPTZ AS {ts}, {features}
            FROM ({query}) WHERE __present > 0 AND {AT} >= {first - micros}
            ORDER BY {AT}, {keys}""").to_arrow_table()
    return table.cast(view.output_schema())


def _merge_query(
    view: BatchFeatureView,
    stream: str,
    carried: list[str],
    frame: Callable[[int | None, int], str],
) -> str:
    """The stream's join keys, AT and `carried` columns with every feature merged over its
    window, plus `__present`: the tiles in the longest window. The stream has the partial
    columns and `__tile` (true on a tile's row). `frame(size, offset)` is the frame of a
    window of that size ending `offset` before e, in microseconds (None: unbounded). Each
    windowed expression is computed once, however many features use it."""
    keys = ", ".join(quote(k.name) for k in view.join_keys)
    frames: dict[str, str] = {}
    windowed: dict[str, str] = {}

    def over(sql: str, size: int | None, offset: int) -> str:
        name = frames.setdefault(frame(size, offset), f"w{len(frames)}")
        return windowed.setdefault(f"{sql} OVER {name}", f"__m{len(windowed)}")

    finished = [
        f"{_merge(aggregate, over)} AS {quote(aggregate.name)}" for aggregate in view.aggregates
    ]
    finished.append(f"{over('count(*) FILTER (WHERE __tile)', _longest(view), 0)} AS __present")
    windows = ", ".join(
        f"{name} AS (PARTITION BY {keys} ORDER BY {AT} {text})" for text, name in frames.items()
    )
    inner = ", ".join(f"{sql} AS {alias}" for sql, alias in windowed.items())
    return f"""
        SELECT {", ".join([keys, AT, *carried, *finished])} FROM (
            SELECT *, {inner} FROM ({stream}) WINDOW {windows}
        )"""


def _merge(aggregate: Aggregate, over: Callable[[str, int | None, int], str]) -> str:
    """The SQL merging the aggregate's partial columns in its window into its feature (a
    list of one value per window, for a series); `over(sql, size, offset)` names a windowed
    expression."""
    merged = [_merge_window(aggregate, over, *_span(window)) for window in aggregate.windows]
    if isinstance(aggregate.time_window, TimeWindowSeries):
        return f"[{', '.join(merged)}]"
    return merged[0]


def _span(window: TimeWindow | LifetimeWindow) -> tuple[int | None, int]:
    """A window's size and how far before e it ends, in microseconds (None: unbounded)."""
    if isinstance(window, LifetimeWindow):
        return None, 0
    return _micros(window.window_size), -_micros(window.offset)


def _merge_window(
    aggregate: Aggregate,
    over: Callable[[str, int | None, int], str],
    size: int | None,
    offset: int,
) -> str:
    """`_merge` over one window of `size` ending `offset` before e."""
    name, n = aggregate.function.name, aggregate.function.n

    def merged(sql: str) -> str:
        return over(sql, size, offset)

    def part(suffix: str) -> str:
        return quote(f"{aggregate.column}__{suffix}")

    if name == "count":
        return "coalesce(" + merged(f"sum({part('n')})") + ", 0)"
    if name == "sum":
        return merged(f"sum({part('sum')})")
    if name == "mean":
        total, count = merged(f"sum({part('sum')})"), merged(f"sum({part('n')})")
        return f"{total}::DOUBLE / nullif({count}, 0)"
    if name in ("min", "max"):
        return merged(f"{name}({part(name)})")
    if name in ("first", "last") and n is None:
        pick = "arg_min" if name == "first" else "arg_max"
        return merged(f"{pick}({part(name)}, {part(name + '_t')})")
    if name in SPREADS:  # two passes: the window's mean, then each tile's spread about it
        count, mean, m2 = part("n"), part("avg"), part("m2")
        total, weighted = merged(f"sum({count})"), merged(f"sum({count} * {mean})")
        tiles = merged(f"list({{'n': {count}, 'a': {mean}, 'm': {m2}}}) FILTER ({count} > 0)")
        about = f"x.a - {weighted} / {total}"
        spread = f"list_sum(list_transform({tiles}, lambda x: x.m + x.n * ({about}) ** 2))"
        less = 1 if name.endswith("samp") else 0
        variance = f"CASE WHEN {total} > {less} THEN {spread} / ({total} - {less}) END"
        return f"sqrt({variance})" if name.startswith("stddev") else variance
    suffix = {"approx_count_distinct": "distinct", "approx_percentile": "values"}
    listed = merged(f"list({part(suffix.get(name, f'{name}_{n}'))} ORDER BY {AT})")
    values = f"flatten({listed})"
    if name in _LISTS:
        return f"nullif({_picked(name, n, values)}, [])"
    if name == "approx_count_distinct":
        return f"nullif(len(list_distinct({values})), 0)"
    return f"list_aggregate({values}, 'quantile_cont', {aggregate.function.percentile})"


def _range(size: int | None, offset: int, micros: int) -> str:
    """Tiles starting in [e - offset - size, e - offset) as a frame at the point e - interval
    of a stream ordered by time (all tiles before, without a size)."""
    if size is None:
        return "RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"
    return f"RANGE BETWEEN {size - micros + offset} PRECEDING AND {offset} PRECEDING"


def _rows(size: int | None, offset: int, micros: int) -> str:
    """`_range` on a dense grid of one row per interval."""
    if size is None:
        return "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"
    return (
        f"ROWS BETWEEN {(size + offset) // micros - 1} PRECEDING AND {offset // micros} PRECEDING"
    )


def _longest(view: BatchFeatureView) -> int | None:
    """The microseconds back from e the view's windows reach; None for a lifetime window."""
    reaches = []
    for window in (window for aggregate in view.aggregates for window in aggregate.windows):
        size, offset = _span(window)
        if size is None:
            return None
        reaches.append(size + offset)
    return max(reaches)


def lookback(view: BatchFeatureView) -> timedelta | None:
    """How far back of an interval's end the view's windows reach; None for a lifetime
    window."""
    longest = _longest(view)
    return None if longest is None else timedelta(microseconds=longest)


def tiles_from(view: BatchFeatureView, moment: datetime) -> datetime | None:
    """The start of the oldest tile a window at `moment` reaches (None: all of them)."""
    longest = _longest(view)
    if longest is None:
        return None
    e = _floor(_us(moment), _micros(view.aggregation_interval))
    return _EPOCH + timedelta(microseconds=e - longest)


def _micros(duration: timedelta | None) -> int:
    assert duration is not None, "an aggregate view has an aggregation_interval"
    return duration // timedelta(microseconds=1)


def _us(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _floor(micros: int, step: int) -> int:
    return micros - micros % step
