"""Each source is probed once before a run or `validate`: every problem is reported together,
and nothing is written."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from engine import BatchSource, PythonConfig
from engine.errors import DefinitionError
from tests.conftest import make_events, run_cli
from tests.test_read import boundary_rows, write_with_duckdb

COLUMNS = "user_id, timestamp, text, amount, quantity"
FIRST_DAY = ("--start", "2024-10-26", "--end", "2024-10-27")
BROKEN = """
gone = BatchSource("gone", batch_config=FileConfig(uri=EVENTS.replace("events", "gone-*"),
    timestamp_field="timestamp"))
untimed = BatchSource("untimed", batch_config=FileConfig(uri=EVENTS, timestamp_field="event_time"))
as_text = BatchSource("as_text", batch_config=DuckDBConfig(
    query=f"SELECT user_id, CAST(timestamp AS VARCHAR) AS timestamp FROM '{EVENTS}'"))
account = Entity(name="account", join_keys=[Field("account", String)])
DAILY = dict(batch_schedule="1d", feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("n", Int64)])

@batch_feature_view(name="from_gone", mode="python", sources=[gone], entities=[user], **DAILY)
def from_gone(row):
    return {"n": 1}

@batch_feature_view(name="untimed_view", mode="python", sources=[untimed],
    entities=[user, account], **DAILY)
def untimed_view(row):
    return {"n": 1}

@batch_feature_view(name="text_times", mode="polars", sources=[as_text], entities=[user],
    timestamp_field="timestamp", **DAILY)
def text_times(df):
    return df.with_columns(n=pl.lit(1))

@batch_feature_view(name="per_account", mode="polars", sources=[events], entities=[account],
    **DAILY)
def per_account(df):
    return df.select("timestamp", pl.lit(1).alias("n"))

@batch_feature_view(name="fine", mode="python", sources=[events], entities=[user], **DAILY)
def fine(row):
    return {"n": 1}
"""


def no_account(view: str, source: str) -> str:
    return (
        f"Feature view '{view}': source '{source}' has no column 'account' for the join key of "
        f"entity 'account', and the transform does not name it, so cannot return it; its "
        f"columns are {COLUMNS}. Rename the join key or the column (in a DuckDBConfig query, "
        f"for example)."
    )


def test_source_problems_stop_a_run_before_any_work(write_job, events_file, tmp_path) -> None:
    job = write_job(BROKEN)
    gone = str(events_file).replace("events", "gone-*")
    expected = [
        f"Feature view 'from_gone': source 'gone' (parquet files at '{gone}') cannot be read: "
        f'IO Error: No files found that match the pattern "{gone}"',
        "Feature view 'untimed_view': source 'untimed' has no column 'event_time' to filter the "
        f"interval on; its columns are {COLUMNS}. Set timestamp_field to one of them. "
        + no_account("untimed_view", "untimed"),
        "Feature view 'text_times': column 'timestamp' of source 'as_text' is VARCHAR, not a "
        "timestamp; cast it in a DuckDBConfig query or fix the data.",
        no_account("per_account", "events"),
    ]
    store = tmp_path / "o"
    year = ("--start", "2024-10-26", "--end", "2025-10-26")
    for command in (("backfill", job, *year), ("run", job, "--until", "2025-10-26")):
        result = run_cli(*command, "--output", store)
        assert result.returncode == 2
        assert result.stderr.removeprefix("Source error: ").rstrip("\n").split("\n\n") == expected
        assert result.stdout == ""
        assert not store.exists()
    validate = run_cli("validate", job)
    assert validate.returncode == 2
    assert validate.stderr.removeprefix("Source error: ").rstrip("\n").split("\n\n") == expected


def test_a_join_key_the_transform_names_may_be_missing_from_the_source(write_job, tmp_path):
    job = write_job(
        """
account = Entity(name="account", join_keys=[Field("account", String)])
DAILY = dict(batch_schedule="1d", feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("n", Int64)], entities=[account], sources=[events])

@batch_feature_view(name="returns_it", mode="python", **DAILY)
def returns_it(row):
    return {"account": "a-" + row["user_id"], "n": 1}

@batch_feature_view(name="adds_it", mode="polars", **DAILY)
def adds_it(df):
    return df.select(pl.col("user_id").alias("account"), "timestamp", n=pl.lit(1))
