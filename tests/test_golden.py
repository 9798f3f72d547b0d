"""Golden tests: the bundled jobs match their committed files; edits to a copy show as diffs."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest

from engine.define.golden import GoldenTest
from engine.errors import DefinitionError, GoldenError
from engine.testing import CellChange, assert_matches_golden, find_golden_test, run_golden
from engine.testing.diff import compare
from fixtures.mock_api import MockAPI, embed, score
from jobs.enrichment_postgres import PROFILES, TABLE_ENV, make_profiles
from tests.conftest import REPO, run_cli
from tests.services import require_postgres

GOLDEN = REPO / "fixtures" / "golden"
EVENTS = REPO / "fixtures" / "data" / "events"
FRAUD = REPO / "jobs" / "fraud_signals.py"


@pytest.fixture
def fraud_env(mock_api: MockAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUD_API_URL", mock_api.url)


@pytest.fixture
def postgres_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The demo profiles (the job's defaults) in a fresh table, named to the job by env."""
    dsn = require_postgres()
    table = f"rivulet_golden_profiles_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv(TABLE_ENV, table)
    monkeypatch.setenv("RIVULET_SECRET_POSTGRES__DSN", dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        make_profiles(conn)
    try:
        yield
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


def golden_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(
    ("job", "env", "views"),
    [
        ("embeddings", "openai_env", ["text_embedding", "text_embedding_batched"]),
        ("fraud_signals", "fraud_env", ["fraud_signals", "fraud_signals_batched"]),
        ("enrichment_postgres", "postgres_env", ["user_profile_enrichment"]),
        ("transaction_scoring", "fraud_env", ["user_metrics"]),
    ],
)
def test_bundled_job_matches_its_golden_files(
    job: str, env: str, views: list[str], request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue(env)
    before = {p: p.read_bytes() for p in (GOLDEN / job).iterdir()}

    result = assert_matches_golden(REPO / "jobs" / f"{job}.py")

    assert [diff.view for diff in result.views] == views
    assert all(diff.actual_rows == diff.golden_rows >= 12 for diff in result.views)  # 6 users
    assert result.written == ()
    assert {p: p.read_bytes() for p in (GOLDEN / job).iterdir()} == before
    noun = "feature view" if len(views) == 1 else "feature views"
    assert result.render().endswith(f"Passed: {len(views)} {noun} match their golden files.")


def source_rows() -> dict[tuple[str, datetime], tuple[str, float]]:
    rows = duckdb.sql(f"SELECT user_id, timestamp, text, amount FROM '{EVENTS}/*.parquet'")
    return {(u, ts): (text, amount) for u, ts, text, amount in rows.fetchall()}


def test_golden_files_hold_the_right_values() -> None:
    """The committed files agree with features computed here, not only with past runs."""
    source = source_rows()

    def event(row: dict[str, Any]) -> tuple[str, float]:
        timestamp = datetime.fromisoformat(row["timestamp"]).replace(tzinfo=None)
        return source[(row["user_id"], timestamp)]

    for view in ("text_embedding", "text_embedding_batched"):
        rows = golden_rows(GOLDEN / "embeddings" / f"{view}.jsonl")
        assert len(rows) == 241
        for row in rows:
            assert row["embedding"] == pytest.approx(embed(event(row)[0]), rel=1e-7)
    for view in ("fraud_signals", "fraud_signals_batched"):
        rows = golden_rows(GOLDEN / "fraud_signals" / f"{view}.jsonl")
        assert [r["fraud_score"] for r in rows] == [score(r["user_id"], event(r)[1]) for r in rows]
    rows = golden_rows(GOLDEN / "enrichment_postgres" / "user_profile_enrichment.jsonl")
    for row in rows:
        segment, limit, signup = PROFILES.get(row["user_id"], (None, None, None))
        days = (datetime.fromisoformat(row["timestamp"]).date() - signup).days if signup else None
        ratio = event(row)[1] / limit if limit else None
        assert row == {**row, "segment": segment, "credit_limit": limit,
                       "amount_over_limit": ratio, "days_since_signup": days}  # fmt: skip
    assert {row["segment"] for row in rows} == {"gold", "silver", "bronze", "new", None}


def test_edits_to_a_golden_copy_are_reported_then_update_restores_it(
    fraud_env: None, tmp_path: Path
) -> None:
    golden = tmp_path / "golden"
    shutil.copytree(GOLDEN / "fraud_signals", golden)
    path = golden / "fraud_signals.jsonl"
    lines = path.read_text().splitlines()
    changed, deleted = json.loads(lines[5]), json.loads(lines[9])
    fake = {"user_id": "u42", "timestamp": "2024-10-27T12:00:00.000000+00:00", "fraud_score": 0.5}
    lines[5] = json.dumps({**changed, "fraud_score": 0.125})
    del lines[9]
    path.write_text("\n".join([*lines, json.dumps(fake)]) + "\n")

    result = run_golden(FRAUD, golden_dir=golden)

    assert not result.ok
    assert result.diff("fraud_signals_batched").ok
    diff = result.diff("fraud_signals")
    key = (("user_id", changed["user_id"]), ("timestamp", changed["timestamp"]))
    assert diff.changed == (CellChange(key, "fraud_score", 0.125, changed["fraud_score"]),)
    assert diff.extra == (deleted,)
    assert diff.missing == (fake,)
    report = result.render()
    assert "fraud_signals: DIFFERS from fraud_signals.jsonl (golden 482 rows, output 482): " \
           "1 changed cell, 1 missing row, 1 extra row" in report  # fmt: skip
    assert (
        f'  user_id="{changed["user_id"]}", timestamp="{changed["timestamp"]}": fraud_score: '
        f"golden 0.125 → actual {changed['fraud_score']!r}\n" in report
    )
    assert (
        f"extra rows (in the output, not in the golden file):\n        {json.dumps(deleted)}"
        in report
    )
    assert (
        f"missing rows (in the golden file, not in the output):\n        {json.dumps(fake)}"
        in report
    )
    assert "FAILED: 1 of 2 feature views differ" in report
    with pytest.raises(AssertionError, match=r"fraud_score: golden 0\.125"):
        assert_matches_golden(FRAUD, golden_dir=golden)

    updated = run_golden(FRAUD, golden_dir=golden, update=True)

    assert updated.ok and updated.written == (path,)
    assert updated.diff("fraud_signals").changed == diff.changed  # what the update changed
    assert path.read_bytes() == (GOLDEN / "fraud_signals" / "fraud_signals.jsonl").read_bytes()
    assert "fraud_signals: wrote fraud_signals.jsonl (482 rows; 1 changed cell" in updated.render()
    assert run_golden(FRAUD, golden_dir=golden).ok


def test_a_failed_backfill_is_an_error_not_a_diff_and_updates_nothing(
    write_job: Callable[..., Path], tmp_path: Path
) -> None:
    golden = tmp_path / "golden"
    golden.mkdir()
    (golden / "words.jsonl").write_text("{}\n")
    job = write_job(f"""
        START = datetime(2024, 10, 26)
        golden = GoldenTest(start=START, end=datetime(2024, 10, 28), golden_dir={str(golden)!r})

        @batch_feature_view(mode="python", sources=[events], entities=[user],
                            batch_schedule=timedelta(days=1), feature_start_time=START,
                            timestamp_field="timestamp", features=[Attribute("words", Int64)])
        def words(row):
            if row["timestamp"].day == 27:
                raise ValueError("no words on the 27th")
            return {{"words": len(row["text"].split())}}
        """)  # fmt: skip
    job.write_text("from engine.define.golden import GoldenTest\n" + job.read_text())

    result = run_golden(job, update=True)

    assert not result.ok and result.views == () and result.written == ()
    assert result.error is not None
    assert result.error.splitlines()[0] == (
        "The backfill failed in 1 interval, so nothing was compared:"
    )
    assert "words [2024-10-27 00:00, 2024-10-28 00:00): Transform error:" in result.error
    assert "no words on the 27th" in result.render()
    assert (golden / "words.jsonl").read_text() == "{}\n"


def test_a_job_without_a_golden_test_is_told_what_to_declare(write_job) -> None:
    job = write_job("""
        START = datetime(2024, 10, 26)

        @batch_feature_view(mode="python", sources=[events], entities=[user],
                            batch_schedule=timedelta(days=1), feature_start_time=START,
                            timestamp_field="timestamp", features=[Attribute("n", Int64)])
        def n(row):
            return {"n": 1}
        """, name="no_golden")  # fmt: skip
    with pytest.raises(GoldenError, match=r"Job 'no_golden' \(.*\) declares no GoldenTest") as e:
        find_golden_test(job)
    assert "golden = GoldenTest(start=datetime(2024, 10, 26), end=datetime(2024, 10, 27))" in str(
        e.value
    )


def test_golden_test_declarations_are_validated() -> None:
    test = GoldenTest(start=datetime(2024, 10, 26), end=datetime(2024, 10, 27))
    assert test.directory("fraud_signals") == Path("fixtures/golden/fraud_signals")
    assert test.start.tzinfo is not None
    with pytest.raises(DefinitionError, match="needs start before end"):
        GoldenTest(start=datetime(2024, 10, 27), end=datetime(2024, 10, 27))
    with pytest.raises(DefinitionError, match=r"write feature_views=\['fraud_signals'\]"):
        GoldenTest(datetime(2024, 10, 26), datetime(2024, 10, 27), feature_views="fraud_signals")


def test_long_diffs_are_capped_and_list_cells_name_the_elements() -> None:
    columns = ["user_id", "timestamp", "embedding"]
    golden = [
        {"user_id": f"u{i:02}", "timestamp": "t", "embedding": [0.5, 1.0, 2.0]} for i in range(13)
    ]
    actual = [{**row, "embedding": [0.5, 1.5, 2.0]} for row in golden]

    diff = compare(
        "v", Path("v.jsonl"), (columns, golden), (columns, actual), ["user_id", "timestamp"]
    )

    assert len(diff.changed) == 13 and not diff.missing and not diff.extra
    lines = diff.render()
    assert lines[1] == (
        '  user_id="u00", timestamp="t": embedding: golden [0.5, 1.0, 2.0] → actual '
        "[0.5, 1.5, 2.0] (elements [1] 1.0 → 1.5)"
    )
    assert lines[-1] == "  … and 3 more"


def test_the_rivulet_test_command(fraud_env, tmp_path: Path) -> None:
    """Passes as committed; a changed golden value fails with a diff; --update restores it."""
    golden = tmp_path / "golden"
    shutil.copytree(REPO / "fixtures" / "golden" / "fraud_signals", golden)
    job = REPO / "jobs" / "fraud_signals.py"
    command = ("test", job, "--golden-dir", golden)
    assert run_cli(*command).returncode == 0

    file = golden / "fraud_signals.jsonl"
    lines = file.read_text().splitlines()
    row = json.loads(lines[3])
    row["fraud_score"] = 0.5
    file.write_text("\n".join([*lines[:3], json.dumps(row), *lines[4:]]) + "\n")
    failed = run_cli(*command)
    assert failed.returncode == 1
    assert "fraud_signals" in failed.stdout and "fraud_score: golden 0.5" in failed.stdout
    assert f'user_id="{row["user_id"]}"' in failed.stdout

    assert run_cli(*command, "--update").returncode == 0
    assert file.read_text().splitlines() == lines
    assert run_cli(*command).returncode == 0
