"""Online views publish each committed interval's newest row per entity, to SQLite or Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine import backfill
from engine.errors import SettingsError
from engine.online.rows import Found, newest_entries, read_features
from engine.online.stores import OnlineStore, open_store
from engine.plan.job import load_job
from tests.conftest import REPO, run_cli

LATEST = """
@batch_feature_view(name="latest", mode="polars", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26), online=True, ttl="{ttl}",
    features=[Attribute("amount", Float64), Attribute("text", String),
              Attribute("quantity", Int64), Attribute("seen", Timestamp),
              Attribute("pair", Array(Float64))])
def latest(df, context):
    return df.select("user_id", "timestamp", "amount", "text", "quantity",
                     pl.col("timestamp").alias("seen"),
                     pl.concat_list("amount", pl.col("amount") * 2).alias("pair"))
"""
USERS = ["u0", "u1", "u2"]
DAY = timedelta(days=1)
START = datetime(2024, 10, 26, tzinfo=UTC)


@pytest.fixture
def online_job(write_job: Callable[..., Path]) -> Callable[[str], Path]:
    return lambda ttl="30d": write_job(LATEST.format(ttl=ttl))


def newest_offline(out: Path) -> dict[str, dict[str, Any]]:
    """Each user's newest committed row, by a query written here."""
    rows = duckdb.sql(
        f"""SELECT * EXCLUDE (timestamp)
        FROM read_parquet('{out}/latest/**/data.parquet', hive_partitioning = false)
        QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY timestamp DESC) = 1"""
    ).to_arrow_table()
    return {row.pop("user_id"): row for row in rows.to_pylist()}


@pytest.fixture
def read_online(tmp_path: Path) -> Iterator[Callable[..., list[Found]]]:
    stores: list[OnlineStore] = []

    def read(job: Path, url: str | None, now: datetime, users: list[str] = USERS) -> list[Found]:
        stores.append(open_store(url, tmp_path / "o"))
        view = load_job(job).feature_views["latest"]
        return read_features(stores[-1], "job", [(view, [user]) for user in users], now)

    yield read
    for store in stores:
        store.close()


def test_after_a_backfill_each_entity_has_its_newest_row_online(
    online_job, tmp_path, store_url, read_online
) -> None:
    job, out = online_job(), tmp_path / "o"
    summary = backfill(job, START, START + 3 * DAY, output=out, online_store=store_url)
    assert summary.ok
    found = read_online(job, store_url, START + 3 * DAY)
    newest = newest_offline(out)
    assert [f.values for f in found] == [newest[user] for user in USERS]
    assert {f.status for f in found} == {"PRESENT"}
    assert all(f.timestamp is not None and f.timestamp >= START + 2 * DAY for f in found)


def test_backfilling_older_intervals_afterwards_changes_nothing_online(
    online_job, tmp_path, store_url, read_online
) -> None:
    job, out = online_job(), tmp_path / "o"
    assert backfill(job, START + 2 * DAY, START + 3 * DAY, output=out, online_store=store_url).ok
    before = read_online(job, store_url, START + 3 * DAY)
    assert backfill(job, START, START + 2 * DAY, output=out, online_store=store_url).ok
    assert read_online(job, store_url, START + 3 * DAY) == before
    assert [f.values for f in before] == [newest_offline(out)[user] for user in USERS]


def test_a_row_older_than_the_ttl_is_expired_and_an_unknown_entity_missing(
    online_job, tmp_path, store_url, read_online
) -> None:
    job = online_job(ttl="1d")
    assert backfill(job, START, START + 3 * DAY, output=tmp_path / "o", online_store=store_url).ok
    fresh, unknown = read_online(job, store_url, START + 3 * DAY, ["u0", "nobody"])
    assert fresh.status == "PRESENT" and fresh.values["amount"] is not None
    assert unknown == Found(dict.fromkeys(fresh.values), "MISSING", None)
    assert fresh.timestamp is not None
    stale = read_online(job, store_url, fresh.timestamp + DAY + timedelta(microseconds=1), ["u0"])
    assert stale == [Found(dict.fromkeys(fresh.values), "EXPIRED", fresh.timestamp)]
    (aged,) = read_online(job, store_url, fresh.timestamp + DAY, ["u0"])  # exactly ttl old
    assert aged == fresh


