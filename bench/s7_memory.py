"""Scenario 7: peak RSS of scenario 4's backfill (one worker) as the rows grow 40-fold.

Each run is the real CLI in a fresh process; the figure is the peak RSS of its largest
process. The reference is the smallest size.
"""

from __future__ import annotations

from pathlib import Path

from bench.harness import Row, Scenario, events, measure_command, rivulet_cli
from bench.s4_cpu import DAYS

LIMIT_MIB = 2048


def run(workdir: Path, quick: bool) -> Scenario:
    sizes = (500_000, 2_000_000) if quick else (500_000, 5_000_000, 20_000_000)
    peaks = {}
    for size in sizes:
        env = {"BENCH_EVENTS": str(events(workdir, size, DAYS))}
        runs = 1 if size > 5_000_000 or quick else 2
        peaks[size] = max(
            measure_command(rivulet_cli(workdir, "polars_features", DAYS), env).peak_mib
            for _ in range(runs)
        )
    first = peaks[sizes[0]]
    rows = [
        Row(f"{size:,} rows", peak, peak / first, f"rows x{size / sizes[0]:g}")
        for size, peak in peaks.items()
    ]
    growth = [peak / first < size / sizes[0] for size, peak in peaks.items() if size != sizes[0]]
    return Scenario(
        name="s7_memory",
        title=f"7. Peak RSS of scenario 4's backfill (1 worker, {DAYS} daily intervals)",
        unit="MiB",
        rows=rows,
        target=f"peak RSS grows sub-linearly; 20M rows under {LIMIT_MIB} MiB",
        met=all(growth) and peaks[sizes[-1]] < LIMIT_MIB,
        notes=["the largest of 2 runs (1 for 20M rows); memory is not noisy like time"],
        higher_is_better=False,
    )
