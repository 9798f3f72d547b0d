"""Scenario 11: the seed's batch view as users run it (`jobs/seed_embed.py`: python mode, the
real openai client, one call per row) over the bundled events, mock API at 50 and 5 ms.

Rivulet (`rivulet backfill`, one and two workers) against the hand-written DuckDB + 64
threads + pyarrow script (`handwritten_seed.py`, the reference); each is a fresh process
timed from start to exit, start-up included, and must write every row.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import duckdb

from bench.data import START
from bench.harness import (
    ROOT,
    Measured,
    Row,
    Scenario,
    end_of,
    fresh_dir,
    measure_command,
    median_measured,
    repeats,
    rivulet_cli,
)
from fixtures.mock_api import MockAPI

EVENTS = ROOT / "fixtures" / "data" / "events"
JOB = "seed_embed"
DAYS = 14  # all of the bundle; 2 in --quick mode
LATENCIES_MS = (50, 5)
HANDWRITTEN = "hand-written DuckDB + 64 threads + pyarrow"


def bundled_rows(days: int) -> int:
    """The bundled events of the first `days` days."""
    query = (
        "SELECT count(*) FROM read_parquet($path) WHERE timestamp >= $start AND timestamp < $end"
    )
    params = {"path": f"{EVENTS}/*.parquet", "start": START, "end": end_of(days)}
    return duckdb.execute(query, params).fetchone()[0]


def measure(
    command: Callable[[], list[str]], env: Mapping[str, str], rows: int, times: int
) -> Measured:
    """The median of `times` fresh runs of `command`, each checked to have written `rows` rows
    (its output directory follows `--output`, or is its last argument)."""
    runs = []
    for _ in range(times):
        line = command()
        runs.append(measure_command(line, env))
        output = line[line.index("--output") + 1] if "--output" in line else line[-1]
        written = duckdb.execute(f"SELECT count(*) FROM '{output}/**/*.parquet'").fetchone()[0]
        assert written == rows, f"{line[:4]} wrote {written:,} rows of {rows:,}"
    return median_measured(runs)


def run(workdir: Path, quick: bool) -> Scenario:
    span, times = 2 if quick else DAYS, repeats(quick)
    rows = bundled_rows(span)
    commands = {
        HANDWRITTEN: lambda: [
            sys.executable, "-m", "bench.handwritten_seed", str(EVENTS), str(span),
            str(fresh_dir(workdir, "handwritten-seed")),
        ],
        "Rivulet, --workers 1": partial(rivulet_cli, workdir, JOB, span, "--workers", "1"),
        "Rivulet, --workers 2": partial(rivulet_cli, workdir, JOB, span, "--workers", "2"),
    }  # fmt: skip
    table, met = [], True
    for latency in LATENCIES_MS:
        with MockAPI(latency_ms=latency) as api:
            env = {"MOCK_API_URL": api.url}
            figures = {
                name: measure(command, env, rows, times) for name, command in commands.items()
            }
        rate = {name: rows / m.seconds for name, m in figures.items()}
        for name, m in figures.items():
            detail = f"wall {m.seconds:.2f} s, peak RSS {m.peak_mib:,.0f} MiB"
            table.append(
                Row(f"{latency} ms · {name}", rate[name], rate[name] / rate[HANDWRITTEN], detail)
            )
        one, two = (rate[f"Rivulet, --workers {n}"] / rate[HANDWRITTEN] for n in (1, 2))
        met = met and one >= 1.0 and two >= 1.6
    return Scenario(
        name="s11_seed",
        title=f"11. The seed's batch view: {rows:,} rows, {span} daily intervals, openai client",
        unit="rows/s",
        rows=table,
        target="Rivulet --workers 1 >= 1.0x the script, --workers 2 >= 1.6x, at each latency",
        met=met,
        notes=[
            f"rows/s = rows / wall time of a fresh process, start-up included, median of "
            f"{times} run(s) each; the mock API shares the 2 cores",
        ],
    )
