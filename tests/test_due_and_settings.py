"""What a run computes and refuses: due intervals, data delay, runaway settings, --json errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine import backfill, run_due
from engine.plan.intervals import split_due
from engine.plan.job import load_job
from engine.store.ledger import Ledger
from tests.conftest import run_cli

DAY = timedelta(days=1)
NOW = datetime(2024, 10, 29, 6, tzinfo=UTC)  # the clock the runs below are given
VIEW = """
@batch_feature_view(name="view", mode="python", sources=[{source}], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("n", Int64)])
def view(row):
    return {{"n": row["quantity"]}}
"""
DELAYED = """
delayed = BatchSource("delayed", batch_config=FileConfig(
    uri=EVENTS, timestamp_field="timestamp", data_delay=timedelta(hours=12)))
"""


def test_an_interval_is_due_once_it_ended_and_its_data_delay_passed() -> None:
    days = [
        (datetime(2024, 10, d, tzinfo=UTC), datetime(2024, 10, d + 1, tzinfo=UTC))
        for d in (26, 27, 28)
    ]
    assert split_due(days, timedelta(0), NOW) == (days[:3], [])
    assert split_due(days, timedelta(hours=6), NOW) == (days[:3], [])  # the 29th, 00:00 + 6 h
    assert split_due(days, timedelta(hours=7), NOW) == (days[:2], days[2:])
    assert split_due(days, timedelta(0), days[2][1] - timedelta(microseconds=1)) == (
        days[:2],
        days[2:],
    )


def test_backfill_into_the_future_commits_only_what_has_ended(write_job, tmp_path) -> None:
    job = write_job(VIEW.format(source="events"))
    summary = backfill(job, datetime(2024, 10, 26), NOW + 4 * DAY, output=tmp_path / "o", now=NOW)
    assert summary.ok and len(summary.results) == 3  # the 26th to the 28th; the 29th is open
    assert any("5 interval(s) from 2024-10-29 00:00 are not due yet" in n for n in summary.notes)
    starts = [e.interval_start.day for e in Ledger(tmp_path / "o").entries(state="committed")]
    assert starts == [26, 27, 28]


def test_data_delay_holds_back_an_interval_until_its_data_is_complete(write_job, tmp_path) -> None:
    job = write_job(DELAYED + VIEW.format(source="delayed"))
    early = run_due(job, output=tmp_path / "o", now=datetime(2024, 10, 28, 11, tzinfo=UTC))
    assert [r.task.start.day for r in early.results] == [26]  # the 27th's data lands at 12:00
    assert any("data_delay of 12:00:00" in note for note in early.notes)
    later = run_due(job, output=tmp_path / "o", now=datetime(2024, 10, 28, 12, tzinfo=UTC))
    assert [r.task.start.day for r in later.results] == [27]


def test_run_until_the_future_leaves_what_has_not_ended_for_later(write_job, tmp_path) -> None:
    job = write_job(VIEW.format(source="events"))
    summary = run_due(job, NOW + 30 * DAY, output=tmp_path / "o", now=NOW)
    assert summary.ok and [r.task.start.day for r in summary.results] == [26, 27, 28]
    assert any("later than now" in note for note in summary.notes)


def test_backfill_by_the_real_clock_commits_no_open_interval(write_job, tmp_path) -> None:
    # Today's interval is not committed (empty or partial): rows that land later still count.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    events = tmp_path / "live.parquet"
    table = pa.table(
        {"user_id": ["u0"], "timestamp": [today - timedelta(hours=1)], "quantity": [5]}
    )
    pq.write_table(table, events)
    job = write_job(
        f'live = BatchSource("live", batch_config=FileConfig(uri="{events}", '
        f'timestamp_field="timestamp"))\n'
        + VIEW.format(source="live").replace(
            "datetime(2024, 10, 26)", f"datetime({(today - DAY):%Y, %-m, %-d})"
        )
    )
    first = run_cli("backfill", job, "--start", (today - DAY).date(), "--end",
                    (today + 3 * DAY).date(), "--output", tmp_path / "o")  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "are not due yet" in first.stderr
    committed = [e.interval_start for e in Ledger(tmp_path / "o").entries(state="committed")]
    assert committed == [today - DAY]
    rows = duckdb.sql(f"SELECT count(*) FROM '{tmp_path}/o/view/*/*.parquet'").fetchall()
    assert rows == [(1,)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate-limit", "api=inf"], "--rate-limit api=inf must lie between 0.001 and"),
        (["--rate-limit", "api=1e-300"], "--rate-limit api=1e-300 must lie between 0.001 and"),
        (["--start", "0001-01-01", "--end", "9999-12-31"], "a run plans at most 100,000"),
    ],
)
def test_runaway_settings_are_refused_before_any_work(write_job, tmp_path, args, message):
    job = write_job(
        """
