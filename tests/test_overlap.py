"""A worker starts its next interval while the last calls of the one before finish, under one
concurrency; after a worker's death each interval it ran is retried alone."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb

from engine import backfill
from engine.store.ledger import Ledger
from tests.conftest import run_cli

WAITING = """
import asyncio

STATE = {"running": 0}
NEXT_STARTED = asyncio.Event()

@batch_feature_view(name="view", mode="python", sources=[events], entities=[user],
    batch_schedule="1h", feature_start_time=datetime(2024, 10, 26), concurrency=4,
    features=[Attribute("in_flight", Int64), Attribute("released", Bool)])
async def view(row, context):
    STATE["running"] += 1
    try:
        in_flight = STATE["running"]
        if context.start_time.hour == 1:
            NEXT_STARTED.set()
        released = True
        if context.start_time.hour == 0:  # held until the next interval's rows start
            try:
                await asyncio.wait_for(NEXT_STARTED.wait(), 60)  # a hang guard
            except TimeoutError:
                released = False
        return {"in_flight": in_flight, "released": released}
    finally:
        STATE["running"] -= 1
"""


def test_the_next_interval_starts_while_the_last_calls_of_one_run(write_job, tmp_path) -> None:
    job = write_job(WAITING)
    out = tmp_path / "out"
    summary = backfill(job, datetime(2024, 10, 26), datetime(2024, 10, 26, 4), output=out)
    assert summary.ok, summary.failed
    rows = duckdb.sql(
        f"SELECT hour(timestamp) AS hour, in_flight, released "
        f"FROM read_parquet('{out}/view/*/data.parquet') ORDER BY timestamp"
    ).fetchall()
    assert len(rows) == 8  # two events an hour, four hours
    assert all(released for _, _, released in rows)  # hour 0 ended only once hour 1 began
    assert max(n for hour, n, _ in rows if hour == 1) >= 3  # beside hour 0's two rows
    assert max(n for _, n, _ in rows) <= 4  # the view's concurrency, over both intervals
    assert [e.state for e in Ledger(out).entries()] == ["committed"] * 4


POISON = """
import os, signal, time

@batch_feature_view(name="view", mode="python", sources=[events], entities=[user],
    batch_schedule="6h", feature_start_time=datetime(2024, 10, 26), concurrency=4,
    features=[Attribute("score", Float64)])
def view(row, context):
    if f"{context.start_time:%Y-%m-%dT%H}" == "2024-10-27T06":
        os.kill(os.getpid(), signal.SIGKILL)  # this interval kills every worker it runs on
    time.sleep(0.01)
    return {"score": row["amount"] * 2}
"""


def test_only_the_interval_that_kills_its_workers_fails(write_job, tmp_path: Path) -> None:
    # Its neighbours die with it once, then run alone on fresh workers and commit.
    out = tmp_path / "out"
    result = run_cli(
        "backfill", write_job(POISON), "--start", "2024-10-26", "--end", "2024-10-29",
        "--output", out, "--workers", "2",
    )  # fmt: skip
    notes = " ".join(result.stderr.split())
    assert result.returncode == 1, result.stderr
    poisoned = "[2024-10-27 06:00, 2024-10-27 12:00)"
    assert notes.count("workers and fails") == 1
    assert f"{poisoned}; it was tried on 3 workers and fails" in notes
    entries = Ledger(out).entries()
    failed = [e for e in entries if e.state == "failed"]
    assert [(e.interval_start.day, e.interval_start.hour) for e in failed] == [(27, 6)]
    assert len([e for e in entries if e.state == "committed"]) == 11
