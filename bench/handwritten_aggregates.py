"""Scenario 14's hand-written contender: one DuckDB query computing what
bench/jobs/aggregates.py does, as an engineer would write it without Rivulet.

`python -m bench.handwritten_aggregates EVENTS DAYS OUTPUT.parquet`: per user and day, the
count, sum and mean of amounts over the 1, 7 and 30 days before each day's end, for every
user with a transaction in the 30 days before it (daily totals first, then a range join).
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta

import duckdb

from bench.data import START
from bench.jobs.aggregates import WINDOWS

QUERY = """
COPY (
    WITH daily AS (
        SELECT user_id, date_trunc('day', timestamp) AS day, count(*) AS n, sum(amount) AS s
        FROM read_parquet($events) GROUP BY ALL
    ),
    ends AS (
        SELECT user_id, unnest(generate_series(min(day) + INTERVAL 1 DAY,
            least(max(day) + INTERVAL 30 DAY, $end), INTERVAL 1 DAY)) AS timestamp
        FROM daily GROUP BY user_id
    )
    SELECT e.user_id, e.timestamp, {features}
    FROM ends e JOIN daily d ON d.user_id = e.user_id
        AND d.day >= e.timestamp - INTERVAL 30 DAY AND d.day < e.timestamp
    GROUP BY ALL ORDER BY e.timestamp, e.user_id
) TO '{output}' (FORMAT parquet, COMPRESSION zstd)
"""


def features() -> str:
    """Each window's count, sum and mean, named as Rivulet names them."""
    columns = []
    for days in WINDOWS:
        since = f"FILTER (WHERE d.day >= e.timestamp - INTERVAL {days} DAY)"
        columns += [
            f"coalesce(sum(d.n) {since}, 0) AS transaction_count_{days}d_1d",
            f"sum(d.s) {since} AS amount_sum_{days}d_1d",
            f"sum(d.s) {since} / sum(d.n) {since} AS amount_mean_{days}d_1d",
        ]
    return ", ".join(columns)


def main() -> None:
    events, days, output = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    began = time.perf_counter()
    end = START + timedelta(days=days)
    duckdb.sql(
        QUERY.format(features=", ".join([features()]), output=output),
        params={"events": events, "end": end},
    )
    print(f"{time.perf_counter() - began:.3f}")


if __name__ == "__main__":
    main()
