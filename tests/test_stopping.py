"""Runs that stop when told: signals, hung calls and builds, timeouts, workers that die."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from engine import backfill
from engine.store.ledger import Ledger
from tests.conftest import REPO, run_cli

MARKS = """
import os, threading, time

MARKS = {marks!r}

def mark(what):
    with open(MARKS, "a") as marks:
        marks.write(f"{{what}} {{os.getpid()}}\\n")
"""
VIEW = """
@batch_feature_view(name="view", mode="python", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26), micro_batch_size=4,
    concurrency=2, features=[Attribute("n", Int64)]{extra})
def view(row, context):
    {body}
"""
HUNG_CALL = VIEW.format(
    extra="",
    body='mark("call")\n    threading.Event().wait()  # never returns\n    return {"n": 1}',
)
HUNG_PROVIDER = """
@resource_provider
def stuck():
    mark("build")
    threading.Event().wait()  # never returns
    yield "never"
""" + VIEW.format(extra=', resource_providers={"r": stuck}', body='return {"n": 1}')
TINY_RATE = """
@resource_provider(rate_limit=RateLimit(requests_per_second=0.02))
def api():
    mark("build")
    yield "api"
    mark("teardown")
""" + VIEW.format(extra=', resource_providers={"api": api}', body='return {"n": 1}')
SLOW_CALL = VIEW.format(
    extra=', resource_providers={"c": client}',
    body='mark("call")\n    time.sleep(0.3)\n    return {"n": 1}',
)
CLIENT = """
@resource_provider
def client():
    mark("build")
    yield "client"
    mark("teardown")
"""
RANGE = ("--start", "2024-10-26", "--end", "2024-10-29")


def marks(path: Path) -> Counter[str]:
    lines = path.read_text().split("\n") if path.exists() else []
    return Counter(line.split()[0] for line in lines if line)


def pids(path: Path, what: str) -> set[int]:
    return {
        int(line.split()[1]) for line in path.read_text().splitlines() if line.split()[0] == what
    }


def start(job: Path, out: Path, *args: str) -> subprocess.Popen:
    """The CLI backfilling RANGE; its stderr goes to `<out>.stderr`, read while it runs."""
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "backfill", str(job), *RANGE, "--output", str(out), *args],
        cwd=REPO, stdout=subprocess.PIPE, stderr=open(f"{out}.stderr", "w"), text=True,
    )  # fmt: skip


def finish(process: subprocess.Popen, out: Path) -> tuple[str, str]:
    """Its stdout and stderr once it exits: within a bound, since a hang is the failure."""
    stdout, _ = process.communicate(timeout=60)
    return stdout, Path(f"{out}.stderr").read_text()


def wait_for_text(out: Path, text: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120  # a hang guard, not a speed limit
    while text not in Path(f"{out}.stderr").read_text():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)


def wait_for(path: Path, what: str, count: int, process: subprocess.Popen) -> None:
    """Until `count` marks of `what` are written; the process must not end meanwhile."""
    deadline = time.monotonic() + 120  # a hang guard, not a speed limit
    while marks(path)[what] < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)


def wait_for_pids(path: Path, what: str, count: int, process: subprocess.Popen) -> None:
    """Until `count` processes have written a mark of `what`: a mark from each worker, not
    `count` marks from the first one to start."""
    deadline = time.monotonic() + 120  # a hang guard, not a speed limit
    while len(pids(path, what) if path.exists() else ()) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("workers", [1, 2])
def test_two_sigterms_end_a_run_stuck_in_a_call_for_good(write_job, tmp_path, workers):
    log = tmp_path / "marks"
    job = write_job(MARKS.format(marks=str(log)) + HUNG_CALL)
    out = tmp_path / "o"
    process = start(job, out, "--workers", str(workers))
    wait_for(log, "call", workers, process)
    process.send_signal(signal.SIGTERM)
    wait_for_text(out, "Stopping:", process)  # two signals at once would arrive as one
    process.send_signal(signal.SIGTERM)
    stdout, stderr = finish(process, out)  # without the fix it never exits at all
    assert process.returncode == 130, stderr
    assert "Cancelling:" in stderr
    assert "interrupted" in stdout and "Traceback" not in stderr
    assert not list((tmp_path / "o").rglob("*.parquet"))
    assert not any(alive(pid) for pid in pids(log, "call"))


@pytest.mark.parametrize("body", [HUNG_PROVIDER, TINY_RATE], ids=["hung-provider", "tiny-rate"])
def test_one_signal_ends_a_wait_for_a_build_or_a_token(write_job, tmp_path, body):
    log = tmp_path / "marks"
    job = write_job(MARKS.format(marks=str(log)) + body)
    out = tmp_path / "o"
    process = start(job, out)
    wait_for(log, "build", 1, process)  # the build hangs, or the first call waits ~50 s
    process.send_signal(signal.SIGTERM)
    _, stderr = finish(process, out)
    assert process.returncode == 130, stderr
    assert "Cancelling:" not in stderr and "Traceback" not in stderr
    assert "did not start" in stderr  # the two intervals after it, in one line
    assert marks(log)["teardown"] == (body is TINY_RATE)


def test_sigterm_stops_spawned_workers_before_the_cli_exits(write_job, tmp_path):
    log = tmp_path / "marks"
    job = write_job(MARKS.format(marks=str(log)) + CLIENT + SLOW_CALL)
    out = tmp_path / "o"
    process = start(job, out, "--workers", "2")
    wait_for_pids(log, "call", 2, process)  # both workers have built their client
    process.send_signal(signal.SIGTERM)  # as timeout, systemd and Kubernetes send it
    _, stderr = finish(process, out)
    assert process.returncode == 130, stderr
    done = marks(log)
    assert done["build"] == done["teardown"] == 2
    assert not any(alive(pid) for pid in pids(log, "build"))  # none outlives the lock
    assert not list((tmp_path / "o").rglob("*.tmp"))


def test_a_worker_whose_parent_died_stops_writing(write_job, tmp_path):
    log = tmp_path / "marks"
    job = write_job(MARKS.format(marks=str(log)) + CLIENT + SLOW_CALL)
    process = start(job, tmp_path / "o", "--workers", "2")
    wait_for_pids(log, "call", 2, process)  # both workers are known, and mid-interval
    process.kill()  # the CLI alone: its workers are orphaned mid-interval
    process.communicate()
    committed = sorted((tmp_path / "o").rglob("data.parquet"))
    workers = pids(log, "build")
    deadline = time.monotonic() + 60
    while any(alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "an orphaned worker kept running"
        time.sleep(0.05)
    assert sorted((tmp_path / "o").rglob("data.parquet")) == committed


KILLS_ITSELF = """
import os, signal

