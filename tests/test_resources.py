"""Each resource provider runs exactly once per worker process, shared by views and batches."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from engine import backfill

JOB = """
import os, time

LOG = {log!r}

def note(what):
    with open(LOG, "a") as log:
        log.write(f"{{what}} {{os.getpid()}}\\n")

@resource_provider
def client():
    note("build")
    yield {{"pid": os.getpid()}}
    note("teardown")

@resource_provider(name="closable")
def closable():
    class Session:
        def close(self):
            note("close")
    note("build-closable")
    return Session()

@resource_provider
def unused():
    note("build-unused")
    return object()

@batch_feature_view(name="per_row", mode="python", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26), micro_batch_size=5,
    features=[Attribute("pid", Int64)], resource_providers={{"client": client, "s": closable}})
def per_row(row, context):
    return {{"pid": context.resources["client"]["pid"]}}

@batch_feature_view(name="per_batch", mode="polars", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26), micro_batch_size=5,
    features=[Attribute("pid", Int64)], resource_providers={{"c": client}})
def per_batch(df, context):
    time.sleep(0.02)  # keep every worker busy long enough to take a share of the intervals
    return df.select("user_id", "timestamp", pl.lit(context.resources["c"]["pid"]).alias("pid"))

@batch_feature_view(name="not_selected", mode="python", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("x", Int64)], resource_providers={{"u": unused}})
def not_selected(row, context):
    return {{"x": 1}}
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_each_provider_is_built_once_per_worker(workers: int, write_job, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    job = write_job(JOB.format(log=str(log)))
    summary = backfill(
        job,
        datetime(2024, 10, 26),
        datetime(2024, 10, 29),
        output=tmp_path / "o",
        workers=workers,
        feature_views=["per_row", "per_batch"],
    )
    assert summary.ok, summary.failed
    assert len(summary.results) == 6  # 3 days x 2 views, each ~10 micro-batches of 5 rows
    calls = Counter(tuple(line.split()) for line in log.read_text().splitlines())
    pids = {pid for _, pid in calls}
    assert len(pids) == workers
    for pid in pids:
        assert calls[("build", pid)] == 1
        assert calls[("teardown", pid)] == 1
        # Only per_row uses "closable", and a worker may happen to run no per_row interval.
        assert calls[("build-closable", pid)] == calls[("close", pid)] <= 1
    assert not any(what == "build-unused" for what, _ in calls)  # lazy: no view needed it
    assert sorted(str(w.worker) for w in summary.workers) == sorted(pids)
    for report in summary.workers:
        assert report.stats.builds["client"] == 1
        assert (
            report.stats.builds.get("closable", 0) == calls[("build-closable", str(report.worker))]
        )
        assert report.stats.teardowns == report.stats.builds
