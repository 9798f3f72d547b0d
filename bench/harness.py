"""What every scenario shares: the result types, repeated runs, data, and measured runs."""

from __future__ import annotations

import contextlib
import itertools
import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from bench.data import START, write_events
from engine import backfill
from engine.summary import RunSummary

ROOT = Path(__file__).resolve().parent.parent
JOBS = ROOT / "bench" / "jobs"
RIVULET = str(Path(sys.executable).with_name("rivulet"))
_fresh = itertools.count()


@dataclass
class Row:
    """One contender: its median figure, the ratio to the reference, and any detail."""

    contender: str
    median: float
    ratio: float
    detail: str = ""


@dataclass
class Scenario:
    """One scenario's table: what was measured, its rows, its target and whether it is met."""

    name: str
    title: str
    unit: str
    rows: list[Row]
    target: str
    met: bool | None
    notes: list[str] = field(default_factory=list)
    higher_is_better: bool = True


def repeats(quick: bool) -> int:
    """Runs per figure: three (the median), one in --quick mode."""
    return 1 if quick else 3


def median(measure: Callable[[], float], times: int) -> float:
    """The median of `times` calls of `measure`."""
    return statistics.median(measure() for _ in range(times))


def events(workdir: Path, rows: int, days: int) -> Path:
    """A Parquet file of `rows` synthetic events over `days` days, made once per suite run."""
    path = workdir / "data" / f"events-{rows}-{days}d.parquet"
    return path if path.exists() else write_events(path, rows, days)


def end_of(days: int) -> datetime:
    """The end of a `days`-day range starting at the data's START."""
    return START + timedelta(days=days)


def fresh_dir(workdir: Path, prefix: str) -> Path:
    """A new output directory, so no run finds intervals committed by another."""
    return workdir / "out" / f"{prefix}-{next(_fresh)}"


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set environment variables (read by the bench jobs at import) for the block."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_backfill(
    workdir: Path,
    job: str,
    days: int,
    *,
    workers: int = 1,
    feature_views: Sequence[str] = (),
    rate_limits: Mapping[str, float] | None = None,
) -> RunSummary:
    """Backfill `bench/jobs/<job>.py` over `days` days into a fresh directory; it must succeed."""
    summary = backfill(
        JOBS / f"{job}.py", START, end_of(days), output=fresh_dir(workdir, job), workers=workers,
        feature_views=feature_views, rate_limits=rate_limits, overwrite=True,
    )  # fmt: skip
    assert summary.ok, [result.error for result in summary.failed]
    return summary


@dataclass(frozen=True)
class Throughput:
    """Rows per second of one run: over the intervals' compute time, and over the wall time."""

    steady: float
    wall: float


def throughput(summary: RunSummary) -> Throughput:
    """Rows/s of a one-worker run: `steady` excludes start-up (worker spawn, job import)."""
    rows = sum(summary.rows_by_view.values())
    busy = sum(result.seconds for result in summary.results)
    return Throughput(rows / busy, rows / summary.seconds)


def median_throughput(runs: Sequence[Throughput]) -> Throughput:
    return Throughput(
        statistics.median(r.steady for r in runs), statistics.median(r.wall for r in runs)
    )


_MEASURE = """
import resource, subprocess, sys, time
began = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
seconds = time.perf_counter() - began
if done.returncode:
    sys.exit(done.stdout[-2000:] + done.stderr[-2000:])
print(seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


@dataclass(frozen=True)
class Measured:
    """Wall time and peak RSS (the largest process of the command's tree) of one command."""

    seconds: float
    peak_mib: float


def measure_command(command: Sequence[str], env: Mapping[str, str] | None = None) -> Measured:
    """Run `command` from a wrapper process that runs nothing else, so that its
    `getrusage(RUSAGE_CHILDREN)` peak RSS is the command's own (workers included)."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command],
        capture_output=True, text=True, check=False, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr}")
    seconds, kib = done.stdout.split()
    return Measured(float(seconds), int(kib) / 1024)  # ru_maxrss is in KiB on Linux


def median_measured(runs: Sequence[Measured]) -> Measured:
    return Measured(
        statistics.median(r.seconds for r in runs), statistics.median(r.peak_mib for r in runs)
    )


def rivulet_cli(
    workdir: Path, job: str, days: int, *extra: str, prefix: str | None = None
) -> list[str]:
    """The `rivulet backfill` command line for `bench/jobs/<job>.py` into a fresh directory."""
    output = fresh_dir(workdir, prefix or job)
    return [
        RIVULET, "backfill", str(JOBS / f"{job}.py"), "--start", f"{START:%Y-%m-%d}",
        "--end", f"{end_of(days):%Y-%m-%d}", "--output", str(output), "--json", *extra,
    ]  # fmt: skip


def handwritten_polars(workdir: Path, path: Path, days: int) -> list[str]:
    """The command line of the hand-written DuckDB → Polars → Parquet pipeline."""
    output = fresh_dir(workdir, "handwritten")
    return [sys.executable, "-m", "bench.handwritten", "polars", str(path), str(days), str(output)]