"""
    )
    assert run_cli("validate", job).returncode == 0
    result = run_cli("backfill", job, *FIRST_DAY, "--output", tmp_path / "o", "--json")
    assert result.returncode == 0, result.stderr
    assert '"rows_by_feature_view": {\n    "returns_it": 48,\n    "adds_it": 48\n  }' in (
        result.stdout
    )


def test_json_text_timestamps_pass_the_probe(write_job, tmp_path: Path) -> None:
    # DuckDB's JSON sniffer reads ISO timestamps of mixed precision as VARCHAR; the reader
    # casts them, and so does the probe.
    path = write_with_duckdb(boundary_rows(), tmp_path / "rows.json", "FORMAT json")
    job = write_job(
        f"""
rows = BatchSource("rows", batch_config=FileConfig(uri={str(path)!r}, file_format="json",
    timestamp_field="ts"))

@batch_feature_view(name="view", mode="python", sources=[rows], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("n", Int64)])
def view(row):
    return {{"n": row["id"]}}
"""
    )
    assert run_cli("validate", job).returncode == 0
    result = run_cli(
        "backfill", job, "--start", "2024-10-27", "--end", "2024-10-28", "--output", tmp_path / "o"
    )
    assert result.returncode == 0, result.stderr
    written = pq.read_table(next((tmp_path / "o" / "view").rglob("*.parquet")))
    assert written["n"].to_pylist() == [2, 3, 4]


def test_python_loaders_are_not_probed(write_job, tmp_path: Path) -> None:
    # Describing a loader's rows would mean calling it: it runs only for an interval.
    job = write_job(
        """
def load(start_time, end_time):
    raise RuntimeError("the loader ran")

loaded = BatchSource("loaded", batch_config=PythonConfig(loader=load, timestamp_field="ts"))

@batch_feature_view(name="view", mode="python", sources=[loaded], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("n", Int64)])
def view(row):
    return {"n": 1}
"""
    )
    assert run_cli("validate", job).returncode == 0
    result = run_cli("backfill", job, *FIRST_DAY, "--output", tmp_path / "o")
    assert result.returncode == 1
    assert "the loader 'load' of source 'loaded' raised RuntimeError: the loader ran" in (
        result.stderr
    )


def load_window(start_time: datetime, end_time: datetime) -> Any:
    return make_events()


def load_positionally(start: datetime, end: datetime) -> Any:
    return make_events()


def load_for_region(start_time: datetime, end_time: datetime, region: str) -> Any:
    return make_events()


def load_anything(**window: datetime) -> Any:
    return make_events()


@pytest.mark.parametrize(
    "loader",
    [load_window, load_anything, functools.partial(load_for_region, region="eu")],
)
def test_a_loader_taking_the_window_by_keyword_is_accepted(loader: Callable[..., Any]) -> None:
    assert BatchSource("s", batch_config=PythonConfig(loader=loader)).batch_config.loader is loader


@pytest.mark.parametrize(
    ("loader", "name", "takes"),
    [
        (load_positionally, "load_positionally", "(start, end)"),
        (load_for_region, "load_for_region", "(start_time, end_time, region)"),
        (lambda: None, "<lambda>", "()"),
    ],
)
def test_a_loader_that_cannot_take_the_window_is_a_definition_error(
    loader: Callable[..., Any], name: str, takes: str
) -> None:
    with pytest.raises(DefinitionError) as caught:
        PythonConfig(loader=loader)
    assert str(caught.value) == (
        f"PythonConfig: the loader '{name}' takes {takes}; it must accept start_time and "
        f"end_time as keyword arguments: loader(start_time=..., end_time=...)."
    )


def test_a_loader_that_is_not_callable_is_a_definition_error(write_job) -> None:
    job = write_job(
        """
loaded = BatchSource("loaded", batch_config=PythonConfig(loader="events.parquet"))
"""
    )
    result = run_cli("validate", job)
    assert result.returncode == 2
    assert result.stderr == (
        "Definition error: In job 'job': PythonConfig: the loader is str, not a function; it "
        "must accept start_time and end_time as keyword arguments: loader(start_time=..., "
        "end_time=...).\n"
    )
