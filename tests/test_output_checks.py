"""What a transform returns is checked before it is written: pandas rows are matched to input
rows by index label, values must be of their declared kind and fit it, keys must not be null,
and a frame without keys must return one row per input row."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from engine import backfill
from tests.conftest import make_events, run_cli

DECLARE = """
import pandas as pd

@batch_feature_view(name="view", mode="{mode}", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26), features=[{features}])
"""
FIRST_ROW = "user_id='u0', timestamp=2024-10-26T00:00:00+00:00"
QUANTITY_3_ROW = "user_id='u0', timestamp=2024-10-26T01:30:00+00:00"  # the first with quantity 3


def run(write_job, tmp_path: Path, mode: str, features: str, transform: str):
    """Backfill one day (48 events, one micro-batch) of a view `transform` defines."""
    job = write_job(DECLARE.format(mode=mode, features=features) + transform)
    return backfill(job, datetime(2024, 10, 26), datetime(2024, 10, 27), output=tmp_path / "o")


def failure(write_job, tmp_path: Path, mode: str, features: str, transform: str) -> str:
    """The single failed interval's output error, checking that nothing was written."""
    summary = run(write_job, tmp_path, mode, features, transform)
    [failed] = summary.failed
    assert failed.error_kind == "Output error", failed.error
    assert list((tmp_path / "o").rglob("*.parquet")) == []
    return failed.error


def written(tmp_path: Path, columns: str) -> list[tuple]:
    """The committed rows, in file order."""
    return duckdb.sql(
        f"SELECT {columns} FROM read_parquet('{tmp_path}/o/view/*/*.parquet', "
        f"hive_partitioning = false)"
    ).fetchall()


def first_day() -> list[dict]:
    return [e for e in make_events().to_pylist() if e["timestamp"] < datetime(2024, 10, 27)]


# A. pandas mode matches a features-only result to the input rows by index label.


@pytest.mark.parametrize(
    "reorder",
    [
        'df.sort_values("amount", ascending=False)',
        'pd.concat([group for _, group in df.groupby("user_id")])',
    ],
)
def test_pandas_features_are_matched_to_input_rows_by_index(write_job, tmp_path, reorder):
    summary = run(
        write_job,
        tmp_path,
        "pandas",
        'Attribute("double", Float64), Attribute("words", String)',
        f"""
def view(df):
    out = {reorder}
    out["double"] = out["amount"] * 2
    out["words"] = out["text"]
    return out[["double", "words"]]
""",
    )
    assert summary.ok, summary.failed
    expected = [(e["user_id"], e["timestamp"], e["amount"] * 2, e["text"]) for e in first_day()]
    assert written(tmp_path, "user_id, timezone('UTC', timestamp), double, words") == expected


@pytest.mark.parametrize(
    ("index", "problem"),
    [
        ('out.index = "r" + out.index.astype(str)', "the label 'r0' is not an input row's"),
        ("out.index = out.index // 2 * 2", "the label 0 appears more than once"),
    ],
)
def test_a_pandas_index_that_is_not_the_inputs_is_an_error(write_job, tmp_path, index, problem):
    error = failure(
        write_job,
        tmp_path,
        "pandas",
        'Attribute("double", Float64)',
        f"""
def view(df):
    out = pd.DataFrame({{"double": df["amount"] * 2}})
    {index}
    return out
""",
    )
    assert error == (
        "Feature view 'view' (pandas mode) returned its features without 'user_id' and "
        f"'timestamp', with an index that is not the input's: {problem}. Rivulet matches such "
        "rows to the input rows (labelled 0 to 47) by index label: keep the input's label on "
        "each row (do not reset_index() after sorting or grouping), or return 'user_id' and "
        "'timestamp' as columns."
    )


def test_a_pandas_result_with_keys_and_timestamp_is_not_realigned(write_job, tmp_path):
    summary = run(
        write_job,
        tmp_path,
        "pandas",
        'Attribute("double", Float64)',
        """
def view(df):
    out = df.sort_values("amount", ascending=False).reset_index(drop=True)
    out["double"] = out["amount"] * 2
    return out[["user_id", "timestamp", "double"]]
""",
    )
    assert summary.ok, summary.failed
    expected = [(e["user_id"], e["timestamp"], e["amount"] * 2) for e in first_day()]
    assert written(tmp_path, "user_id, timezone('UTC', timestamp), double") == expected[::-1]


# B. A value must be of its declared kind and fit it; nothing is converted with loss.

LOSSY = [
    ("Float32", "1e300", "float (1e+300)"),
    ("Bool", "0.5", "float (0.5)"),
    ("Int64", '"12"', "str ('12')"),
    ("Int64", "True", "bool (True)"),
    ("String", "5", "int (5)"),
    ("Timestamp", '"2024-10-26"', "str ('2024-10-26')"),
]
FRAMES = {
    "polars": "def view(df):\n    return pl.DataFrame({{'f': [{value}] * len(df)}})\n",
    "pandas": "def view(df):\n    return pd.DataFrame({{'f': [{value}] * len(df)}})\n",
    "pyarrow": "def view(table):\n    return pa.table({{'f': [{value}] * len(table)}})\n",
}
HINTS = {
    "Float32": "return an int or float within Float32's range",
    "Bool": "return a bool",
    "Int64": "return an int (or an integral float such as 2.0) within Int64's range",
    "String": "return a str",
    "Timestamp": "return a datetime or date",
}


