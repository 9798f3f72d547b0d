"""jobs/fraud_signals.py against the mock scoring API: per-row and batched views agree."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from engine import RunSummary, backfill
from fixtures.mock_api import MockAPI, score
from tests.conftest import REPO

JOB = REPO / "jobs" / "fraud_signals.py"
EVENTS = REPO / "fixtures" / "data" / "events"
START, END = datetime(2024, 10, 26), datetime(2024, 10, 29)
BATCH = 200


def run_view(view: str, output: Path, api: MockAPI, workers: int) -> tuple[RunSummary, int]:
    """Backfill one view; return its summary and the scoring requests it made."""
    api.reset_stats()
    summary = backfill(JOB, START, END, output=output, feature_views=[view], workers=workers)
    assert summary.ok, summary.failed
    stats = api.stats()
    assert stats["by_path"].keys() <= {"/v1/score"}
    return summary, stats["requests"]


def written(output: Path, view: str) -> duckdb.DuckDBPyRelation:
    return duckdb.sql(
        f"SELECT user_id, timezone('UTC', timestamp) AS timestamp, fraud_score "
        f"FROM read_parquet('{output}/{view}/*/*.parquet', hive_partitioning = false)"
    )


def test_fraud_scores_per_row_and_batched_agree(
    mock_api: MockAPI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FRAUD_API_URL", mock_api.url)
    per_row, per_row_requests = run_view("fraud_signals", tmp_path, mock_api, workers=2)
    batched, batched_requests = run_view("fraud_signals_batched", tmp_path, mock_api, workers=1)

    source = duckdb.sql(
        f"SELECT user_id, timestamp, amount FROM '{EVENTS}/*.parquet' "
        "WHERE timestamp >= $start AND timestamp < $end",
        params={"start": START, "end": END},
    ).fetchall()
    expected = [(user_id, ts, score(user_id, amount)) for user_id, ts, amount in source]
    assert len(expected) > 700
    assert written(tmp_path, "fraud_signals").fetchall() == expected
    assert written(tmp_path, "fraud_signals_batched").fetchall() == expected

    rows = per_row.rows_by_view["fraud_signals"]
    assert rows == batched.rows_by_view["fraud_signals_batched"] == len(expected)
    assert per_row_requests == rows  # one request per row
    assert len(batched.results) == 3
    assert batched_requests == sum(-(-r.rows // BATCH) for r in batched.results)
    assert batched_requests < rows / 50
