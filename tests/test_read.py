"""Reading sources: every config and format, the [start, end) window pushed down, UTC out."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine import (
    Attribute,
    BatchFeatureView,
    BatchSource,
    DuckDBConfig,
    Entity,
    FileConfig,
    Int64,
    PythonConfig,
    Timestamp,
    backfill,
    batch_feature_view,
)
from engine.arrow import to_rows
from engine.define.sources import BatchConfig
from engine.errors import SourceError
from engine.read.sources import read_window

START = datetime(2024, 10, 27, tzinfo=UTC)
END = datetime(2024, 10, 28, tzinfo=UTC)
UTC_MICROS = pa.timestamp("us", tz="UTC")
PARIS = ZoneInfo("Europe/Paris")
TINY = timedelta(microseconds=1)

# Rows around the window [START, END), naive timestamps (read as UTC).
BOUNDARY_TIMES = [
    datetime(2024, 10, 26, 12),
    datetime(2024, 10, 27) - TINY,
    datetime(2024, 10, 27),  # exactly START: included
    datetime(2024, 10, 27, 12),
    datetime(2024, 10, 28) - TINY,
    datetime(2024, 10, 28),  # exactly END: excluded
    datetime(2024, 10, 29),
]
IN_WINDOW = [2, 3, 4]


def boundary_rows() -> pa.Table:
    n = len(BOUNDARY_TIMES)
    return pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "user_id": [f"u{i % 2}" for i in range(n)],
            "ts": pa.array(BOUNDARY_TIMES, pa.timestamp("us")),
            "amount": [i * 1.5 for i in range(n)],
        }
    )


def declare(config: BatchConfig, *, micro_batch_size: int = 10_000) -> BatchFeatureView:
    """A feature view over `config` (source 'src'), windowed on its column 'ts'."""

    @batch_feature_view(
        name="view",
        mode="pyarrow",
        sources=[BatchSource(name="src", batch_config=config)],
        entities=[Entity(name="user", join_keys=["user_id"])],
        features=[Attribute("doubled", Int64)],
        batch_schedule="1d",
        feature_start_time=datetime(2024, 10, 26),
        timestamp_field="ts",
        micro_batch_size=micro_batch_size,
    )
    def view(table: pa.Table) -> pa.Table:
        return table

    return view


def read(config: BatchConfig, **settings: Any) -> pa.Table:
    """Every row `read_window` yields for [START, END), as one table."""
    view = declare(config, **settings)
    batches = list(read_window(view, view.sources[0], START, END))
    assert batches, "the window is empty"
    return pa.Table.from_batches(batches)


def source_error(config: BatchConfig) -> str:
    """The message of the SourceError reading [START, END) of `config` raises."""
    with pytest.raises(SourceError) as caught:
        list(read_window(view := declare(config), view.sources[0], START, END))
    return str(caught.value)


def write_with_duckdb(table: pa.Table, path: Path, options: str) -> Path:
    """Write `table` with DuckDB's `COPY ... TO path (options)`."""
    con = duckdb.connect()
    con.register("source_rows", table)
    con.execute(f"COPY source_rows TO '{path}' ({options})")
    con.close()
    return path


CSV = "FORMAT csv, HEADER"
JSON_LINES = "FORMAT json, TIMESTAMPFORMAT '%Y-%m-%d %H:%M:%S.%f'"  # one precision throughout


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# File formats and layouts.


@pytest.mark.parametrize("file_format", ["parquet", "csv", "json"])
def test_each_file_format_reads_the_window(file_format: str, tmp_path: Path) -> None:
    path = tmp_path / f"rows.{file_format}"
    if file_format == "parquet":
        pq.write_table(boundary_rows(), path)
    else:
        write_with_duckdb(boundary_rows(), path, CSV if file_format == "csv" else JSON_LINES)

    table = read(FileConfig(uri=str(path), file_format=file_format))  # type: ignore[arg-type]
    assert table["id"].to_pylist() == IN_WINDOW
    assert table.schema.field("ts").type == UTC_MICROS
    # Naive timestamps are read as UTC: the wall clock is kept, labelled UTC.
    assert table["ts"].to_pylist() == [
        utc(2024, 10, 27),
        utc(2024, 10, 27, 12),
        utc(2024, 10, 28) - TINY,
    ]
    assert table["amount"].to_pylist() == [3.0, 4.5, 6.0]


