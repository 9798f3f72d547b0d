"""Rate limits and retries against the mock API misbehaving for real, over loopback HTTP."""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine import backfill
from fixtures.mock_api import MockAPI, max_requests_in_any_window, score

JOB = """
import os
from datetime import datetime
from engine import *

events = BatchSource("events", batch_config=FileConfig(uri={events!r}, timestamp_field="timestamp"))
user = Entity(name="user", join_keys=[Field("user_id", String)])

@resource_provider({provider_args})
def scoring_api():
    import httpx

    client = httpx.Client(base_url=os.environ["FRAUD_API_URL"], timeout=5)
    yield client
    client.close()

@batch_feature_view(name="{view}", mode="python", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26), concurrency=16,
    features=[Attribute("score", Float64)], resource_providers={{"api": scoring_api}})
def {view}(row, context):
    response = context.resources["api"].post(
        "/v1/score", json={{"user_id": row["user_id"], "amount": row["amount"]}}
    )
    response.raise_for_status()
    return {{"score": response.json()["score"]}}
"""
START = datetime(2024, 10, 26)


def write_events(path: Path, rows: int, days: int = 2) -> Path:
    step = timedelta(days=days) / rows
    pq.write_table(
        pa.table(
            {
                "user_id": [f"u{i % 7}" for i in range(rows)],
                "timestamp": pa.array([START + i * step for i in range(rows)], pa.timestamp("us")),
                "amount": [float(i % 97) for i in range(rows)],
            }
        ),
        path,
    )
    return path


def make_job(
    tmp_path: Path,
    rows: int,
    rate_limit: str,
    retry: str = "RetryPolicy(max_attempts=10, initial_backoff=0.02, max_backoff=0.5)",
    view: str = "scores",
) -> Path:
    """A job scoring `rows` events through the mock API, its provider declaring `rate_limit`
    and `retry` (Python source, "None" for none)."""
    events = write_events(tmp_path / "events.parquet", rows)
    job = tmp_path / "scoring.py"
    args = f"rate_limit={rate_limit}, retry={retry}"
    job.write_text(textwrap.dedent(JOB.format(events=str(events), provider_args=args, view=view)))
    return job


# Requests a measurement at the API allows on top of the declared burst: 0.1 s at 100/s. The
# engine paces the moments it takes tokens; a request reaches the API some time after its
# token (a thread hop, the socket, the server's turn on the CPU), and on a loaded machine
# that time varies. After a pause the limiter rightly lets a whole burst go, which empties
# an API bucket of the same size, and then a request that arrives a few ms sooner after its
# token than the one before it found it empty: 2 429s in 1,002 requests, under two busy
# loops on 2 cores. The leeway absorbs that jitter; a run without pacing overshoots by far
# more (thousands of requests a second).
LEEWAY = 10


@pytest.mark.parametrize("workers", [1, 2])
def test_the_run_keeps_to_the_api_rate_limit(workers, tmp_path, monkeypatch) -> None:
    job = make_job(tmp_path, 1000, "RateLimit(requests_per_second=100, burst=10)")
    with MockAPI(rate_limit=100, burst=10 + LEEWAY, log=True) as api:
        monkeypatch.setenv("FRAUD_API_URL", api.url)
        summary = backfill(
            job, START, START + timedelta(days=2), output=tmp_path / "o", workers=workers
        )
        arrivals = api.arrivals()
        outcomes = api.stats()["by_outcome"]
    # Only what a loaded machine cannot break: a slow one sends less, never more. How close
    # a fast API gets to the limit is the benchmark's to measure (bench/s2_rate.py).
    assert summary.ok, summary.failed
    assert len(arrivals) == 1000 and outcomes["429"] == 0 and summary.stats.throttled == 0
    assert max_requests_in_any_window([t for t, _, _ in arrivals], 1.0) <= 100 + 10 + LEEWAY
    assert summary.stats.limiter_wait_seconds > 0


def test_faults_are_retried_to_the_same_output(tmp_path, monkeypatch) -> None:
    job = make_job(tmp_path, 600, "None")
    outputs = {}
    with MockAPI(log=True) as api:
        monkeypatch.setenv("FRAUD_API_URL", api.url)
        clean = backfill(job, START, START + timedelta(days=2), output=tmp_path / "clean")
        api.set_faults(error_rate=0.10, drop_rate=0.02, rate_limit=150, burst=10)
        faulty = backfill(job, START, START + timedelta(days=2), output=tmp_path / "faulty")
        outcomes = api.stats()["by_outcome"]
    for name, summary in (("clean", clean), ("faulty", faulty)):
        assert summary.ok, summary.failed
        files = f"{tmp_path}/{name}/scores/*/*.parquet"
        outputs[name] = duckdb.sql(f"SELECT * FROM read_parquet('{files}', hive_partitioning = 0)")
    assert outputs["clean"].except_(outputs["faulty"]).fetchall() == []
    assert outputs["faulty"].except_(outputs["clean"]).fetchall() == []
    rows = outputs["faulty"].fetchall()
    assert len(rows) == 600 and all(r[2] == score(r[0], float(i % 97)) for i, r in enumerate(rows))
    assert outcomes["500"] + outcomes["503"] > 0 and outcomes["drop"] > 0 and outcomes["429"] > 0
    retries = faulty.stats.retries
    assert retries["5xx"] == outcomes["500"] + outcomes["503"]
    assert retries["429"] == outcomes["429"] == faulty.stats.throttled
    assert retries["connection"] == outcomes["drop"]
    assert clean.stats.retries == {}