def test_a_kill_between_the_offline_commit_and_the_online_write_is_repaired(
    online_job, tmp_path, store_url, read_online
) -> None:
    job, out = online_job(), tmp_path / "o"
    command = [sys.executable, "-m", "engine", "backfill", str(job), "--start", "2024-10-26",
               "--end", "2024-10-29", "--output", str(out)]  # fmt: skip
    env = {**os.environ, "RIVULET_KILL_AT": "published:3"}  # the last interval's
    if store_url:
        env["RIVULET_ONLINE_STORE"] = store_url
    killed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    newest = newest_offline(out)  # all three intervals were committed offline
    behind = read_online(job, store_url, START + 3 * DAY)
    assert [f.values for f in behind] != [newest[user] for user in USERS]
    env.pop("RIVULET_KILL_AT")
    rerun = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    said = " ".join((rerun.stdout + rerun.stderr).split())
    assert "published 1 committed interval(s) of latest that the online store" in said
    repaired = read_online(job, store_url, START + 3 * DAY)
    assert [f.values for f in repaired] == [newest[user] for user in USERS]
    assert newest_offline(out) == newest  # nothing recomputed, nothing lost


def test_online_load_fills_a_new_store_from_the_offline_files(
    online_job, tmp_path, store_url, read_online
) -> None:
    job, out = online_job(), tmp_path / "o"
    elsewhere = f"sqlite://{tmp_path / 'elsewhere.sqlite'}"  # the store to load is new
    assert backfill(job, START, START + 3 * DAY, output=out, online_store=elsewhere).ok
    assert {f.status for f in read_online(job, store_url, START + 3 * DAY)} == {"MISSING"}
    chosen = ["--online-store", store_url] if store_url else []
    for _ in range(2):  # loading again changes nothing
        loaded = run_cli("online", "load", job, "--output", out, *chosen)
        assert loaded.returncode == 0, loaded.stderr
        assert "Published 3 interval(s) to the online store." in loaded.stdout
        found = read_online(job, store_url, START + 3 * DAY)
        assert [f.values for f in found] == [newest_offline(out)[user] for user in USERS]


def test_online_load_of_a_folder_that_is_no_store_says_so(online_job, tmp_path) -> None:
    loaded = run_cli("online", "load", online_job(), "--output", tmp_path / "nothing")
    assert loaded.returncode == 2
    assert "is not an offline store" in loaded.stderr and "Traceback" not in loaded.stderr


def test_an_unreachable_online_store_stops_the_run_before_any_work(online_job, tmp_path) -> None:
    with pytest.raises(SettingsError, match=r"online store at redis://127\.0\.0\.1:1/0 does not"):
        backfill(online_job(), START, START + DAY, output=tmp_path / "o",
                 online_store="redis://127.0.0.1:1/0")  # fmt: skip
    assert not (tmp_path / "o" / "latest").exists()


def test_newest_rows_across_files_of_two_definitions_give_a_missing_feature_as_null(
    online_job, tmp_path
) -> None:
    view = load_job(online_job()).feature_views["latest"]
    at = [datetime(2024, 10, 26, 12, tzinfo=UTC), datetime(2024, 10, 27, 12, tzinfo=UTC)]
    old, new = tmp_path / "old.parquet", tmp_path / "new.parquet"
    row = {"user_id": ["u0"], "amount": [1.5], "text": ["a"], "quantity": [1], "seen": [at[0]]}
    pq.write_table(pa.table({**row, "timestamp": [at[0]]}), old)  # before "pair" was added
    pq.write_table(pa.table({**row, "timestamp": [at[1]], "pair": [[1.5, 3.0]]}), new)
    [(key, ts, features)] = newest_entries(view, [old, new])
    assert key == '["u0"]' and ts == int(at[1].timestamp() * 1_000_000)
    assert json.loads(features)["pair"] == [1.5, 3.0]
    [(_, _, older)] = newest_entries(view, [old])
    assert json.loads(older)["pair"] is None