@pytest.mark.parametrize(("declared", "value", "shown"), LOSSY)
def test_python_mode_rejects_lossy_values(write_job, tmp_path, declared, value, shown):
    error = failure(
        write_job,
        tmp_path,
        "python",
        f'Attribute("f", {declared})',
        f"""
def view(row):
    return {{"f": {value} if row["quantity"] == 3 else None}}
""",
    )
    assert error == (
        f"Feature view 'view': 'f' is declared {declared} but the transform returned {shown} "
        f"for the row {QUANTITY_3_ROW}; {HINTS[declared]}."
    )


@pytest.mark.parametrize("mode", sorted(FRAMES))
@pytest.mark.parametrize(("declared", "value", "shown"), LOSSY)
def test_frame_modes_reject_lossy_columns(write_job, tmp_path, mode, declared, value, shown):
    transform = FRAMES[mode].format(value=value)
    error = failure(write_job, tmp_path, mode, f'Attribute("f", {declared})', transform)
    assert error == (
        f"Feature view 'view': 'f' is declared {declared} but the transform returned {shown} "
        f"for the row {FIRST_ROW}; {HINTS[declared]}."
    )


def test_a_lossy_element_of_an_array_is_rejected(write_job, tmp_path):
    error = failure(
        write_job,
        tmp_path,
        "python",
        'Attribute("f", Array(Float32))',
        """
def view(row):
    return {"f": [1.0, 1e300 if row["quantity"] == 3 else 2.0]}
""",
    )
    assert error == (
        "Feature view 'view': 'f' is declared Array(Float32) but the transform returned list "
        f"([1.0, 1e+300]) for the row {QUANTITY_3_ROW}; return a list whose every element is "
        "an int or float within Float32's range."
    )


ACCEPTED = """
def view(row):
    q = row["quantity"]
    return {"as_float": q, "big": 2**53 + 1, "near": 2**24 + 1, "integral": float(q),
            "rounded": 0.1, "list": [q, 0.1], "label": row["user_id"],
            "day": row["timestamp"].date()}
"""
ACCEPTED_FEATURES = (
    'Attribute("as_float", Float64), Attribute("big", Float64), Attribute("near", Float32), '
    'Attribute("integral", Int32), Attribute("rounded", Float32), '
    'Attribute("list", Array(Float32)), Attribute("label", String), Attribute("day", Timestamp)'
)
ACCEPTED_FRAMES = {
    "polars": """
def view(df):
    q = pl.col("quantity")
    return df.select(q.alias("as_float"), pl.lit(2**53 + 1).alias("big"),
                     pl.lit(2**24 + 1).alias("near"), q.cast(pl.Float64).alias("integral"),
                     pl.lit(0.1).alias("rounded"),
                     pl.concat_list(q.cast(pl.Float64), pl.lit(0.1)).alias("list"),
                     pl.col("user_id").cast(pl.Categorical).alias("label"),
                     pl.col("timestamp").dt.date().alias("day"))
""",
    "pandas": """
def view(df):
    q = df["quantity"]
    return pd.DataFrame({"as_float": q, "big": 2**53 + 1, "near": 2**24 + 1,
                         "integral": q.astype(float), "rounded": 0.1,
                         "list": [[v, 0.1] for v in q], "label": df["user_id"].astype("category"),
                         "day": df["timestamp"].dt.date})
""",
}


@pytest.mark.parametrize("mode", ["python", "polars", "pandas"])
def test_values_that_fit_their_kind_are_accepted(write_job, tmp_path, mode):
    transform = ACCEPTED if mode == "python" else ACCEPTED_FRAMES[mode]
    summary = run(write_job, tmp_path, mode, ACCEPTED_FEATURES, transform)
    assert summary.ok, summary.failed
    # Ints become the nearest float; float64 values the nearest float32 (0.1 is 0.100000001);
    # categorical strings are strings, and a date is its midnight UTC.
    tenth = 0.10000000149011612
    expected = [
        (q, 2.0**53, 2.0**24, q, tenth, [q, tenth], e["user_id"], datetime(2024, 10, 26))
        for e in first_day()
        for q in [e["quantity"]]
    ]
    columns = "as_float, big, near, integral, rounded, list, label, timezone('UTC', day)"
    assert written(tmp_path, columns) == expected


def test_pandas_integers_with_nulls_are_accepted_as_integers(write_job, tmp_path):
    summary = run(
        write_job,
        tmp_path,
        "pandas",
        'Attribute("q", Int64)',
        """
def view(df):
    return pd.DataFrame({"q": df["quantity"].where(df["quantity"] != 3)})  # float64 and NaN
""",
    )
    assert summary.ok, summary.failed
    expected = [(None if e["quantity"] == 3 else e["quantity"],) for e in first_day()]
    assert written(tmp_path, "q") == expected


