"""Scenario 2: API-bound with a rate limit the mock API enforces (429 past its own bucket).

Rivulet runs `bench/jobs/api_per_row.py` told the same limit (`rate_limits=`, the CLI's
`--rate-limit scoring_api=200`). The achieved rate is the requests the API logged over the
span from first to last arrival; the reference is the limit itself.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from bench.harness import Row, Scenario, environment, events, repeats, run_backfill
from fixtures.mock_api import MockAPI, max_requests_in_any_window

LIMIT = 200
BURST = LIMIT // 10


def achieved(workdir: Path, workers: int) -> tuple[float, int, int]:
    """(achieved requests/s, 429s seen at the API, busiest one-second window) of one run."""
    with MockAPI(latency_ms=5, rate_limit=LIMIT, burst=BURST, log=True) as api:
        with environment(MOCK_API_URL=api.url, BENCH_CLIENT="stdlib"):
            run_backfill(
                workdir, "api_per_row", 2, workers=workers, rate_limits={"scoring_api": LIMIT}
            )
        arrivals = [t for t, _, _ in api.arrivals()]
        throttled = api.stats()["by_outcome"]["429"]
    rate = (len(arrivals) - 1) / (max(arrivals) - min(arrivals))
    return rate, throttled, max_requests_in_any_window(arrivals, 1.0)


def run(workdir: Path, quick: bool) -> Scenario:
    size = 600 if quick else 1_500
    rows = [Row("limit (the API's bucket)", LIMIT, 1.0, f"burst {BURST}")]
    met = True
    with environment(BENCH_EVENTS=str(events(workdir, size, days=2))):
        for workers in (1, 2):
            runs = [achieved(workdir, workers) for _ in range(repeats(quick))]
            rate = statistics.median(r[0] for r in runs)
            throttled = max(r[1] for r in runs)
            busiest = max(r[2] for r in runs)
            detail = f"{throttled} x 429 (worst run); busiest second {busiest}"
            rows.append(Row(f"Rivulet, {workers} worker(s)", rate, rate / LIMIT, detail))
            met = met and rate >= 0.9 * LIMIT and throttled == 0
    return Scenario(
        name="s2_rate",
        title=f"2. API-bound with a rate limit: {size:,} calls, API enforcing {LIMIT}/s",
        unit="requests/s",
        rows=rows,
        target="achieved >= 0.9 of the limit with zero 429s",
        met=met,
        notes=[f"the busiest one-second window may reach limit + burst = {LIMIT + BURST}"],
    )