@batch_feature_view(name="view", mode="python", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26), micro_batch_size=4,
    features=[Attribute("n", Int64)])
def view(row, context):
    if context.start_time.day == 27 and row["quantity"] == 3:
        mark("kill")
        if {always} or not os.path.exists(MARKS + ".killed"):
            open(MARKS + ".killed", "w").close()
            os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
    return {{"n": row["quantity"]}}
"""


def test_a_worker_killed_mid_interval_is_replaced_and_the_interval_retried(write_job, tmp_path):
    log = tmp_path / "marks"
    job = write_job(MARKS.format(marks=str(log)) + KILLS_ITSELF.format(always=False))
    result = run_cli("backfill", job, *RANGE, "--output", tmp_path / "o", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert "exited (code -9) while computing view [2024-10-27" in result.stderr
    assert "it is retried on a fresh worker" in result.stderr
    rows = duckdb.sql(f"SELECT count(*) FROM '{tmp_path}/o/view/*/*.parquet'").fetchall()
    assert rows == [(144,)]
    assert len(Ledger(tmp_path / "o").entries(state="committed")) == 3


def test_a_worker_killed_every_time_fails_its_interval_in_the_ledger(write_job, tmp_path):
    log = tmp_path / "marks"
    job = write_job(MARKS.format(marks=str(log)) + KILLS_ITSELF.format(always=True))
    result = run_cli("backfill", job, *RANGE, "--output", tmp_path / "o", "--workers", "2")
    assert result.returncode == 1, result.stderr
    assert "it was tried on 3 workers and fails" in result.stderr
    assert len(pids(log, "kill")) == 3  # three workers, each killed once
    [failed] = Ledger(tmp_path / "o").entries(state="failed")
    assert failed.interval_start.day == 27 and "exited (code -9)" in (failed.error or "")
    assert len(Ledger(tmp_path / "o").entries(state="committed")) == 2


TIMEOUTS = """
@batch_feature_view(name="view", mode="python", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26), timeout=0.5,
    retry=RetryPolicy(max_attempts=3, initial_backoff=0.01),
    features=[Attribute("n", Int64)])
def view(row, context):
    if row["quantity"] == 3 and not os.path.exists(MARKS + f".{{row['amount']}}"):
        open(MARKS + f".{{row['amount']}}", "w").close()
        threading.Event().wait(30)  # the first attempt of these rows hangs
    return {{"n": row["quantity"]}}
"""


def test_a_call_past_its_timeout_is_retried(write_job, tmp_path):
    job = write_job(MARKS.format(marks=str(tmp_path / "marks")) + TIMEOUTS.format())
    summary = backfill(job, datetime(2024, 10, 26), datetime(2024, 10, 27), output=tmp_path / "o")
    assert summary.ok, summary.failed
    hung = len(list(tmp_path.glob("marks.*")))
    assert hung == 7  # rows with quantity 3 in the first 48 events
    assert summary.stats.retries["timeout"] == hung
    rows = duckdb.sql(f"SELECT n FROM '{tmp_path}/o/view/*/*.parquet'").fetchall()
    assert len(rows) == 48 and sum(n for (n,) in rows) == sum(i % 7 for i in range(48))


def test_a_provider_past_its_init_timeout_fails_naming_it(write_job, tmp_path):
    job = write_job(
        """
import threading

@resource_provider(init_timeout=0.2)
def stuck():
    threading.Event().wait(30)
    return "never"

@batch_feature_view(name="view", mode="python", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("n", Int64)], resource_providers={"r": stuck})
def view(row, context):
    return {"n": 1}
"""
    )
    result = run_cli("backfill", job, "--start", "2024-10-26", "--end", "2024-10-27",
                     "--output", tmp_path / "o")  # fmt: skip
    assert result.returncode == 1
    assert (
        "Resource provider 'stuck' did not finish building its resource within its "
        "init_timeout of 0.2 s" in result.stderr
    )
