"""Scenario 12: scenario 11's job and rows on an hourly batch_schedule against the daily one
(the reference), mock API at 50 ms, `rivulet backfill --workers 1` as a fresh process each."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from bench.harness import Row, Scenario, repeats, rivulet_cli
from bench.s11_seed import DAYS, JOB, bundled_rows, measure
from fixtures.mock_api import MockAPI

LATENCY_MS = 50
INTERVALS_A_DAY = {"daily": 1, "hourly": 24}


def run(workdir: Path, quick: bool) -> Scenario:
    span, times = 2 if quick else DAYS, repeats(quick)
    rows = bundled_rows(span)
    command = partial(rivulet_cli, workdir, JOB, span, "--workers", "1")
    with MockAPI(latency_ms=LATENCY_MS) as api:
        figures = {
            schedule: measure(
                command, {"MOCK_API_URL": api.url, "BENCH_SCHEDULE": schedule}, rows, times
            )
            for schedule in INTERVALS_A_DAY
        }
    rate = {schedule: rows / m.seconds for schedule, m in figures.items()}
    table = [
        Row(
            f"{schedule}, {span * per_day} intervals",
            rate[schedule],
            rate[schedule] / rate["daily"],
            f"wall {figures[schedule].seconds:.2f} s",
        )
        for schedule, per_day in INTERVALS_A_DAY.items()
    ]
    return Scenario(
        name="s12_schedule",
        title=f"12. Schedule: scenario 11's {rows:,} rows hourly vs daily, {LATENCY_MS} ms API",
        unit="rows/s",
        rows=table,
        target="hourly >= 0.9 of daily",
        met=rate["hourly"] >= 0.9 * rate["daily"],
        notes=[f"as scenario 11: fresh processes, start-up included, median of {times} run(s)"],
    )
