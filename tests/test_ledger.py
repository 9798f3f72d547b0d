"""Exactly-once intervals: resume after kills, scheduled runs, stale definitions, same bytes."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from engine.store.ledger import Ledger
from tests.conftest import REPO, run_cli

JOB = """
import os, threading

@batch_feature_view(name="view", mode="python", sources=[events], entities=[user],
    batch_schedule="6h", feature_start_time=datetime(2024, 10, 26), micro_batch_size=4,
    concurrency=4, features=[Attribute("score", Float64), Attribute("words", Int64)])
def view(row, context):
    with open(os.environ["CALL_LOG"], "a") as log:
        log.write(f"{{context.start_time:%Y-%m-%dT%H}}\\n")
    if os.environ.get("HOLD_INTERVAL") == f"{{context.start_time:%Y-%m-%dT%H}}":
        threading.Event().wait(120)  # until the test kills the run (a hang guard)
    time.sleep({delay})
    return {{"score": row["amount"] * {factor}, "words": len(row["text"].split())}}
"""
RANGE = ("--start", "2024-10-26", "--end", "2024-10-29")  # 12 intervals of 6 hours, 12 rows each


def job_file(write_job, delay: float = 0.0, factor: float = 1.5) -> Path:
    body = "import time\n" + JOB.format(delay=delay, factor=factor)
    return write_job(body)


def backfill(job: Path, output: Path, log: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli("backfill", job, *RANGE, "--output", output, *args, env={"CALL_LOG": str(log)})


def calls(log: Path) -> Counter[str]:
    return Counter(log.read_text().split()) if log.exists() else Counter()


def snapshot(output: Path) -> dict[str, object]:
    """Each committed interval's table, by its partition folder."""
    return {
        f.parent.name: pq.read_table(f) for f in sorted((output / "view").glob("*/data.parquet"))
    }


def data_pages(file: Path) -> str:
    """A hash of the file's bytes before its footer: the data pages, without run metadata."""
    data = file.read_bytes()
    footer = int.from_bytes(data[-8:-4], "little")
    return hashlib.sha256(data[4 : len(data) - 8 - footer]).hexdigest()


@pytest.fixture
def reference(write_job, tmp_path: Path) -> dict[str, object]:
    result = backfill(job_file(write_job), tmp_path / "reference", tmp_path / "reference.log")
    assert result.returncode == 0, result.stderr
    return snapshot(tmp_path / "reference")


def test_a_kill_between_rename_and_ledger_is_repaired_without_recompute(
    write_job, tmp_path, reference
):
    job, out, first = job_file(write_job), tmp_path / "out", tmp_path / "first.log"
    killed = run_cli(
        "backfill", job, *RANGE, "--output", out, "--workers", "2",
        env={"CALL_LOG": str(first), "RIVULET_KILL_AT": "committed:2"},
    )  # fmt: skip
    # Each worker killed itself at its second commit, after the rename, before the ledger:
    # the driver found each such file in place and recorded it, and fresh workers went on.
    # What a killed worker was still computing beside it is retried, and only that.
    assert killed.returncode == 0, killed.stderr
    notes = " ".join(killed.stderr.split())
    assert "exited (code -9)" in notes
    assert notes.count("its file was already committed, and is recorded") >= 2
    retried = Counter(
        f"{day}T{hour}"
        for day, hour in re.findall(
            r"computing view \[(\S+) (\d\d):00, [^)]*\); it is retried", notes
        )
    )
    counted = calls(first)
    assert len(counted) == 12
    assert all(12 <= n <= 12 * (1 + retried[interval]) for interval, n in counted.items())
    assert snapshot(out) == reference
    assert len(Ledger(out).entries(state="committed")) == 12

    rerun = backfill(job, out, tmp_path / "second.log", "--workers", "2")
    assert rerun.returncode == 0, rerun.stderr
    assert not (tmp_path / "second.log").exists()  # nothing left to compute
    assert snapshot(out) == reference


@pytest.mark.parametrize("files_before_kill", [3, 7])
def test_sigkill_at_any_point_then_rerun_matches(write_job, tmp_path, reference, files_before_kill):
    job, out, first = job_file(write_job, delay=0.01), tmp_path / "out", tmp_path / "first.log"
    # The last interval waits until the kill, so the run cannot end before it however late
    # the kill comes; the others run as usual, and the kill lands wherever they are.
    env = {**os.environ, "CALL_LOG": str(first), "HOLD_INTERVAL": "2024-10-28T18"}
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "backfill", str(job), *RANGE, "--output", str(out),
         "--workers", "2"],
        cwd=REPO, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120  # a hang guard, not a speed limit
        while len(list((out / "view").glob("*/data.parquet"))) < files_before_kill:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the CLI and both workers, mid-write
        process.wait()
    survivors = set(snapshot(out))
    assert files_before_kill <= len(survivors) < 12

    second = tmp_path / "second.log"
    rerun = backfill(job_file(write_job, delay=0.01), out, second, "--workers", "2")
    assert rerun.returncode == 0, rerun.stderr
    assert snapshot(out) == reference  # same rows, no duplicates
    recomputed = {f"interval_start={start}-00-00Z" for start in calls(second)}
    assert recomputed == set(reference) - survivors  # only what the kill left missing
    assert all(n == 12 for n in calls(second).values())
    assert list(out.rglob("*.tmp")) == []


