"""The `rivulet` command: exit codes, one-paragraph errors, progress, summaries, secrets."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from tests.conftest import run_cli

VIEW = """
@resource_provider(secrets={{"token": Secret(scope="acme", key="api_token")}})
def acme(context):
    return {{"token": context.secrets["token"]}}

@batch_feature_view(name="view", mode="python", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("f", Int64)], resource_providers={{"acme": acme}})
def view(row, context):
    {body}
    return {{"f": len(context.resources["acme"]["token"])}}
"""
RANGE = ("--start", "2024-10-26", "--end", "2024-10-29")
SECRET = {"RIVULET_SECRET_ACME__API_TOKEN": "s3cr3t-value"}


def one_paragraph(text: str) -> bool:
    return "Traceback" not in text and text.strip().count("\n") == 0


def test_backfill_succeeds_with_progress_and_summary(write_job, tmp_path: Path) -> None:
    job = write_job(VIEW.format(body="pass"))
    result = run_cli("backfill", job, *RANGE, "--output", tmp_path / "o", env=SECRET)
    assert result.returncode == 0, result.stderr
    assert "3/3 intervals" in result.stderr and "144 rows" in result.stderr
    assert "144 calls" in result.stderr and "0 retries" in result.stderr
    assert "view" in result.stdout and "144" in result.stdout and "succeeded" in result.stdout
    assert "acme" in result.stdout  # resource builds per worker
    count = duckdb.sql(f"SELECT count(*), min(f) FROM '{tmp_path}/o/view/*/*.parquet'").fetchall()
    assert count == [(144, len("s3cr3t-value"))]
    assert "s3cr3t-value" not in result.stdout + result.stderr


def test_json_summary(write_job, tmp_path: Path) -> None:
    job = write_job(VIEW.format(body="pass"))
    result = run_cli("backfill", job, *RANGE, "--output", tmp_path / "o", "--json", env=SECRET)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["ok"] is True and summary["intervals"] == 3
    assert summary["rows_by_feature_view"] == {"view": 144}
    assert [builds for builds in summary["resource_builds_by_worker"].values()] == [{"acme": 1}]
    assert summary["calls"] == 144 and summary["failed_calls"] == 0
    assert summary["retries_by_cause"] == {} and summary["throttled_429"] == 0
    assert summary["resources"] == {"builds": {"acme": 1}, "rebuilds": {}, "teardowns": {"acme": 1}}
    assert 0 < summary["call_latency_p50_ms"] <= summary["call_latency_p99_ms"]
    assert summary["dead_lettered_rows"] == 0 and summary["rate_limit_wait_seconds"] == 0


def test_failed_interval_exit_code_and_listing(write_job, tmp_path: Path) -> None:
    # .get() on context.secrets returns the default for an undeclared name, as a Mapping should.
    body = 'if context.start_time.day == 27: raise ValueError(f"bad day {context.secrets.get(1)}")'
    job = write_job(VIEW.format(body=body))
    result = run_cli("backfill", job, *RANGE, "--output", tmp_path / "o", env=SECRET)
    assert result.returncode == 1
    failed = [line for line in result.stderr.splitlines() if line.startswith("Failed")]
    assert len(failed) == 1
    assert failed[0].startswith(
        "Failed view [2024-10-27 00:00, 2024-10-28 00:00): Transform error:"
    )
    assert "ValueError: bad day" in failed[0] and "Traceback" not in result.stderr
    assert len(list((tmp_path / "o").rglob("*.parquet"))) == 2

    debug = run_cli("backfill", job, *RANGE, "--output", tmp_path / "d", "--debug", env=SECRET)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_secret_in_an_error_is_redacted(write_job, tmp_path: Path) -> None:
    job = write_job(
        VIEW.format(body='raise RuntimeError("token was " + context.resources["acme"]["token"])')
    )
    result = run_cli(
        "backfill", job, *RANGE, "--output", tmp_path / "o", "--debug", "--json", env=SECRET
    )
    assert result.returncode == 1
    assert "token was ***" in result.stderr
    assert "s3cr3t-value" not in result.stdout + result.stderr


def test_missing_secret_stops_before_any_work(write_job, tmp_path: Path) -> None:
    job = write_job(VIEW.format(body="pass"))
    result = run_cli("backfill", job, *RANGE, "--output", tmp_path / "o")
    assert result.returncode == 2
    assert one_paragraph(result.stderr)
    assert "Secret error: Secret scope 'acme', key 'api_token'" in result.stderr
    assert "RIVULET_SECRET_ACME__API_TOKEN" in result.stderr
    assert not (tmp_path / "o").exists()


def test_secrets_file(write_job, tmp_path: Path) -> None:
    job = write_job(VIEW.format(body="pass"))
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[acme]\napi_token = "from-file"\n')
    result = run_cli("backfill", job, *RANGE, "--output", tmp_path / "o", "--secrets-file", secrets)
    assert result.returncode == 0, result.stderr
    lengths = duckdb.sql(f"SELECT DISTINCT f FROM '{tmp_path}/o/view/*/*.parquet'").fetchall()
    assert lengths == [(len("from-file"),)]


def test_definition_error_is_one_paragraph(write_job, tmp_path: Path) -> None:
    job = write_job(VIEW.format(body="pass").replace('mode="python"', 'mode="spark_sql"'))
    for command in (("validate", job), ("backfill", job, *RANGE)):
        result = run_cli(*command)
        assert result.returncode == 2
        assert one_paragraph(result.stderr)
        assert result.stderr.startswith(
            "Definition error: In job 'job': Feature view 'view' has mode"
        )


def test_job_that_does_not_import(tmp_path: Path) -> None:
    job = tmp_path / "broken.py"
    job.write_text("import json\nimport not_a_module_anywhere\n")
    result = run_cli("validate", job)
    assert result.returncode == 2 and one_paragraph(result.stderr)
    assert "Job 'broken'" in result.stderr and "ModuleNotFoundError at line 2" in result.stderr
    assert "Traceback" in run_cli("validate", job, "--debug").stderr


def test_settings_errors(write_job, tmp_path: Path) -> None:
    job = write_job(VIEW.format(body="pass"))
    unknown = run_cli("backfill", job, *RANGE, "--feature-view", "nope", env=SECRET)
    assert unknown.returncode == 2 and one_paragraph(unknown.stderr)
    assert "has no batch feature view 'nope'; it declares: view" in unknown.stderr
    inverted = run_cli("backfill", job, "--start", "2024-10-29", "--end", "2024-10-26", env=SECRET)
    assert inverted.returncode == 2 and "is not before the end" in inverted.stderr
    bad_time = run_cli("backfill", job, "--start", "yesterday", "--end", "2024-10-26")
    assert bad_time.returncode == 2 and "'yesterday' is not a date or time" in bad_time.stderr


def test_validate_lists_views(write_job) -> None:
    result = run_cli("validate", write_job(VIEW.format(body="pass")))
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stdout and "view" in result.stdout and "acme" in result.stdout


def test_help_through_python_m() -> None:
    result = run_cli("--help")
    assert result.returncode == 0 and "backfill" in result.stdout and "validate" in result.stdout


def test_read_prints_committed_rows(write_job, tmp_path: Path) -> None:
    job = write_job(VIEW.format(body="pass"))
    assert run_cli("backfill", job, *RANGE, "--output", tmp_path / "o", env=SECRET).returncode == 0
    result = run_cli(
        "read", job, "view", "--start", "2024-10-27", "--end", "2024-10-27T02:00",
        "--output", tmp_path / "o", "--format", "csv",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == '"user_id","timestamp","f"' and len(lines) == 1 + 4
    assert lines[1] == '"u0",2024-10-27 00:00:00.000000Z,12'
    parquet = run_cli("read", job, "view", "--output", tmp_path / "o", "--format", "parquet",
                      "--to", tmp_path / "all.parquet")  # fmt: skip
    assert parquet.returncode == 0 and duckdb.sql(
        f"SELECT count(*) FROM '{tmp_path}/all.parquet'"
    ).fetchall() == [(144,)]
