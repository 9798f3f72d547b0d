"""Scenario 4: a CPU-bound polars-mode transform over 5,000,000 rows in 30 daily intervals.

Rivulet (`rivulet backfill`, one and two workers) against a hand-written DuckDB read →
Polars → Parquet write script doing the same work (the reference); each is a fresh process
timed from start to exit, interpreter start-up included.
"""

from __future__ import annotations

from pathlib import Path

from bench.harness import (
    Row,
    Scenario,
    events,
    handwritten_polars,
    measure_command,
    median_measured,
    repeats,
    rivulet_cli,
)

DAYS = 30


def run(workdir: Path, quick: bool) -> Scenario:
    size = 1_000_000 if quick else 5_000_000
    path = events(workdir, size, DAYS)
    env = {"BENCH_EVENTS": str(path)}
    commands = {
        "hand-written DuckDB → Polars → Parquet": lambda: handwritten_polars(workdir, path, DAYS),
        "Rivulet, 1 worker": lambda: rivulet_cli(workdir, "polars_features", DAYS),
        "Rivulet, --workers 2": lambda: rivulet_cli(
            workdir, "polars_features", DAYS, "--workers", "2"
        ),
    }
    figures = {
        name: median_measured([measure_command(command(), env) for _ in range(repeats(quick))])
        for name, command in commands.items()
    }
    reference = figures["hand-written DuckDB → Polars → Parquet"].seconds
    rows = [
        Row(name, m.seconds, m.seconds / reference, f"peak RSS {m.peak_mib:,.0f} MiB")
        for name, m in figures.items()
    ]
    one, two = figures["Rivulet, 1 worker"].seconds, figures["Rivulet, --workers 2"].seconds
    return Scenario(
        name="s4_cpu",
        title=f"4. CPU-bound polars mode: {size:,} rows in {DAYS} daily intervals",
        unit="s",
        rows=rows,
        target="Rivulet <= 1.3 x the hand-written pipeline; --workers 2 faster than 1",
        met=one <= 1.3 * reference and two < one,
        notes=["wall time of a fresh process each, interpreter and imports included"],
        higher_is_better=False,
    )
