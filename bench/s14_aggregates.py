"""Scenario 14: time-window aggregations (issue 15). 10M transactions of 50k users over 60
days; counts, amount sums and means over 1, 7 and 30 days, moving daily.

Rivulet is `rivulet backfill` of bench/jobs/aggregates.py (60 daily intervals, each
committing its tiles) then `rivulet read ... --format parquet` (the windows merged from
the tiles), two fresh processes; the reference is one hand-written DuckDB query
(bench/handwritten_aggregates.py) writing the same features to Parquet, in a fresh process
too. Both results are checked to hold the same rows and totals.
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb

from bench.data import write_transactions
from bench.harness import (
    RIVULET,
    Measured,
    Row,
    Scenario,
    fresh_dir,
    measure_command,
    repeats,
    rivulet_cli,
)

ROWS, USERS, DAYS = 10_000_000, 50_000, 60
JOB = "aggregates"
TARGET = 1.3


def run(workdir: Path, quick: bool) -> Scenario:
    rows = ROWS // 10 if quick else ROWS
    path = workdir / "data" / f"transactions-{rows}-{USERS}.parquet"
    if not path.exists():
        write_transactions(path, rows, DAYS, USERS)
    env = {"BENCH_EVENTS": str(path)}
    times = repeats(quick)
    hand, ours = [], []
    for _ in range(times):
        out = fresh_dir(workdir, "hand") / "features.parquet"
        out.parent.mkdir(parents=True)
        command = [sys.executable, "-m", "bench.handwritten_aggregates", str(path), str(DAYS)]
        hand.append((measure_command([*command, str(out)], env), out))
        ours.append(_rivulet(workdir, env))
    (theirs, their_out), (mine, my_out) = _median(hand), _median(ours)
    checked = _same(my_out, their_out)
    table = [
        Row("hand-written DuckDB query", theirs.seconds, 1.0, f"peak {theirs.peak_mib:,.0f} MiB"),
        Row(
            "rivulet backfill + read",
            mine.seconds,
            mine.seconds / theirs.seconds,
            f"peak {mine.peak_mib:,.0f} MiB; {checked}",
        ),
    ]
    return Scenario(
        name="s14_aggregates",
        title=f"14. Aggregations: {rows:,} transactions, {USERS:,} users, {DAYS} days, "
        f"count/sum/mean over 1/7/30 days",
        unit="s",
        rows=table,
        target=f"rivulet <= {TARGET}x the hand-written query's time",
        met=mine.seconds <= TARGET * theirs.seconds,
        notes=[
            f"fresh processes, start-up included, median of {times} run(s); rivulet's time is "
            f"its backfill's (1 worker) plus its read's, its peak the larger of the two",
        ],
        higher_is_better=False,
    )


def _rivulet(workdir: Path, env: dict[str, str]) -> tuple[Measured, Path]:
    backfill = rivulet_cli(workdir, JOB, DAYS, "--workers", "1")
    output = Path(backfill[backfill.index("--output") + 1])
    built = measure_command(backfill, env)
    result = output.parent / f"{output.name}-features.parquet"
    read = [RIVULET, "read", backfill[2], "user_windows", "--output", str(output),
            "--format", "parquet", "--to", str(result)]  # fmt: skip
    merged = measure_command(read, env)
    return Measured(built.seconds + merged.seconds, max(built.peak_mib, merged.peak_mib)), result


def _median(runs: list[tuple[Measured, Path]]) -> tuple[Measured, Path]:
    """The run of median time, with its output."""
    return sorted(runs, key=lambda run: run[0].seconds)[len(runs) // 2]


def _same(ours: Path, theirs: Path) -> str:
    """Both outputs' row counts and totals agree (else the figures compare different work)."""
    totals = ", ".join(
        f"sum(transaction_count_{d}d_1d), round(sum(amount_sum_{d}d_1d), 2)" for d in (1, 7, 30)
    )
    [mine] = duckdb.sql(f"SELECT count(*), {totals} FROM '{ours}'").fetchall()
    [hand] = duckdb.sql(f"SELECT count(*), {totals} FROM '{theirs}'").fetchall()
    if mine != hand:
        raise RuntimeError(f"scenario 14: rivulet's features {mine} differ from the query's {hand}")
    return f"same {mine[0]:,} rows and totals"