def test_scheduled_run_does_only_what_is_due(write_job, tmp_path):
    job, out, log = job_file(write_job), tmp_path / "out", tmp_path / "calls.log"
    env = {"CALL_LOG": str(log)}
    first = run_cli("run", job, "--until", "2024-10-27T03:00", "--output", out, env=env)
    assert first.returncode == 0, first.stderr
    assert sorted(calls(log)) == [
        "2024-10-26T00",
        "2024-10-26T06",
        "2024-10-26T12",
        "2024-10-26T18",
    ]
    files = {f: f.stat().st_mtime_ns for f in out.rglob("*.parquet")}

    again = run_cli("run", job, "--until", "2024-10-27T03:00", "--output", out, env=env)
    assert again.returncode == 0, again.stderr
    assert sum(calls(log).values()) == 48  # no call made
    assert {f: f.stat().st_mtime_ns for f in out.rglob("*.parquet")} == files  # nothing written

    later = run_cli("run", job, "--until", "2024-10-27T06:00", "--output", out, env=env)
    assert later.returncode == 0, later.stderr
    assert calls(log)["2024-10-27T00"] == 12 and sum(calls(log).values()) == 60


def test_a_changed_transform_is_stale(write_job, tmp_path):
    out, log = tmp_path / "out", tmp_path / "calls.log"
    assert backfill(job_file(write_job), out, log).returncode == 0
    changed = job_file(write_job, factor=2.5)

    plan = run_cli("plan", changed, *RANGE, "--output", out)
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.count("stale") >= 12 and "12 stale" in plan.stdout

    refused = backfill(changed, out, log)
    assert (
        refused.returncode == 2 and "changed since 12 interval(s) were committed" in refused.stderr
    )
    assert "--overwrite" in refused.stderr and sum(calls(log).values()) == 144

    kept = backfill(changed, out, log, "--allow-stale")
    assert kept.returncode == 0 and sum(calls(log).values()) == 144

    redone = backfill(changed, out, log, "--overwrite")
    assert redone.returncode == 0, redone.stderr
    assert sum(calls(log).values()) == 288
    assert "12 committed" in run_cli("plan", changed, *RANGE, "--output", out).stdout


def test_two_runs_write_byte_identical_data_pages(write_job, tmp_path):
    job = job_file(write_job)
    for name, workers in (("a", "1"), ("b", "2"), ("c", "2")):
        result = backfill(job, tmp_path / name, tmp_path / f"{name}.log", "--workers", workers)
        assert result.returncode == 0, result.stderr
    files = sorted((tmp_path / "a" / "view").glob("*/data.parquet"))
    assert len(files) == 12
    for file in files:
        twins = [tmp_path / name / file.relative_to(tmp_path / "a") for name in ("b", "c")]
        assert all(pq.read_table(file).equals(pq.read_table(twin)) for twin in twins)
        assert {data_pages(file)} == {data_pages(twin) for twin in twins}
        run_ids = {pq.read_metadata(f).metadata[b"rivulet.run_id"] for f in [file, *twins]}
        assert len(run_ids) == 3  # the footers differ only by run metadata


def test_scheduled_run_refuses_stale_and_retries_failures(write_job, tmp_path):
    out, log = tmp_path / "out", tmp_path / "calls.log"
    env = {"CALL_LOG": str(log)}
    assert (
        run_cli(
            "run", job_file(write_job), "--until", "2024-10-27", "--output", out, env=env
        ).returncode
        == 0
    )
    stale = run_cli(
        "run", job_file(write_job, factor=9.0), "--until", "2024-10-28", "--output", out, env=env
    )
    assert stale.returncode == 2 and "changed since 4 interval(s) were committed" in stale.stderr
    (out / "view" / "interval_start=2024-10-26T06-00-00Z" / "data.parquet").unlink()
    again = run_cli("run", job_file(write_job), "--until", "2024-10-27", "--output", out, env=env)
    assert again.returncode == 0, again.stderr
    assert calls(log)["2024-10-26T06"] == 24  # the lost interval is computed again


def test_monthly_intervals_never_overlap() -> None:
    from datetime import UTC, datetime

    from engine.define.schedule import Months
    from engine.plan.intervals import tile

    origin = datetime(2024, 1, 28, tzinfo=UTC)
    whole = tile(origin, Months(1), datetime(2024, 1, 28), datetime(2025, 1, 1))
    part = tile(origin, Months(1), datetime(2024, 4, 15), datetime(2024, 6, 1))
    assert all(a[1] == b[0] for a, b in itertools.pairwise(whole))
    assert set(part) <= set(whole) and [i[0].day for i in whole] == [28] * len(whole)


def test_ranges_are_widened_and_clipped_with_a_note(write_job, tmp_path):
    job = job_file(write_job)
    result = run_cli(
        "plan", job, "--start", "2024-10-25T12:00", "--end", "2024-10-26T13:00",
        "--output", tmp_path / "out",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    notes = " ".join(result.stderr.split())
    assert "starts at 2024-10-26 00:00; the time before it is left out" in notes
    assert "widened to whole intervals, [2024-10-26 00:00, 2024-10-26 18:00)" in notes
    assert "3 missing" in result.stdout
    assert not (tmp_path / "out").exists()  # plan writes nothing
