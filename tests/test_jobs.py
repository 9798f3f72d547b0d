"""The bundled jobs, and Tecton's own example, run against the mock OpenAI API."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from engine import backfill
from fixtures.mock_api import embed
from tests.conftest import REPO

EMBEDDINGS = REPO / "jobs" / "embeddings.py"
SEED = REPO / "tests" / "jobs" / "tecton_seed.py"
EVENTS = REPO / "fixtures" / "data" / "events"


def written(output: Path, view: str) -> duckdb.DuckDBPyRelation:
    return duckdb.sql(
        f"SELECT * FROM read_parquet('{output}/{view}/*/*.parquet', hive_partitioning = false)"
    )


def assert_correct_embeddings(output: Path, view: str, days: int) -> None:
    """Every source row in the range has exactly the embedding the API computes for its text."""
    source = duckdb.sql(
        f"SELECT user_id, timestamp, text FROM '{EVENTS}/*.parquet' "
        f"WHERE timestamp < TIMESTAMP '2024-10-26' + INTERVAL {days} DAY"
    ).fetchall()
    rows = {(r[0], r[1]): r[2] for r in duckdb.sql(
        f"SELECT user_id, timezone('UTC', timestamp), embedding "
        f"FROM read_parquet('{output}/{view}/*/*.parquet', hive_partitioning = false)"
    ).fetchall()}  # fmt: skip
    assert len(rows) == len(source) > 400
    for user_id, timestamp, text in source:
        assert rows[(user_id, timestamp)] == pytest.approx(embed(text), abs=1e-6)


def test_embeddings_job_per_row_and_batched_agree(openai_env, tmp_path: Path) -> None:
    openai_env.reset_stats()
    summary = backfill(
        EMBEDDINGS, datetime(2024, 10, 26), datetime(2024, 10, 28), output=tmp_path, workers=2
    )
    assert summary.ok, summary.failed
    assert_correct_embeddings(tmp_path, "text_embedding", days=2)
    assert_correct_embeddings(tmp_path, "text_embedding_batched", days=2)
    per_row, batched = (
        written(tmp_path, "text_embedding"),
        written(tmp_path, "text_embedding_batched"),
    )
    assert per_row.except_(batched).fetchall() == batched.except_(per_row).fetchall() == []
    rows = summary.rows_by_view["text_embedding"]
    batches = sum(
        -(-r.rows // 100) for r in summary.results if r.task.feature_view.endswith("batched")
    )
    assert openai_env.stats()["requests"] == rows + batches  # one per row, one per 100 texts


def test_tecton_seed_is_rejected_for_returning_an_undeclared_feature(openai_env, tmp_path) -> None:
    summary = backfill(SEED, datetime(2024, 10, 26), datetime(2024, 10, 27), output=tmp_path)
    [failed] = summary.failed
    assert failed.error_kind == "Output error"
    assert failed.error.startswith(
        "Feature view 'bfv' returned features that do not match its declaration, for the row "
        "user_id='u01', timestamp=2024-10-26T00:00:30.580000+00:00: 'text' (declared String) is "
        "missing; 'embedding' (returned list) is not declared."
    )
    assert list(tmp_path.rglob("*.parquet")) == []


def test_tecton_seed_runs_once_its_feature_is_declared(
    openai_env, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fixed = tmp_path / "tecton_seed_fixed.py"
    source = SEED.read_text()
    events_line = next(line for line in source.splitlines() if line.startswith("EVENTS = "))
    fixed.write_text(
        source.replace(
            '        Attribute("text", String),', '        Attribute("embedding", Array(Float64)),'
        )
        .replace("from engine import (", "from engine import (\n    Array,\n    Float64,")
        .replace(events_line, f"EVENTS = Path({str(EVENTS)!r})")
    )
    summary = backfill(fixed, datetime(2024, 10, 26), datetime(2024, 10, 29), output=tmp_path / "o")
    assert summary.ok, summary.failed
    assert_correct_embeddings(tmp_path / "o", "bfv", days=3)
    # The seed's client keeps the SDK's own retries; the worker (in this process, as there is
    # one) logs that they multiply Rivulet's.
    assert "returned an openai client with max_retries=2" in caplog.text