@resource_provider
def api():
    return "api"
"""
        + VIEW.format(source="events").replace(
            'features=[Attribute("n", Int64)]',
            'features=[Attribute("n", Int64)], resource_providers={"api": api}',
        )
    )
    days = ["--start", "2024-10-26", "--end", "2024-10-27"] if "--start" not in args else []
    result = run_cli("backfill", job, *days, *args, "--output", tmp_path / "o")
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_too_many_workers_are_capped_with_a_note(write_job, tmp_path) -> None:
    job = write_job(VIEW.format(source="events"))
    result = run_cli("backfill", job, "--start", "2024-10-26", "--end", "2024-10-29",
                     "--workers", "1000", "--output", tmp_path / "o", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert any(n.startswith("--workers 1000 was capped at ") for n in summary["notes"])
    assert len(summary["resource_builds_by_worker"]) <= 3


def test_json_answers_bad_input_on_stdout(write_job, tmp_path) -> None:
    job = write_job(VIEW.format(source="events"))
    result = run_cli("backfill", job, "--start", "2024-10-27", "--end", "2024-10-26",
                     "--output", tmp_path / "o", "--json")  # fmt: skip
    assert result.returncode == 2 and result.stderr == ""
    answer = json.loads(result.stdout)
    assert answer["ok"] is False and answer["error"]["kind"] == "Settings error"
    assert "is not before the end" in answer["error"]["message"]


def test_call_policies_do_not_mark_committed_intervals_stale(write_job, tmp_path) -> None:
    body = """
@resource_provider({policies})
def api():
    return "api"

@batch_feature_view(name="view", mode="python", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26), {view_policies}
    features=[Attribute("n", Int64)], resource_providers={{"api": api}})
def view(row, context):
    return {{"n": row["quantity"]}}
"""
    plain = write_job(body.format(policies="", view_policies=""), name="plain")
    tuned = write_job(
        body.format(
            policies="rate_limit=RateLimit(requests_per_second=5), max_concurrency=2, "
            "retry=RetryPolicy(max_attempts=9), thread_safety='serialize', timeout=5",
            view_policies="concurrency=3, retry=RetryPolicy(max_attempts=2), timeout=9, "
            "micro_batch_size=7,",
        ),
        name="tuned",
    )
    changed = write_job(
        body.format(policies="", view_policies="").replace('row["quantity"]', "1"),
        name="changed",
    )
    fingerprint = {
        p.stem: load_job(p).feature_views["view"].fingerprint for p in (plain, tuned, changed)
    }
    assert fingerprint["plain"] == fingerprint["tuned"] != fingerprint["changed"]


def test_offline_false_is_left_out_even_when_online(write_job, tmp_path) -> None:
    job = write_job(
        VIEW.format(source="events")
        + VIEW.format(source="events")
        .replace('name="view"', 'name="offline_off", offline=False')
        .replace("def view(", "def offline_off(")
        + VIEW.format(source="events")
        .replace('name="view"', 'name="online_only", offline=False, online=True')
        .replace("def view(", "def online_only(")
    )
    summary = backfill(job, datetime(2024, 10, 26), datetime(2024, 10, 27), output=tmp_path / "o")
    assert summary.ok and sorted(summary.rows_by_view) == ["view"]
    assert "Feature view 'offline_off' has offline=False and is left out." in summary.notes
    assert any("'online_only' has offline=False and is left out: Rivulet publishes" in n
               for n in summary.notes)  # fmt: skip
    planned = run_cli("plan", job, "--start", "2024-10-26", "--end", "2024-10-27",
                      "--output", tmp_path / "o")  # fmt: skip
    assert planned.returncode == 0
    assert "offline=False and is left out" in " ".join(planned.stderr.split())  # a note
    assert "offline_off" not in planned.stdout  # and no row of the plan
