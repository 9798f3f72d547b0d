"""Scenario 5: python-mode overhead with a trivial transform and no I/O besides files.

Rivulet's rows/s over its intervals' compute time (read, transform, write; worker start-up
excluded) against a plain Python loop over the same rows as dicts, which also reads them
with DuckDB and writes Parquet (the reference); the loop alone is shown for scale.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from bench import handwritten
from bench.harness import (
    Row,
    Scenario,
    environment,
    events,
    fresh_dir,
    median_throughput,
    run_backfill,
    throughput,
)

DAYS = 2


def _plain(workdir: Path, path: Path) -> tuple[float, float]:
    """(rows/s end to end, rows/s of the loop alone) of the hand-written loop."""
    began = time.perf_counter()
    rows, looping = handwritten.plain_loop(path, DAYS, fresh_dir(workdir, "plain"))
    return rows / (time.perf_counter() - began), rows / looping


def run(workdir: Path, quick: bool) -> Scenario:
    size = 20_000 if quick else 100_000
    path = events(workdir, size, DAYS)
    # Each run is short and this machine is shared: the contenders alternate, a warm-up run
    # of each first, so a slow moment (or the first import of a library) hits both alike.
    times = 1 + (3 if quick else 7)
    plain, rivulet = [], []
    with environment(BENCH_EVENTS=str(path)):
        for _ in range(times):
            plain.append(_plain(workdir, path))
            rivulet.append(throughput(run_backfill(workdir, "trivial", DAYS)))
    reference = statistics.median(p[0] for p in plain[1:])
    loop_only = statistics.median(p[1] for p in plain[1:])
    figure = median_throughput(rivulet[1:])
    rows = [
        Row("plain loop: DuckDB → dicts → loop → Parquet", reference, 1.0),
        Row("Rivulet, python mode", figure.steady, figure.steady / reference,
            f"wall {figure.wall:,.0f} rows/s"),
        Row("the loop alone (no read, no write)", loop_only, loop_only / reference),
    ]  # fmt: skip
    return Scenario(
        name="s5_overhead",
        title=f"5. Python-mode overhead: trivial transform over {size:,} rows",
        unit="rows/s",
        rows=rows,
        target=">= 0.5 of the plain loop's rows/s",
        met=figure.steady >= 0.5 * reference,
        notes=[
            "Rivulet's figure excludes start-up (see scenario 6)",
            f"median of {times - 1} runs each, alternating, after one warm-up run each",
        ],
    )