def test_json_lines_with_mixed_second_fractions_are_read(tmp_path: Path) -> None:
    # DuckDB's and Polars' JSON writers omit the fraction on whole seconds:
    # "2024-10-27 00:00:00" next to "2024-10-27 23:59:59.999999".
    path = write_with_duckdb(boundary_rows(), tmp_path / "rows.json", "FORMAT json")
    assert '"2024-10-27 00:00:00"' in path.read_text()
    table = read(FileConfig(uri=str(path), file_format="json"))
    assert table["id"].to_pylist() == IN_WINDOW
    assert table.schema.field("ts").type == UTC_MICROS


def test_a_glob_reads_only_the_files_it_matches(tmp_path: Path) -> None:
    rows = boundary_rows()
    for part in range(3):
        pq.write_table(rows.slice(part * 3, 3), tmp_path / f"part-{part}.parquet")
    pq.write_table(rows.slice(3, 1), tmp_path / "unmatched.parquet")

    table = read(FileConfig(uri=str(tmp_path / "part-*.parquet")))
    assert sorted(table["id"].to_pylist()) == IN_WINDOW


def test_a_directory_is_read_recursively_for_its_format(tmp_path: Path) -> None:
    rows = boundary_rows()
    folder = tmp_path / "events"
    (folder / "a" / "b").mkdir(parents=True)
    (folder / "c").mkdir()
    pq.write_table(rows.slice(0, 3), folder / "top.parquet")
    pq.write_table(rows.slice(3, 2), folder / "a" / "b" / "deep.parquet")
    pq.write_table(rows.slice(5), folder / "c" / "side.parquet")
    (folder / "README.txt").write_text("not data")
    write_with_duckdb(rows.slice(3, 1), folder / "c" / "stray.csv", CSV)

    table = read(FileConfig(uri=str(folder)))
    assert sorted(table["id"].to_pylist()) == IN_WINDOW


# DuckDB queries.


def test_a_duckdb_query_joins_and_computes(tmp_path: Path) -> None:
    events, users = tmp_path / "events.parquet", tmp_path / "users.parquet"
    pq.write_table(boundary_rows(), events)
    pq.write_table(pa.table({"user_id": ["u0", "u1"], "country": ["FR", "JP"]}), users)
    query = f"""
        SELECT e.id, e.user_id, e.ts, e.amount * 2 AS doubled, u.country
        FROM read_parquet('{events}') AS e JOIN read_parquet('{users}') AS u USING (user_id)
        ORDER BY e.id
    """
    table = read(DuckDBConfig(query=query))
    assert table.select(["id", "doubled", "country"]).to_pylist() == [
        {"id": 2, "doubled": 6.0, "country": "FR"},
        {"id": 3, "doubled": 9.0, "country": "JP"},
        {"id": 4, "doubled": 12.0, "country": "FR"},
    ]
    assert table.schema.field("ts").type == UTC_MICROS


def test_a_duckdb_query_can_cast_a_text_timestamp(tmp_path: Path) -> None:
    path = tmp_path / "text.parquet"
    rows = boundary_rows()
    pq.write_table(rows.set_column(2, "ts", rows["ts"].cast(pa.string())), path)
    query = f"SELECT id, user_id, CAST(ts AS TIMESTAMP) AS ts FROM read_parquet('{path}')"
    assert read(DuckDBConfig(query=query))["id"].to_pylist() == IN_WINDOW


