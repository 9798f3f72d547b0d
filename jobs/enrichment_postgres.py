"""Enrich user events with profile columns from PostgreSQL, one query per micro-batch.

A worker opens one psycopg connection pool and closes it at shutdown. Each micro-batch of
events looks up all its distinct user_ids in a single `WHERE user_id = ANY(%s)` query;
users absent from the table get null features.

Run it against a local server:

    export RIVULET_SECRET_POSTGRES__DSN=postgresql://postgres@127.0.0.1:5432/test
    python jobs/enrichment_postgres.py    # creates and fills the demo table (make_profiles)
    rivulet backfill jobs/enrichment_postgres.py --start 2024-10-26 --end 2024-10-29

The table name comes from RIVULET_PROFILES_TABLE (default `user_profiles`; `schema.table`
is allowed).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from engine import (
    Attribute,
    BatchSource,
    Entity,
    Field,
    FileConfig,
    Float64,
    GoldenTest,
    Int64,
    Secret,
    String,
    batch_feature_view,
    resource_provider,
)

EVENTS = Path(__file__).resolve().parent.parent / "fixtures" / "data" / "events"
TABLE_ENV = "RIVULET_PROFILES_TABLE"
CONCURRENCY = 4  # micro-batches in flight per worker; the pool holds as many connections
CONNECT_TIMEOUT = 5  # seconds, for each new connection and for the pool to fill

# Demo profiles: u05 has no credit limit, u06 has no row at all.
PROFILES: dict[str, tuple[str, float | None, date]] = {
    "u01": ("gold", 2500.0, date(2021, 3, 14)),
    "u02": ("silver", 1000.0, date(2022, 7, 1)),
    "u03": ("bronze", 300.0, date(2023, 11, 30)),
    "u04": ("gold", 5000.0, date(2020, 1, 5)),
    "u05": ("new", None, date(2024, 10, 1)),
}

PROFILE_SCHEMA = {
    "user_id": pl.String,
    "segment": pl.String,
    "credit_limit": pl.Float64,
    "signup_date": pl.Date,
}

events = BatchSource(
    name="events",
    batch_config=FileConfig(uri=str(EVENTS), file_format="parquet", timestamp_field="timestamp"),
)
user = Entity(name="user_id", join_keys=[Field("user_id", String)])
# `rivulet test` compares two days with fixtures/golden/enrichment_postgres/, made from
# the demo PROFILES (`python jobs/enrichment_postgres.py` fills the table with them).
golden = GoldenTest(
    start=datetime(2024, 10, 26),
    end=datetime(2024, 10, 28),
    golden_dir=EVENTS.parents[1] / "golden" / "enrichment_postgres",
)


def profiles_table() -> Any:
    """The profiles table from RIVULET_PROFILES_TABLE, quoted as an SQL identifier."""
    from psycopg import sql

    return sql.Identifier(*os.environ.get(TABLE_ENV, "user_profiles").split("."))


def make_profiles(
    conn: Any, profiles: Mapping[str, tuple[str, float | None, date]] = PROFILES
) -> None:
    """Create the profiles table (replacing it) and fill it with `profiles`; commits."""
    from psycopg import sql

    table = profiles_table()
    with conn.transaction():
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (user_id text PRIMARY KEY, segment text, "
                "credit_limit double precision, signup_date date)"
            ).format(table)
        )
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s)").format(table),
                [(user_id, *profile) for user_id, profile in profiles.items()],
            )


@resource_provider(
    secrets={"dsn": Secret(scope="postgres", key="dsn")},
    description="A psycopg connection pool to the profiles database.",
)
def profiles_db(context) -> Iterator[Any]:
    """Open a pool once per worker; close it when the worker shuts down."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
    from psycopg_pool import ConnectionPool

    dsn = context.secrets["dsn"]
    try:
        conninfo_to_dict(dsn)
    except psycopg.Error:
        # libpq's parse errors quote the offending part, which may be the password.
        raise ValueError("the secret postgres/dsn is not a valid libpq DSN") from None
    # One direct connection first: it fails fast, with the server's reason, where the
    # pool's wait() would only time out.
    psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT).close()
    pool = ConnectionPool(
        dsn,
        min_size=1,
        max_size=CONCURRENCY,
        kwargs={"connect_timeout": CONNECT_TIMEOUT},
        name="rivulet-profiles",
        open=True,
    )
    try:
        pool.wait(timeout=CONNECT_TIMEOUT)
        yield pool
    finally:
        pool.close()


def lookup_profiles(pool: Any, user_ids: list[str]) -> pl.DataFrame:
    """The profile rows of `user_ids`, in one query; users without a row are absent."""
    from psycopg import sql

    query = sql.SQL(
        "SELECT user_id, segment, credit_limit, signup_date FROM {} WHERE user_id = ANY(%s)"
    ).format(profiles_table())
    with pool.connection() as conn:
        rows = conn.execute(query, [user_ids]).fetchall()
    return pl.DataFrame(rows, schema=PROFILE_SCHEMA, orient="row")


@batch_feature_view(
    name="user_profile_enrichment",
    mode="polars",
    sources=[events],
    entities=[user],
    batch_schedule=timedelta(days=1),
    feature_start_time=datetime(2024, 10, 26),
    timestamp_field="timestamp",
    features=[
        Attribute("segment", String),
        Attribute("credit_limit", Float64),
        Attribute("amount_over_limit", Float64),
        Attribute("days_since_signup", Int64),
    ],
    resource_providers={"db": profiles_db},
    micro_batch_size=100,
    concurrency=CONCURRENCY,
)
def user_profile_enrichment(events: pl.DataFrame, context) -> pl.DataFrame:
    """Join each event to its user's profile; amount_over_limit is null without a limit > 0."""
    user_ids = events["user_id"].unique().drop_nulls().to_list()
    profiles = lookup_profiles(context.resources["db"], user_ids)
    limit = pl.col("credit_limit")
    return (
        events.select("user_id", "timestamp", "amount")
        .join(profiles, on="user_id", how="left", maintain_order="left")
        .select(
            "user_id",
            "timestamp",
            "segment",
            "credit_limit",
            pl.when(limit > 0).then(pl.col("amount") / limit).alias("amount_over_limit"),
            (pl.col("timestamp").dt.date() - pl.col("signup_date"))
            .dt.total_days()
            .alias("days_since_signup"),
        )
    )


if __name__ == "__main__":
    import psycopg

    with psycopg.connect(os.environ["RIVULET_SECRET_POSTGRES__DSN"], autocommit=True) as conn:
        make_profiles(conn)
    print(f"Created table {os.environ.get(TABLE_ENV, 'user_profiles')} with the demo profiles.")
