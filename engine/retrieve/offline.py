"""Read back what a backfill committed: a feature view's rows over a time range, as Arrow.

The committed `data.parquet` files are the truth (as for `reconcile`): a file renamed into
place is read even when a crash kept it out of the ledger, and temporary files (whose names
never end in `.parquet`) never are. Each file's interval comes from its own metadata. A file
in range that cannot be read is an error naming it, not a gap in the rows.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TextIO

import duckdb
import pyarrow as pa

from engine.arrow import duckdb_cursor, quote
from engine.define.feature_views import BatchFeatureView
from engine.define.schedule import as_utc, boundary, interval_index
from engine.errors import SettingsError, StoreError, one_line
from engine.plan.job import load_job
from engine.store.parquet import UnreadableFile, committed_files
from engine.store.reconcile import quarantine_dir
from engine.store.tiles import stored_schema, tiles_from, windows_over

FORMATS = ("table", "csv", "parquet")


def read_features(
    job: str | Path,
    feature_view: str,
    *,
    output: str | Path = "offline_store",
    start: datetime | None = None,
    end: datetime | None = None,
) -> pa.Table:
    """The committed rows of `feature_view` with its timestamp in [start, end) (either bound
    may be left out; naive times are UTC), sorted by timestamp then join keys (ties keep
    file order), typed as declared. For an aggregate view, the features at each aggregation
    interval's end in range (see `aggregated_features`). An unknown view raises a
    SettingsError; a committed file in range that cannot be read raises a StoreError naming it.

    Example:
        table = read_features("jobs/embeddings.py", "text_embedding",
                              start=datetime(2024, 10, 26), end=datetime(2024, 10, 27))
    """
    [view] = load_job(job).select([feature_view])
    if view.aggregates:
        return aggregated_features(view, output=output, start=start, end=end)
    return read_view(view, output=output, start=start, end=end)


def aggregated_features(
    view: BatchFeatureView,
    *,
    output: str | Path = "offline_store",
    start: datetime | None = None,
    end: datetime | None = None,
) -> pa.Table:
    """An aggregate view's features at every aggregation interval's end in [start, end)
    (without `end`, up to the newest committed tile's), one row per entity with rows in
    its longest window there, merged from the committed tiles that window reaches."""
    since = None if start is None else tiles_from(view, as_utc(start))
    tiles = read_view(view, output=output, start=since, end=end, ordered=False)
    return windows_over(view, tiles, start and as_utc(start), end and as_utc(end))


def read_view(
    view: BatchFeatureView,
    *,
    output: str | Path = "offline_store",
    start: datetime | None = None,
    end: datetime | None = None,
    ordered: bool = True,
) -> pa.Table:
    """The committed rows of a feature view object already loaded, as stored: an aggregate
    view's tiles (see `store.tiles`), any other view's features; sorted as `read_features`
    sorts them, or in no particular order unless `ordered`.

    Example:
        table = read_view(job.feature_views["text_embedding"], output="offline_store")
    """
    start = None if start is None else as_utc(start)
    end = None if end is None else as_utc(end)
    if start is not None and end is not None and start >= end:
        raise SettingsError(
            f"The start {start:%Y-%m-%d %H:%M} is not before the end {end:%Y-%m-%d %H:%M}."
        )

    def overlaps(first: datetime, last: datetime) -> bool:
        return (end is None or first < end) and (start is None or last > start)

    unreadable: list[UnreadableFile] = []
    files = [
        f for f in committed_files(output, view.name, unreadable.append) if overlaps(f.start, f.end)
    ]
    bad = [u for u in unreadable if u.start is None or overlaps(u.start, _end(view, u.start))]
    if bad:
        raise StoreError(
            f"Feature view '{view.name}': {'; '.join(map(str, bad))}. A run or backfill moves "
            f"an unreadable file aside to {quarantine_dir(output)} and computes its interval "
            f"again; read after that, or read a range that leaves it out."
        )
    table = read_files(view, [f.path for f in files], output=output, start=start, end=end)
    if not ordered:
        return table
    order = [(view.timestamp_field, "ascending")] + [(k.name, "ascending") for k in view.join_keys]
    return table.sort_by(order)  # Arrow's sort is stable: ties keep file order


def read_files(
    view: BatchFeatureView,
    paths: Sequence[Path],
    *,
    output: str | Path,
    start: datetime | None = None,
    end: datetime | None = None,
) -> pa.Table:
    """The rows of the view's committed files at `paths` (under `output`) with the timestamp
    in [start, end), as stored, in file order: for a reader that knows its files already."""
    schema = stored_schema(view).remove_metadata()
    if not paths:
        return schema.empty_table()
    columns = ", ".join(quote(name) for name in schema.names)
    where, params = [], {"files": [str(path) for path in paths]}
    if start is not None:
        where, params["start"] = [f"{quote(view.timestamp_field)} >= $start"], start
    if end is not None:
        where, params["end"] = [*where, f"{quote(view.timestamp_field)} < $end"], end
    query = f"SELECT {columns} FROM read_parquet($files, hive_partitioning = false)"
    if where:
        query += " WHERE " + " AND ".join(where)
    with duckdb_cursor() as con:
        try:
            # A plain scan keeps file order, and files are listed oldest interval first.
            table = con.sql(query, params=params).to_arrow_table()
        except duckdb.Error as exc:
            raise SettingsError(
                f"The committed files of feature view '{view.name}' under {output} cannot be "
                f"read as its declared columns ({', '.join(schema.names)}): {one_line(exc)}. "
                f"Were they written by another definition? Backfill with overwrite to rewrite."
            ) from exc
    return table.cast(schema)


def _end(view: BatchFeatureView, start: datetime) -> datetime:
    """The end of the view's interval that starts at `start`."""
    origin, schedule = view.feature_start_time, view.batch_schedule
    return boundary(origin, schedule, interval_index(origin, schedule, start) + 1)


def write_table(
    table: pa.Table,
    format: str,
    out: str | Path | None = None,
    *,
    stdout: TextIO | None = None,
    max_rows: int = 100,
) -> None:
    """Write `table` as `format`: "table" (plain text, at most `max_rows` rows shown) or "csv"
    to `out` or standard output, or "parquet" to the file `out` (required).

    Example:
        write_table(read_features("job.py", "n_words"), "csv")
    """
    if format not in FORMATS:
        raise SettingsError(f"Unknown format '{format}'; use one of {', '.join(FORMATS)}.")
    if format == "parquet":
        if out is None:
            raise SettingsError("The parquet format writes to a file; give an output path.")
        with duckdb_cursor() as con:  # in parallel, keeping the rows' order
            con.register("written", table)
            con.execute(
                "COPY (SELECT * FROM written) TO $out (FORMAT parquet, COMPRESSION zstd)",
                {"out": str(out)},
            )
        return
    if format == "table":
        import polars as pl

        with pl.Config(tbl_rows=max_rows, tbl_cols=-1, tbl_width_chars=200, fmt_str_lengths=60):
            text = f"{pl.from_arrow(table)}\n"
    else:
        text = _csv(table)
    if out is not None:
        Path(out).write_text(text)
    else:
        (stdout or sys.stdout).write(text)


def _csv(table: pa.Table) -> str:
    """CSV text; nested values (lists, embeddings) are written as DuckDB renders them."""
    import pyarrow.csv as pacsv

    nested = [f.name for f in table.schema if pa.types.is_nested(f.type)]
    if nested:
        with duckdb.connect() as con:
            replace = ", ".join(f"CAST({quote(n)} AS VARCHAR) AS {quote(n)}" for n in nested)
            table = con.from_arrow(table).project(f"* REPLACE ({replace})").to_arrow_table()
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink)
    return sink.getvalue().to_pybytes().decode()
