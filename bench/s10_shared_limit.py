"""Scenario 10: one rate limit for two runs at once, a local one and a Ray one, through Redis.

Both runs backfill `bench/jobs/limited.py` (its provider declares the API's limit, which the
mock API enforces) over three days, the first with five times the rows of the others, each
on 2 workers. With `--limiter` the four workers take from one bucket in Redis;
without it each run splits the limit between its own two workers, as a run alone would.
The figures are the API's log: requests per second from first to last arrival, and over
the time both runs were calling (from the ledgers; the local run starts once the Ray run's
first call arrives, so that they overlap), the busiest second and the 429s.
"""

from __future__ import annotations

import os
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import polars as pl

from bench.data import START, write_events
from bench.harness import RIVULET, ROOT, Row, Scenario, end_of, fresh_dir
from engine.store.ledger import Ledger
from fixtures.mock_api import MockAPI, max_requests_in_any_window

LIMIT, BURST = 100, 10
JITTER = 5  # the mock's bucket allows this many more: calls granted in time can arrive bunched
REDIS = "redis://127.0.0.1:6379/0"
DAYS = 3


def uneven_events(workdir: Path, small: int) -> Path:
    """Three days of events: the first with five times the rows of each other day."""
    path = workdir / "data" / f"uneven-{small}.parquet"
    if not path.exists():
        first = pl.read_parquet(write_events(workdir / "data" / "first.parquet", 5 * small, 1))
        rest = pl.read_parquet(write_events(workdir / "data" / "rest.parquet", 2 * small, 2))
        rest = rest.with_columns(pl.col("timestamp") + timedelta(days=1))
        pl.concat([first, rest]).write_parquet(path)
    return path


def calling_span(output: Path) -> tuple[float, float]:
    """(first start, last finish) of a run's intervals, from its ledger, as Unix times."""
    entries = Ledger(output).entries("scored")
    return (
        min(e.started_at.timestamp() for e in entries if e.started_at),
        max(e.finished_at.timestamp() for e in entries),
    )


def together(workdir: Path, events: Path, limiter: bool) -> tuple[Row, bool]:
    """Run the local and the Ray backfill at once against one limited API; one row."""
    with MockAPI(latency_ms=5, rate_limit=LIMIT, burst=BURST + JITTER, log=True) as api:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MOCK_API_URL": api.url,
               "BENCH_EVENTS": str(events), "RATE_LIMIT": str(LIMIT)}  # fmt: skip
        if limiter:
            env["RIVULET_LIMITER"] = REDIS
        else:
            env.pop("RIVULET_LIMITER", None)
        outputs = {name: fresh_dir(workdir, f"limit-{name}") for name in ("ray", "local")}
        job = ROOT / "bench" / "jobs" / "limited.py"
        command = [RIVULET, "backfill", str(job), "--start", f"{START:%Y-%m-%d}", "--end",
                   f"{end_of(DAYS):%Y-%m-%d}", "--workers", "2", "--json"]  # fmt: skip
        runs = []
        for name, output in outputs.items():  # Ray first, the local run once Ray calls
            runs.append(
                subprocess.Popen(
                    [*command, "--output", str(output), "--executor", name],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
            while name == "ray" and not api.stats()["requests"] and runs[-1].poll() is None:
                time.sleep(0.05)
        for run in runs:
            out, err = run.communicate(timeout=900)
            if run.returncode:
                raise RuntimeError(f"a backfill failed: {out}{err}")
        arrivals = sorted(t for t, _, _ in api.arrivals())
        throttled = api.stats()["by_outcome"]["429"]
    spans = [calling_span(output) for output in outputs.values()]
    both_from, both_to = max(s[0] for s in spans), min(s[1] for s in spans)
    overlap = [t for t in arrivals if both_from <= t < both_to]
    overall = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    both = len(overlap) / (both_to - both_from) if both_to > both_from else float("nan")
    busiest = max_requests_in_any_window(arrivals, 1.0)
    name = "with --limiter (one bucket)" if limiter else "without --limiter (each run splits)"
    detail = (
        f"{both:.0f}/s while both called ({both_to - both_from:.0f} s); busiest second "
        f"{busiest}; {throttled} x 429"
    )
    met = overall >= 0.9 * LIMIT and busiest <= LIMIT + BURST and throttled == 0
    return Row(name, overall, overall / LIMIT, detail), met


def run(workdir: Path, quick: bool) -> Scenario:
    small = 150 if quick else 400
    events = uneven_events(workdir, small)
    rows = [Row("limit (the API's bucket)", LIMIT, 1.0, f"burst {BURST}")]
    shared, met = together(workdir, events, limiter=True)
    split, _ = together(workdir, events, limiter=False)
    return Scenario(
        name="s10_shared_limit",
        title=(
            f"10. A local and a Ray run (2 workers each) at once under one {LIMIT}/s limit: "
            f"{7 * small:,} calls each, one day 5x the others"
        ),
        unit="requests/s",
        rows=[*rows, shared, split],
        target="with --limiter: >= 0.9 of the limit overall, no second above limit + burst, no 429",
        met=met,
        notes=[
            "without --limiter each run keeps its two workers to half the limit each: "
            "together they overshoot (429s, retried) while both call, and a worker left "
            "with the big day runs at half the limit once the others are done",
            f"the mock API's bucket allows {JITTER} calls past the burst (calls granted in "
            "time can arrive bunched); the busiest second is from its log, unpadded",
        ],
    )
