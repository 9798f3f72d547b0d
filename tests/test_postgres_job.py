"""jobs/enrichment_postgres.py against a real PostgreSQL server (skipped when none answers)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from engine import backfill
from jobs.enrichment_postgres import TABLE_ENV, make_profiles
from tests.conftest import REPO
from tests.services import require_postgres

JOB = REPO / "jobs" / "enrichment_postgres.py"
EVENTS = REPO / "fixtures" / "data" / "events"
VIEW = "user_profile_enrichment"
START, END = datetime(2024, 10, 26), datetime(2024, 10, 29)
MICRO_BATCH = 100

# u06 has events but no profile; u04's zero limit and u05's missing one give no ratio.
PROFILES: dict[str, tuple[str, float | None, date]] = {
    "u01": ("gold", 2500.0, date(2021, 3, 14)),
    "u02": ("silver", 1000.0, date(2022, 7, 1)),
    "u03": ("bronze", 333.0, date(2023, 11, 30)),
    "u04": ("gold", 0.0, date(2020, 1, 5)),
    "u05": ("new", None, date(2024, 10, 27)),
    "u99": ("ghost", 1.0, date(2024, 1, 1)),
}


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    return require_postgres()


@pytest.fixture
def profiles_table(postgres_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A freshly made, uniquely named profiles table, named to the job by env; dropped after."""
    table = f"rivulet_test_profiles_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv(TABLE_ENV, table)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        make_profiles(conn, PROFILES)
        conn.execute(f"ANALYZE {table}")  # a one-page table: the planner picks one seq scan
    try:
        yield table
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


def table_scans(conn: psycopg.Connection, table: str) -> int:
    """Sequential plus index scans of `table` that the server's statistics have recorded."""
    row = conn.execute(
        "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables "
        "WHERE relid = %s::regclass",
        [table],
    ).fetchone()
    assert row is not None
    return row[0]


def wait_for_exit(conn: psycopg.Connection, application_name: str) -> None:
    """Wait until the backends of `application_name` have exited, so their statistics are in.

    The job's pools closed their connections, but backends flush statistics as they exit, after
    the client has gone; pg_terminate_backend(pid, timeout) waits for that exit.
    """
    pids = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s", [application_name]
    ).fetchall()
    for (pid,) in pids:
        conn.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
    left = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [application_name]
    ).fetchone()
    assert left == (0,)


def expected_rows() -> list[tuple[Any, ...]]:
    """Each source event in [START, END), in source order, with the features computed here."""
    source = duckdb.sql(
        f"SELECT user_id, timestamp, amount FROM '{EVENTS}/*.parquet' "
        "WHERE timestamp >= $start AND timestamp < $end",
        params={"start": START, "end": END},
    ).fetchall()
    rows = []
    for user_id, timestamp, amount in source:
        segment, limit, signup = PROFILES.get(user_id, (None, None, None))
        ratio = amount / limit if limit else None
        days = (timestamp.date() - signup).days if signup else None
        rows.append((user_id, timestamp, segment, limit, ratio, days))
    return rows


def written_rows(output: Path) -> list[tuple[Any, ...]]:
    return duckdb.sql(
        "SELECT user_id, timezone('UTC', timestamp), segment, credit_limit, amount_over_limit, "
        f"days_since_signup FROM read_parquet('{output}/{VIEW}/*/*.parquet', "
        "hive_partitioning = false)"
    ).fetchall()


@pytest.mark.parametrize("workers", [1, 2])
def test_enrichment_matches_the_table_with_one_query_per_micro_batch(
    workers: int,
    postgres_dsn: str,
    profiles_table: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    app = f"rivulet-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(
        "RIVULET_SECRET_POSTGRES__DSN", make_conninfo(postgres_dsn, application_name=app)
    )
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")  # our set-up's scans count before
        before = table_scans(conn, profiles_table)

        summary = backfill(JOB, START, END, output=tmp_path, workers=workers)

        assert summary.ok, summary.failed
        wait_for_exit(conn, app)
        queries = table_scans(conn, profiles_table) - before

    expected = expected_rows()
    assert written_rows(tmp_path) == expected
    assert len(expected) == summary.rows_by_view[VIEW] > 700
    assert {row[2] for row in expected} == {"gold", "silver", "bronze", "new", None}
    micro_batches = sum(-(-r.rows // MICRO_BATCH) for r in summary.results)
    assert len(summary.results) == 3
    assert queries == micro_batches
    builds = sum(w.stats.builds["profiles_db"] for w in summary.workers)
    teardowns = sum(w.stats.teardowns["profiles_db"] for w in summary.workers)
    assert 1 <= builds == teardowns <= workers


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://postgres:hunter2-secret@127.0.0.1:1/test",  # nothing listens on port 1
        "postgresql://postgres:hunter2%zz@127.0.0.1:5432/test",  # libpq quotes bad tokens
    ],
)
def test_a_bad_dsn_fails_the_run_naming_the_provider_not_the_password(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RIVULET_SECRET_POSTGRES__DSN", dsn)
    summary = backfill(JOB, START, datetime(2024, 10, 27), output=tmp_path)

    [failed] = summary.failed
    assert failed.error_kind == "Resource error"
    assert failed.error.startswith("Resource provider 'profiles_db' failed to build its resource")
    for text in (failed.error, failed.detail):
        assert "hunter2" not in text
    assert list(tmp_path.rglob("*.parquet")) == []
