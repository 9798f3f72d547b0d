"""Scenario 9: the API-bound job (50 ms a call) on 1, 2 and 4 workers, `--executor ray`
against `--executor local`, and what starting Ray costs.

Both run in this process's driver: local workers are spawned processes (one runs here),
Ray workers are actors of a local Ray started once (its start-up timed on its own, then
excluded, as a cluster is already up when a run joins it).
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.harness import (
    JOBS,
    START,
    Row,
    Scenario,
    end_of,
    environment,
    events,
    fresh_dir,
    median_throughput,
    repeats,
    throughput,
)
from engine.execute.local import LocalExecutor
from engine.materialize import backfill
from fixtures.mock_api import MockAPI

LATENCY_MS = 50
DAYS = 8


def run(workdir: Path, quick: bool) -> Scenario:
    from engine.execute.ray import RayExecutor, connect

    size = 4_000 if quick else 16_000
    path = events(workdir, size, days=DAYS)
    figures = {}
    with (
        MockAPI(latency_ms=LATENCY_MS) as api,
        environment(BENCH_EVENTS=str(path), MOCK_API_URL=api.url),
    ):
        began = time.perf_counter()
        connect(None)  # the actors see the environment set above
        ray_start = time.perf_counter() - began
        for workers in (1, 2, 4):
            for name, executor in (("local", LocalExecutor), ("ray", RayExecutor)):
                runs = []
                for _ in range(repeats(quick)):
                    summary = backfill(
                        JOBS / "api_per_row.py", START, end_of(DAYS), overwrite=True,
                        output=fresh_dir(workdir, f"{name}{workers}"), executor=executor(workers),
                    )  # fmt: skip
                    assert summary.ok, [r.error for r in summary.failed]
                    runs.append(throughput(summary))
                figures[name, workers] = median_throughput(runs)
    rows = []
    for workers in (1, 2, 4):
        local, ray = figures["local", workers], figures["ray", workers]
        ratio = ray.steady / local.steady
        rows.append(
            Row(f"local, {workers} worker(s)", local.steady, 1.0, f"wall {local.wall:,.0f}")
        )
        rows.append(Row(f"Ray, {workers} actor(s)", ray.steady, ratio, f"wall {ray.wall:,.0f}"))
    met = all(figures["ray", w].steady >= 0.9 * figures["local", w].steady for w in (1, 2, 4))
    return Scenario(
        name="s9_ray",
        title=f"9. Ray actors against local workers: {size:,} rows, {LATENCY_MS} ms API",
        unit="rows/s",
        rows=rows,
        target="Ray >= 0.9 of local at each worker count, once started",
        met=met,
        notes=[
            f"starting a local Ray took {ray_start:.1f} s (not in the figures); each run's "
            "actors start within it (in 'wall')",
            "64 calls in flight per worker; ratios are against local at the same count",
        ],
    )