def test_a_duckdb_query_may_end_with_a_semicolon(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    pq.write_table(boundary_rows(), path)
    query = f"SELECT * FROM read_parquet('{path}');\n"
    assert read(DuckDBConfig(query=query))["id"].to_pylist() == IN_WINDOW


# Python loaders.

FRAME_KINDS: dict[str, Callable[[pa.Table], Any]] = {
    "polars": pl.from_arrow,
    "polars-lazy": lambda table: pl.from_arrow(table).lazy(),  # type: ignore[union-attr]
    "pandas": lambda table: table.to_pandas(),
    "arrow": lambda table: table,
}


@pytest.mark.parametrize("kind", sorted(FRAME_KINDS))
def test_a_python_loader_may_return_any_frame(kind: str) -> None:
    calls: list[tuple[datetime, datetime]] = []

    def loader(start_time: datetime, end_time: datetime) -> Any:
        calls.append((start_time, end_time))
        return FRAME_KINDS[kind](boundary_rows())  # every row: the engine applies the window

    table = read(PythonConfig(loader=loader))
    assert calls == [(START, END)]
    assert table["id"].to_pylist() == IN_WINDOW
    assert table.schema.field("ts").type == UTC_MICROS
    assert table["ts"].to_pylist()[0] == utc(2024, 10, 27)


# Time zones and the window bounds.

# Instants around the window; read as Paris wall-clock time they would fall the other way.
ZONED_INSTANTS = [utc(2024, 10, 26, 23, 30), utc(2024, 10, 27, 1, 30), utc(2024, 10, 27, 23, 30)]


def paris_rows() -> pa.Table:
    return pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "user_id": ["u0", "u1", "u0"],
            "ts": pa.array(ZONED_INSTANTS, UTC_MICROS).cast(pa.timestamp("us", tz="Europe/Paris")),
        }
    )


def zoned_parquet(tmp_path: Path) -> BatchConfig:
    pq.write_table(paris_rows(), tmp_path / "paris.parquet")
    return FileConfig(uri=str(tmp_path / "paris.parquet"))


def zoned_csv(tmp_path: Path) -> BatchConfig:
    lines = ["id,user_id,ts"] + [
        f"{i},u0,{moment.astimezone(PARIS).isoformat(sep=' ')}"
        for i, moment in enumerate(ZONED_INSTANTS, start=1)
    ]
    (tmp_path / "paris.csv").write_text("\n".join(lines) + "\n")
    return FileConfig(uri=str(tmp_path / "paris.csv"), file_format="csv")


def zoned_loader(kind: str) -> Callable[[Path], BatchConfig]:
    return lambda _: PythonConfig(
        loader=lambda start_time, end_time: FRAME_KINDS[kind](paris_rows())
    )


ZONED_SOURCES: dict[str, Callable[[Path], BatchConfig]] = {
    "parquet": zoned_parquet,
    "csv-offsets": zoned_csv,
    **{f"loader-{kind}": zoned_loader(kind) for kind in FRAME_KINDS},
}


@pytest.mark.parametrize("source", sorted(ZONED_SOURCES))
def test_zoned_timestamps_are_converted_to_utc(source: str, tmp_path: Path) -> None:
    table = read(ZONED_SOURCES[source](tmp_path))
    assert table.schema.field("ts").type == UTC_MICROS
    assert table["id"].to_pylist() == [2, 3]
    assert table["ts"].to_pylist() == ZONED_INSTANTS[1:]


def arrow_loader(table: pa.Table) -> BatchConfig:
    return PythonConfig(loader=lambda start_time, end_time: table)


def parquet_or_loader(reader: str, rows: pa.Table, tmp_path: Path) -> BatchConfig:
    """`rows` in a Parquet file read through DuckDB, or returned by a Python loader."""
    if reader == "python":
        return arrow_loader(rows)
    pq.write_table(rows, tmp_path / "rows.parquet", row_group_size=1_500)
    return FileConfig(uri=str(tmp_path / "rows.parquet"))


@pytest.mark.parametrize("reader", ["duckdb", "python"])
def test_the_window_includes_its_start_and_excludes_its_end(reader: str, tmp_path: Path) -> None:
    rows = boundary_rows().slice(1, 5)  # just before START, START, inside, just before END, END
    table = read(parquet_or_loader(reader, rows, tmp_path))
    assert table["ts"].to_pylist() == [utc(2024, 10, 27), utc(2024, 10, 27, 12), END - TINY]


