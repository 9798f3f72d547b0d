"""Scenario 4: a CPU-bound polars-mode transform over 5,000,000 and 10,000,000 rows in 30
daily intervals.

Rivulet (`rivulet backfill`, one and two workers) against a hand-written DuckDB read →
Polars → Parquet write script doing the same work (the reference); each is a fresh process
timed from start to exit, interpreter start-up included.
"""

from __future__ import annotations

from functools import partial
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
    sizes = (1_000_000,) if quick else (5_000_000, 10_000_000)
    rows, met = [], True
    for size in sizes:
        path = events(workdir, size, DAYS)
        env = {"BENCH_EVENTS": str(path)}
        commands = {
            "hand-written DuckDB → Polars → Parquet": partial(
                handwritten_polars, workdir, path, DAYS
            ),
            "Rivulet, 1 worker": partial(rivulet_cli, workdir, "polars_features", DAYS),
            "Rivulet, --workers 2": partial(
                rivulet_cli, workdir, "polars_features", DAYS, "--workers", "2"
            ),
        }
        figures = {
            name: median_measured([measure_command(command(), env) for _ in range(repeats(quick))])
            for name, command in commands.items()
        }
        reference = figures["hand-written DuckDB → Polars → Parquet"].seconds
        for name, m in figures.items():
            detail = f"peak RSS {m.peak_mib:,.0f} MiB"
            rows.append(Row(f"{name}, {size:,} rows", m.seconds, m.seconds / reference, detail))
        one, two = figures["Rivulet, 1 worker"].seconds, figures["Rivulet, --workers 2"].seconds
        met = met and one <= 1.2 * reference and two <= one
    return Scenario(
        name="s4_cpu",
        title=f"4. CPU-bound polars mode: {' and '.join(f'{s:,}' for s in sizes)} rows in "
        f"{DAYS} daily intervals",
        unit="s",
        rows=rows,
        target="Rivulet <= 1.2 x the hand-written pipeline at each size; --workers 2 not slower",
        met=met,
        notes=[
            "wall time of a fresh process each, interpreter and imports included; ratios "
            "are against the hand-written pipeline at the same size"
        ],
        higher_is_better=False,
    )