def test_a_pandas_column_of_mixed_types_is_an_output_error(write_job, tmp_path):
    error = failure(
        write_job,
        tmp_path,
        "pandas",
        'Attribute("f", Int64)',
        """
def view(df):
    return pd.DataFrame({"f": ["12" if i == 3 else i for i in range(len(df))]})
""",
    )
    assert error == (
        "Feature view 'view' (pandas mode) returned a frame Arrow cannot convert: Could not "
        "convert '12' with type str: tried to convert to int64; Conversion failed for column f "
        "with type object; return values of one type in each column."
    )


# C. Every output row has its join keys and timestamp.


def test_a_null_join_key_from_python_mode_names_the_row(write_job, tmp_path):
    error = failure(
        write_job,
        tmp_path,
        "python",
        'Attribute("f", Int64)',
        """
def view(row):
    return {"user_id": None if row["quantity"] == 3 else row["user_id"], "f": 1}
""",
    )
    assert error == (
        f"Feature view 'view': 'user_id' is null for the row {QUANTITY_3_ROW}; every output "
        "row needs its join keys and timestamp: return a non-null 'user_id' for each row, or "
        "filter out the rows that have none."
    )


def test_a_null_timestamp_from_a_frame_names_the_row(write_job, tmp_path):
    error = failure(
        write_job,
        tmp_path,
        "polars",
        'Attribute("f", Int64)',
        """
def view(df):
    stamp = pl.when(pl.col("quantity") == 3).then(None).otherwise(pl.col("timestamp"))
    return df.select("user_id", stamp.alias("timestamp"), pl.col("quantity").alias("f"))
""",
    )
    assert error == (
        "Feature view 'view': 'timestamp' is null for the row user_id='u0', timestamp=None; "
        "every output row needs its join keys and timestamp: return a non-null 'timestamp' "
        "for each row, or filter out the rows that have none."
    )


def test_a_null_join_key_under_skip_dead_letters_only_its_row(write_job, tmp_path):
    job = write_job(
        """
@batch_feature_view(name="view", mode="python", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("f", Int64)], on_error="skip")
def view(row):
    return {"user_id": None if row["quantity"] == 3 else row["user_id"], "f": 1}
"""
    )
    summary = backfill(job, datetime(2024, 10, 26), datetime(2024, 10, 27), output=tmp_path / "o")
    assert summary.ok, summary.failed
    expected = [(e["user_id"], e["timestamp"]) for e in first_day() if e["quantity"] != 3]
    assert written(tmp_path, "user_id, timezone('UTC', timestamp)") == expected


# D. A frame without keys and timestamp returns one row per input row.


def test_a_frame_without_keys_and_a_row_count_of_its_own_is_named(write_job, tmp_path):
    job = write_job(
        DECLARE.format(mode="polars", features='Attribute("total", Float64)')
        + """
def view(df):
    return df.select(pl.col("amount").sum().alias("total"))
"""
    )
    args = ("--start", "2024-10-26", "--end", "2024-10-27", "--output", tmp_path / "o")
    result = run_cli("backfill", job, *args)
    assert result.returncode == 1, result.stderr
    [failed] = [line for line in result.stderr.splitlines() if line.startswith("Failed")]
    assert failed == (
        "Failed view [2024-10-26 00:00, 2024-10-27 00:00): Output error: Feature view 'view' "
        "(polars mode) returned 1 row for the 48 input rows starting at "
        f"{FIRST_ROW}, without 'user_id' and 'timestamp'; a frame without the join keys and "
        "timestamp must return one row per input row, in their order, or return them as "
        "columns."
    )
    assert list((tmp_path / "o").rglob("*.parquet")) == []


def test_a_pandas_frame_missing_rows_is_told_about_index_labels(write_job, tmp_path):
    error = failure(
        write_job,
        tmp_path,
        "pandas",
        'Attribute("double", Float64)',
        """
def view(df):
    kept = df[df["quantity"] != 3]
    return pd.DataFrame({"double": kept["amount"] * 2})
""",
    )
    assert error == (
        "Feature view 'view' (pandas mode) returned 41 rows for the 48 input rows starting at "
        f"{FIRST_ROW}, without 'user_id' and 'timestamp'; a frame without the join keys and "
        "timestamp must return one row per input row, labelled with the input's index, or "
        "return them as columns."
    )


def test_a_batch_whose_every_row_is_skipped_writes_an_empty_interval(write_job, tmp_path):
    job = write_job(
        """
@batch_feature_view(name="view", mode="python", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("f", Int64)], on_error="skip")
def view(row):
    raise ValueError("no row scores")
"""
    )
    summary = backfill(job, datetime(2024, 10, 26), datetime(2024, 10, 27), output=tmp_path / "o")
    assert summary.ok, summary.failed
    assert written(tmp_path, "count(*)") == [(0,)]
    errors = f"{tmp_path}/o/_errors/view/*/*.parquet"
    assert duckdb.sql(f"SELECT count(*) FROM '{errors}'").fetchall() == [(48,)]