def test_an_empty_window_yields_nothing(tmp_path: Path) -> None:
    pq.write_table(boundary_rows(), tmp_path / "rows.parquet")
    view = declare(FileConfig(uri=str(tmp_path / "rows.parquet")))
    assert list(read_window(view, view.sources[0], utc(2024, 11, 1), utc(2024, 11, 2))) == []


# Micro-batches.

ROWS = 5_000


def shuffled_rows() -> pa.Table:
    """ROWS rows inside the window, ids in source order, timestamps deliberately not sorted."""
    seconds = [i * 7919 % ROWS * 10 for i in range(ROWS)]
    return pa.table(
        {
            "id": pa.array(range(ROWS), pa.int64()),
            "user_id": [f"u{i % 5}" for i in range(ROWS)],
            "ts": pa.array(
                [datetime(2024, 10, 27) + timedelta(seconds=s) for s in seconds], pa.timestamp("us")
            ),
        }
    )


@pytest.mark.parametrize("reader", ["duckdb", "python"])
@pytest.mark.parametrize("size", [1_000, 777])
def test_micro_batches_hold_at_most_k_rows_in_source_order(
    reader: str, size: int, tmp_path: Path
) -> None:
    view = declare(parquet_or_loader(reader, shuffled_rows(), tmp_path), micro_batch_size=size)

    batches = list(read_window(view, view.sources[0], START, END))
    assert all(0 < batch.num_rows <= size for batch in batches)
    assert len(batches) >= -(-ROWS // size)
    ids = [i for batch in batches for i in batch.column("id").to_pylist()]
    assert ids == list(range(ROWS))


# Errors name the feature view, the source and what is wrong.


@pytest.mark.parametrize("reader", ["duckdb", "python"])
def test_a_missing_timestamp_column_is_named(reader: str, tmp_path: Path) -> None:
    rows = boundary_rows().rename_columns(["id", "user_id", "event_time", "amount"])
    message = source_error(parquet_or_loader(reader, rows, tmp_path))
    assert "Feature view 'view'" in message
    assert "source 'src'" in message
    assert "no column 'ts'" in message
    assert "its columns are id, user_id, event_time, amount" in message


@pytest.mark.parametrize(
    ("reader", "type_name"),
    [("parquet", "VARCHAR"), ("csv", "VARCHAR"), ("python", "string")],
)
def test_a_text_timestamp_column_is_named_with_its_type(
    reader: str, type_name: str, tmp_path: Path
) -> None:
    rows = pa.table({"user_id": ["u0", "u1"], "ts": ["yesterday", "today"]})
    config: BatchConfig
    if reader == "parquet":
        pq.write_table(rows, tmp_path / "rows.parquet")
        config = FileConfig(uri=str(tmp_path / "rows.parquet"))
    elif reader == "csv":
        config = FileConfig(
            uri=str(write_with_duckdb(rows, tmp_path / "rows.csv", CSV)), file_format="csv"
        )
    else:
        config = arrow_loader(rows)
    message = source_error(config)
    assert "Feature view 'view'" in message
    assert "source 'src'" in message
    assert f"column 'ts' of source 'src' is {type_name}, not a timestamp" in message


@pytest.mark.parametrize("layout", ["file", "directory", "glob"])
def test_a_missing_path_is_named(layout: str, tmp_path: Path) -> None:
    uri = {
        "file": tmp_path / "missing.parquet",
        "directory": tmp_path,  # exists, but holds no Parquet file
        "glob": tmp_path / "missing-*.parquet",
    }[layout]
    message = source_error(FileConfig(uri=str(uri)))
    assert "Feature view 'view'" in message
    assert f"source 'src' (parquet files at '{uri}') cannot be read" in message
    assert "No files found" in message


def test_a_lazy_loader_over_a_missing_file_is_a_source_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.parquet"

    def scan_events(start_time: datetime, end_time: datetime) -> pl.LazyFrame:
        return pl.scan_parquet(missing)

    message = source_error(PythonConfig(loader=scan_events))
    assert "Feature view 'view'" in message
    assert "the loader 'scan_events' of source 'src'" in message
    assert str(missing) in message


# End to end: only the interval's rows reach the transform, and they are written.


def test_rows_outside_an_interval_never_reach_the_transform(
    write_job: Callable[..., Path], tmp_path: Path
) -> None:
    job = write_job(
        """
@batch_feature_view(name="view", mode="python", sources=[events], entities=[user],
    features=[Attribute("hour", Int64)], batch_schedule="1d",
    feature_start_time=datetime(2024, 10, 26), micro_batch_size=7)
def view(row, context):
    if not context.start_time <= row["timestamp"] < context.end_time:
        raise ValueError(f"{row['timestamp']} is outside {context.start_time}..{context.end_time}")
    return {"hour": row["timestamp"].hour}
"""
    )
    # The events span 2024-10-26 to 2024-10-28; only the last two days are materialized.
    summary = backfill(job, datetime(2024, 10, 27), datetime(2024, 10, 29), output=tmp_path / "o")
    assert summary.ok, summary.failed
    assert summary.rows_by_view == {"view": 96}

    per_interval = duckdb.sql(
        f"""
        SELECT interval_start, count(*), min(timezone('UTC', timestamp)),
               max(timezone('UTC', timestamp)), count(DISTINCT hour)
        FROM read_parquet('{tmp_path}/o/view/*/data.parquet', hive_partitioning = true)
        GROUP BY interval_start ORDER BY interval_start
        """
    ).fetchall()
    assert per_interval == [
        ("2024-10-27T00-00-00Z", 48, datetime(2024, 10, 27), datetime(2024, 10, 27, 23, 30), 24),
        ("2024-10-28T00-00-00Z", 48, datetime(2024, 10, 28), datetime(2024, 10, 28, 23, 30), 24),
    ]


def test_a_job_over_zoned_csv_files_writes_utc(tmp_path: Path) -> None:
    folder = tmp_path / "events"
    folder.mkdir()
    zoned_csv(folder)  # writes events/paris.csv
    job = tmp_path / "zoned.py"
    job.write_text(
        f"""
from datetime import datetime
import polars as pl
from engine import *

events = BatchSource(name="events", batch_config=FileConfig(uri={str(folder)!r},
    file_format="csv", timestamp_field="ts"))

@batch_feature_view(name="view", mode="polars", sources=[events],
    entities=[Entity(name="user", join_keys=["user_id"])],
    features=[Attribute("hour", Int64)], batch_schedule="1d",
    feature_start_time=datetime(2024, 10, 26))
def view(df):
    return df.select("user_id", "ts", pl.col("ts").dt.hour().cast(pl.Int64).alias("hour"))
"""
    )
    summary = backfill(job, datetime(2024, 10, 27), datetime(2024, 10, 28), output=tmp_path / "o")
    assert summary.ok, summary.failed
    assert summary.rows_by_view == {"view": 2}
    written = pq.read_table(
        tmp_path / "o" / "view" / "interval_start=2024-10-27T00-00-00Z" / "data.parquet"
    )
    assert written.schema.field("ts").type == UTC_MICROS
    assert written.select(["ts", "hour"]).to_pylist() == [
        {"ts": ZONED_INSTANTS[1], "hour": 1},
        {"ts": ZONED_INSTANTS[2], "hour": 23},
    ]


def test_python_rows_carry_utc_timestamps_as_pyarrow_would():
    paris = pa.timestamp("us", "Europe/Paris")
    batch = pa.record_batch(
        {
            "at": pa.array([datetime(2024, 10, 26, 6, 30, 0, 123456), None], Timestamp.to_arrow()),
            "paris": pa.array([datetime(2024, 10, 26, 6), None], paris),
            "naive": pa.array([datetime(2024, 10, 26), None], pa.timestamp("ms")),
            "n": [1, 2],
        }
    )
    rows, expected = to_rows(batch), batch.to_pylist()
    assert rows == expected  # the same instants and values
    assert rows[0]["at"].tzinfo is UTC and rows[1]["at"] is None
    assert rows[0]["paris"].tzinfo == expected[0]["paris"].tzinfo
    assert rows[0]["naive"].tzinfo is None
