"""Achieved request rate over the configured limit, against a mock API enforcing that limit.

The API answers 429 past its own token bucket; Rivulet is told the same limit with
`rate_limits={"scoring_api": LIMIT}` (the CLI's `--rate-limit scoring_api=LIMIT`). The
achieved rate is the requests the API saw over the span from first to last arrival.
"""

from __future__ import annotations

import os
import statistics
from datetime import datetime
from pathlib import Path

from bench.data import START, write_events
from engine import backfill
from fixtures.mock_api import MockAPI, max_requests_in_any_window

JOB = Path(__file__).parent / "jobs" / "api_per_row.py"
LIMIT = 200


def achieved(events: Path, workers: int, output: Path) -> tuple[float, int, int]:
    """(achieved rate / limit, 429s seen, busiest second) of one run."""
    with MockAPI(latency_ms=5, rate_limit=LIMIT, burst=LIMIT // 10, log=True) as api:
        os.environ["MOCK_API_URL"] = api.url
        summary = backfill(
            JOB, START, datetime(2024, 10, 28), output=output, workers=workers,
            rate_limits={"scoring_api": LIMIT},
        )  # fmt: skip
        arrivals = [t for t, _, _ in api.arrivals()]
        throttled = api.stats()["by_outcome"]["429"]
    assert summary.ok, summary.failed
    rate = (len(arrivals) - 1) / (max(arrivals) - min(arrivals))
    return rate / LIMIT, throttled, max_requests_in_any_window(arrivals, 1.0)


def main(workdir: Path) -> dict[int, float]:
    events = write_events(workdir / "events.parquet", rows=3_000, days=2)
    os.environ["BENCH_EVENTS"] = str(events)
    results = {}
    print(f"\nRate limit: 3,000 calls against an API enforcing {LIMIT}/s (median of 3 runs)")
    print(f"{'workers':>8} {'achieved/limit':>15} {'429s':>6} {'busiest second':>15}")
    for workers in (1, 2):
        runs = [achieved(events, workers, workdir / f"out-{workers}-{i}") for i in range(3)]
        ratio = statistics.median(r[0] for r in runs)
        results[workers] = ratio
        print(
            f"{workers:>8} {ratio:>15.3f} {max(r[1] for r in runs):>6}"
            f" {max(r[2] for r in runs):>15}"
        )
    print(f"target: achieved/limit >= 0.9 with no 429; busiest second <= {LIMIT + LIMIT // 10}")
    return results
