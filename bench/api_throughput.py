"""Python-mode throughput against the mock API: Rivulet vs one row at a time (Tecton's way).

Both sides run the same transform (`bench/jobs/api_per_row.py`: one HTTP call per row) with
the same client against the same local API; the API adds a fixed latency per request.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import duckdb

from bench.data import START, write_events
from engine import backfill
from fixtures.mock_api import MockAPI

JOB = Path(__file__).parent / "jobs" / "api_per_row.py"


@dataclass
class Result:
    latency_ms: float
    serial_rows_per_s: float
    rivulet_rows_per_s: float
    rivulet_2_workers_rows_per_s: float

    @property
    def ratio(self) -> float:
        return self.rivulet_rows_per_s / self.serial_rows_per_s


def one_row_at_a_time(events: Path, rows: int) -> float:
    """Call the job's transform on `rows` rows in a plain loop, as Tecton's SDK does."""
    from bench.jobs.api_per_row import score, scoring_api

    context = SimpleNamespace(resources={"api": scoring_api.function()})
    batch = duckdb.sql(f"SELECT * FROM '{events}' LIMIT {rows}").to_arrow_table().to_pylist()
    began = time.perf_counter()
    for row in batch:
        score(row, context)
    return len(batch) / (time.perf_counter() - began)


def rivulet(events: Path, days: int, workers: int, output: Path) -> float:
    began = time.perf_counter()
    summary = backfill(JOB, START, datetime(2024, 10, 26 + days), output=output, workers=workers)
    seconds = time.perf_counter() - began
    assert summary.ok, summary.failed
    return sum(summary.rows_by_view.values()) / seconds


def measure(latency_ms: float, rows: int, days: int, workdir: Path, repeats: int = 3) -> Result:
    events = write_events(workdir / f"events-{rows}.parquet", rows, days)
    os.environ["BENCH_EVENTS"] = str(events)
    with MockAPI(latency_ms=latency_ms) as api:
        os.environ["MOCK_API_URL"] = api.url
        serial_rows = max(20, int(2.0 / (latency_ms / 1000 + 0.0005)))  # about two seconds
        serial = statistics.median(one_row_at_a_time(events, serial_rows) for _ in range(repeats))
        runs = [rivulet(events, days, 1, workdir / f"out-{latency_ms}-{i}") for i in range(repeats)]
        runs2 = [
            rivulet(events, days, 2, workdir / f"out2-{latency_ms}-{i}") for i in range(repeats)
        ]
        requests = api.stats()["requests"]
    expected = repeats * (serial_rows + 2 * rows)
    assert requests == expected, f"the API saw {requests} requests, expected {expected}"
    return Result(latency_ms, serial, statistics.median(runs), statistics.median(runs2))


def main(workdir: Path) -> list[Result]:
    results = [
        measure(50, rows=8_000, days=2, workdir=workdir),
        measure(5, rows=12_000, days=2, workdir=workdir),
    ]
    print("\nPython mode, one HTTP call per row (median of 3 runs, wall time incl. start-up)")
    print(
        f"{'latency':>8} {'one-at-a-time':>14} {'rivulet':>10} {'ratio':>7} {'target':>7}"
        f" {'rivulet -w2':>12} {'ratio':>7}"
    )
    for r in results:
        target = 30 if r.latency_ms >= 50 else 5
        print(
            f"{r.latency_ms:>6.0f}ms {r.serial_rows_per_s:>10.0f} r/s"
            f" {r.rivulet_rows_per_s:>6.0f} r/s"
            f" {r.ratio:>6.1f}x {target:>6}x {r.rivulet_2_workers_rows_per_s:>8.0f} r/s"
            f" {r.rivulet_2_workers_rows_per_s / r.serial_rows_per_s:>6.1f}x"
        )
    return results
