"""Scenario 6: start-up. `rivulet --help` and a one-interval backfill of a tiny job, each a
fresh process: wall time and peak RSS, against a bare `python -c pass` (the reference)."""

from __future__ import annotations

import sys
from pathlib import Path

from bench.harness import (
    RIVULET,
    Row,
    Scenario,
    events,
    measure_command,
    median_measured,
    rivulet_cli,
)

HELP_LIMIT_S = 0.5


def run(workdir: Path, quick: bool) -> Scenario:
    env = {"BENCH_EVENTS": str(events(workdir, 100, days=1))}
    commands = {
        "python -c pass": lambda: [sys.executable, "-c", "pass"],
        "python -c 'import polars, duckdb, pyarrow'": lambda: [
            sys.executable, "-c", "import polars, duckdb, pyarrow"
        ],
        "rivulet --help": lambda: [RIVULET, "--help"],
        "rivulet backfill, tiny job, 1 interval": lambda: rivulet_cli(workdir, "trivial", 1),
    }  # fmt: skip
    times = 3 if quick else 7
    figures = {
        name: median_measured([measure_command(command(), env) for _ in range(times)])
        for name, command in commands.items()
    }
    reference = figures["python -c pass"].seconds
    rows = [
        Row(name, m.seconds, m.seconds / reference, f"peak RSS {m.peak_mib:,.0f} MiB")
        for name, m in figures.items()
    ]
    return Scenario(
        name="s6_startup",
        title="6. Start-up: wall time and peak RSS of a fresh process",
        unit="s",
        rows=rows,
        target=f"rivulet --help under {HELP_LIMIT_S} s",
        met=figures["rivulet --help"].seconds < HELP_LIMIT_S,
        notes=[f"median of {times} runs; the tiny job has 100 rows"],
        higher_is_better=False,
    )
