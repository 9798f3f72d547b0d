"""Peak memory of a polars-mode backfill as the window grows tenfold (streaming, not loading).

Each run is the real CLI in a fresh process; the peak RSS of the worker process comes from
`getrusage(RUSAGE_CHILDREN)` in a wrapper process that runs nothing else.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.data import write_events

JOB = Path(__file__).parent / "jobs" / "polars_features.py"
WRAPPER = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
if done.returncode:
    sys.exit(done.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def peak_rss_mib(events: Path, output: Path) -> float:
    command = [
        sys.executable,
        "-m",
        "engine",
        "backfill",
        str(JOB),
        "--start",
        "2024-10-26",
        "--end",
        "2024-10-28",
        "--output",
        str(output),
        "--json",
    ]
    env = {**os.environ, "BENCH_EVENTS": str(events)}
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, *command],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return int(done.stdout.strip()) / 1024  # ru_maxrss is in KiB on Linux


def main(workdir: Path) -> dict[int, float]:
    peaks = {}
    for rows in (200_000, 2_000_000):
        events = write_events(workdir / f"events-{rows}.parquet", rows, days=2)
        peaks[rows] = peak_rss_mib(events, workdir / f"out-{rows}")
    print("\nPeak RSS of a polars-mode backfill over two daily intervals (largest process)")
    print(f"{'source rows':>12} {'peak RSS':>10} {'vs 200k':>8}")
    for rows, peak in peaks.items():
        print(f"{rows:>12,} {peak:>7.0f} MiB {peak / peaks[200_000]:>7.2f}x")
    print("target: 2M rows < 2.00x the 200k peak")
    return peaks
