"""Resource lifecycle, error policies, thread safety and secrecy, through real runs."""

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
import pyarrow.parquet as pq
import pytest

from engine import backfill
from engine.runtime.dispatch import CPU_CHUNKS_IN_FLIGHT
from tests.conftest import REPO, run_cli

LOGGER = """
import os, threading, time

LOG = {log!r}

def note(what):
    with open(LOG, "a") as log:
        log.write(f"{{what}} {{os.getpid()}} {{threading.get_ident()}}\\n")

def count(what):
    try:
        return sum(line.split()[0] == what for line in open(LOG))
    except FileNotFoundError:
        return 0
"""
DAYS = (datetime(2024, 10, 26), datetime(2024, 10, 29))


def calls(log: Path) -> Counter[str]:
    return Counter(line.split()[0] for line in log.read_text().splitlines())


def test_a_provider_that_fails_twice_is_built_once(write_job, tmp_path: Path) -> None:
    log = tmp_path / "log"
    job = write_job(
        LOGGER.format(log=str(log))
        + """
FAST_INIT = RetryPolicy(max_attempts=3, initial_backoff=0.01, retry_on=(OSError,))

@resource_provider(init_retry=FAST_INIT)
def flaky():
    note("attempt")
    if count("attempt") <= 2:
        raise ConnectionRefusedError("not yet")
    note("built")
    return {"n": 1}

@batch_feature_view(name="view", mode="python", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("n", Int64)], resource_providers={"r": flaky})
def view(row, context):
    return {"n": context.resources["r"]["n"]}
"""
    )
    summary = backfill(job, *DAYS, output=tmp_path / "o")
    assert summary.ok, summary.failed
    assert calls(log) == {"attempt": 3, "built": 1}
    assert summary.stats.builds == {"flaky": 1}


def test_a_provider_that_always_fails_names_itself_and_commits_nothing(write_job, tmp_path):
    job = write_job(
        """
@resource_provider(init_retry=RetryPolicy(max_attempts=2, initial_backoff=0.01))
def broken_db():
    raise ConnectionRefusedError("db is down")

@resource_provider
def fine():
    return 1

@batch_feature_view(name="needs_db", mode="python", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("n", Int64)], resource_providers={"db": broken_db})
def needs_db(row, context):
    return {"n": 1}

@batch_feature_view(name="independent", mode="python", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("n", Int64)], resource_providers={"f": fine})
def independent(row, context):
    return {"n": context.resources["f"]}
"""
    )
    result = run_cli(
        "backfill", job, "--start", "2024-10-26", "--end", "2024-10-29", "--output", tmp_path / "o"
    )
    assert result.returncode == 1
    failed = [line for line in result.stderr.splitlines() if line.startswith("Failed")]
    assert len(failed) == 3 and all("Failed needs_db" in line for line in failed)
    assert (
        "Resource error: Resource provider 'broken_db' failed to build its resource after 2 "
        "attempt(s): ConnectionRefusedError: db is down"
    ) in failed[0]
    assert not (tmp_path / "o" / "needs_db").exists()
    assert len(list((tmp_path / "o" / "independent").rglob("*.parquet"))) == 3


def test_a_resource_that_breaks_is_rebuilt_and_the_call_retried(write_job, tmp_path):
    log = tmp_path / "log"
    job = write_job(
        LOGGER.format(log=str(log))
        + """
class Gone(Exception):
    pass

class Session:
    def __init__(self):
        self.open = True
        self.used = 0
    def ask(self):
        if not self.open:
            raise Gone("session closed under us")
        self.used += 1
        if self.used == 30:
            self.open = False  # the server hung up
        return 7

@resource_provider(broken_on=(Gone,), retry=RetryPolicy(max_attempts=3, initial_backoff=0.01))
def session():
    note("build")
    yield Session()
    note("teardown")

@batch_feature_view(name="view", mode="python", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26), concurrency=4,
    features=[Attribute("n", Int64)], resource_providers={"s": session})
def view(row, context):
    return {"n": context.resources["s"].ask()}
"""
    )
    summary = backfill(job, *DAYS, output=tmp_path / "o", workers=2)
    assert summary.ok, summary.failed
    done = calls(log)
    assert done["build"] == done["teardown"] >= 3  # 144 rows, a breakage every 30 calls
    stats = summary.stats
    assert stats.rebuilds["session"] == done["build"] - len(summary.workers)
    assert stats.teardowns == stats.builds
    assert stats.retries["Gone"] >= 1
    rows = duckdb.sql(f"SELECT count(*), min(n), max(n) FROM '{tmp_path}/o/view/*/*.parquet'")
    assert rows.fetchall() == [(144, 7, 7)]


def callers(log: Path, what: str) -> set[str]:
    """The processes that noted `what`."""
    lines = log.read_text().splitlines() if log.exists() else []
    return {line.split()[1] for line in lines if line.split()[0] == what}


def wait_until(done, process: subprocess.Popen, what: str) -> None:
    """Poll until `done()`; the process must not end meanwhile."""
    deadline = time.monotonic() + 120  # a hang guard, not a speed limit
    while not done():
        assert process.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within the hang guard"
        time.sleep(0.02)


@pytest.mark.parametrize("workers", [1, 2])
def test_teardown_runs_for_every_build_when_interrupted(write_job, tmp_path, workers: int):
    # Two spawned workers get one Ctrl-C; one worker in the CLI's process gets two, the
    # second cancelling its interval: either way every resource is torn down, no temporary
    # file is left and the exit code says interrupted.
    log, err = tmp_path / "log", tmp_path / "stderr"
    # One worker: its calls outlast any delay before the second Ctrl-C, so that one always
    # finds calls running. Two workers: the one Ctrl-C lets calls in flight finish.
    seconds = 60 if workers == 1 else 0.3
    job = write_job(
        LOGGER.format(log=str(log))
        + """
@resource_provider
def slow_client():
    note("build")
    yield "client"
    note("teardown")

@batch_feature_view(name="view", mode="python", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26), micro_batch_size=4,
    concurrency=2, features=[Attribute("n", Int64)], resource_providers={"c": slow_client})
def view(row, context):
    note("call")
    time.sleep(SECONDS)
    return {"n": 1}
""".replace("SECONDS", repr(seconds))
    )
    with err.open("w") as stderr_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "engine", "backfill", str(job), "--start", "2024-10-26",
             "--end", "2024-10-29", "--output", str(tmp_path / "o"), "--workers", str(workers)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=stderr_file, text=True,
        )  # fmt: skip
    try:
        # A call in every worker, so that each has built its client before the Ctrl-C.
        wait_until(lambda: len(callers(log, "call")) == workers, process, "call in each worker")
        process.send_signal(signal.SIGINT)
        if workers == 1:  # two signals sent too close together arrive as one
            wait_until(lambda: "Stopping:" in err.read_text(), process, "'Stopping:' line")
            process.send_signal(signal.SIGINT)
        stdout, _ = process.communicate(timeout=60)  # a hang guard: it must exit
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    stderr = err.read_text()
    assert process.returncode == 130, stderr
    assert ("Cancelling:" in stderr) == (workers == 1), stderr
    done = calls(log)
    assert done["build"] == done["teardown"] == workers
    assert "interrupted" in stdout
    assert "Traceback" not in stderr
    assert not list((tmp_path / "o").rglob("*.tmp"))


ERRORS = """
@batch_feature_view(name="view", mode="{mode}", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26), on_error="{policy}",
    micro_batch_size=8,
    retry=RetryPolicy(max_attempts=2, initial_backoff=0.01, retry_on=(ValueError,)),
    features=[Attribute("n", Int64)])
def view({param}, context):
    {body}
"""
PYTHON_BODY = """if row["quantity"] == 3:
        raise ValueError("cannot score quantity 3 with token " + context.secrets.get("t", "-"))
    return {"n": row["quantity"]}"""


def run_policy(write_job, tmp_path: Path, policy: str, mode: str = "python") -> tuple:
    body = (
        PYTHON_BODY
        if mode == "python"
        else """if (df["quantity"] == 3).any():
        raise ValueError("a batch with quantity 3")
    return df.select("user_id", "timestamp", pl.col("quantity").alias("n"))"""
    )
    param = "row" if mode == "python" else "df"
    job = write_job(ERRORS.format(mode=mode, policy=policy, param=param, body=body))
    summary = backfill(job, *DAYS, output=tmp_path / "o")
    out = f"{tmp_path}/o/view/*/*.parquet"
    errors = f"{tmp_path}/o/_errors/view/*/*.parquet"
    return summary, out, errors


def test_skip_policy_writes_dead_letters(write_job, tmp_path):
    summary, out, errors = run_policy(write_job, tmp_path, "skip")
    assert summary.ok, summary.failed
    assert duckdb.sql(f"SELECT count(*) FROM '{out}' WHERE n = 3").fetchall() == [(0,)]
    assert duckdb.sql(f"SELECT count(*) FROM '{out}'").fetchall() == [(144 - 21,)]
    dead = duckdb.sql(
        f"SELECT user_id, attempts, error, interval_end - interval_start "
        f"FROM read_parquet('{errors}', hive_partitioning = false)"
    ).fetchall()
    assert len(dead) == 21 and summary.stats.dead_lettered == 21
    assert all(
        attempts == 2 and "ValueError: cannot score quantity 3" in error
        for _, attempts, error, _ in dead
    )
    schema = pq.read_schema(next((tmp_path / "o" / "_errors" / "view").rglob("*.parquet")))
    assert schema.names == [
        "user_id",
        "timestamp",
        "interval_start",
        "interval_end",
        "attempts",
        "error",
    ]


def test_null_policy_keeps_rows_with_null_features(write_job, tmp_path):
    summary, out, errors = run_policy(write_job, tmp_path, "null")
    assert summary.ok, summary.failed
    assert duckdb.sql(f"SELECT count(*), count(n) FROM '{out}'").fetchall() == [(144, 123)]
    assert duckdb.sql(f"SELECT count(*) FROM '{errors}'").fetchall() == [(21,)]


def test_null_policy_in_frame_mode_nulls_the_whole_batch(write_job, tmp_path):
    summary, out, errors = run_policy(write_job, tmp_path, "null", mode="polars")
    assert summary.ok, summary.failed
    [(rows, valued)] = duckdb.sql(f"SELECT count(*), count(n) FROM '{out}'").fetchall()
    [(dead,)] = duckdb.sql(f"SELECT count(*) FROM '{errors}'").fetchall()
    assert rows == 144 and dead > 0 and dead % 8 == 0 and valued == 144 - dead


def test_fail_policy_commits_nothing_of_the_interval(write_job, tmp_path):
    summary, _, _ = run_policy(write_job, tmp_path, "fail")
    assert len(summary.failed) == 3  # quantity 3 occurs every day
    assert "after 2 attempts" in summary.failed[0].error
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").rglob("*.parquet"))


THREADS = """
import threading

@resource_provider({options})
def counter():
    note("build")
    return {{"active": 0, "peak": 0, "lock": threading.Condition()}}

@batch_feature_view(name="view", mode="python", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26), concurrency=8,
    features=[Attribute("peak", Int64)], resource_providers={{"c": counter}})
def view(row, context):
    state = context.resources["c"]
    with state["lock"]:
        state["active"] += 1
        state["peak"] = max(state["peak"], state["active"])
        state["lock"].notify_all()
        # Until {most} call(s) are in at once, however the threads are scheduled (60 s: a
        # hang guard): the most the resource should allow, so a peak over it is a breach.
        state["lock"].wait_for(lambda: state["peak"] >= {most}, timeout=60)
    time.sleep(0.002)
    with state["lock"]:
        state["active"] -= 1
    return {{"peak": state["peak"]}}
"""


def test_serialized_resource_sees_one_call_at_a_time(write_job, tmp_path):
    log = tmp_path / "log"
    job = write_job(
        LOGGER.format(log=str(log)) + THREADS.format(options='thread_safety="serialize"', most=1)
    )
    assert backfill(job, *DAYS, output=tmp_path / "o").ok
    assert calls(log)["build"] == 1
    assert duckdb.sql(f"SELECT max(peak) FROM '{tmp_path}/o/view/*/*.parquet'").fetchall() == [(1,)]


def test_max_concurrency_caps_calls_in_flight(write_job, tmp_path):
    log = tmp_path / "log"
    job = write_job(
        LOGGER.format(log=str(log)) + THREADS.format(options="max_concurrency=3", most=3)
    )
    summary = backfill(job, *DAYS, output=tmp_path / "o")
    assert summary.ok, summary.failed
    peak = duckdb.sql(f"SELECT max(peak) FROM '{tmp_path}/o/view/*/*.parquet'").fetchall()
    assert peak == [(3,)]  # the view allows 8 in flight; the resource caps them at 3


PEAKS = """
import threading

STATE = {{"active": 0, "peak": 0, "lock": threading.Condition()}}

@batch_feature_view(name="view", mode="python", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26), concurrency=16,
    features=[Attribute("peak", Int64)])
def view(row):
    with STATE["lock"]:
        STATE["active"] += 1
        STATE["peak"] = max(STATE["peak"], STATE["active"])
        STATE["lock"].notify_all()
        if {sleep}:  # a row that waits: also for more rows to join it, up to 0.1 s
            STATE["lock"].wait_for(lambda: STATE["peak"] > {cpu}, timeout=0.1)
    time.sleep({sleep})
    with STATE["lock"]:
        STATE["active"] -= 1
    return {{"peak": STATE["peak"]}}
"""


@pytest.mark.parametrize("sleep", [0.005, 0])
def test_rows_in_flight_follow_whether_rows_wait(write_job, tmp_path, sleep: float):
    # Rows that wait (here 5 ms, after waiting up to 0.1 s for other rows to join them, so
    # that a slow thread start on a loaded machine cannot keep them apart) get more than the
    # 4 threads of CPU work, up to the view's 16; rows that return at once are CPU work, run
    # in chunks on at most 4 threads. How many run at once depends on timing: the bounds do
    # not.
    peaks = PEAKS.format(sleep=sleep, cpu=CPU_CHUNKS_IN_FLIGHT)
    job = write_job(LOGGER.format(log=str(tmp_path / "log")) + peaks)
    summary = backfill(job, *DAYS, output=tmp_path / "o")
    assert summary.ok, summary.failed
    [(seen,)] = duckdb.sql(f"SELECT max(peak) FROM '{tmp_path}/o/view/*/*.parquet'").fetchall()
    if sleep:
        assert CPU_CHUNKS_IN_FLIGHT < seen <= 16
    else:
        assert 1 <= seen <= CPU_CHUNKS_IN_FLIGHT


def test_per_thread_resource_is_built_once_per_thread(write_job, tmp_path):
    log = tmp_path / "log"
    job = write_job(
        LOGGER.format(log=str(log)) + THREADS.format(options='thread_safety="per_thread"', most=1)
    )
    summary = backfill(job, *DAYS, output=tmp_path / "o")
    assert summary.ok, summary.failed
    threads = [line.split()[2] for line in log.read_text().splitlines()]
    assert 1 < len(threads) <= 8 and len(set(threads)) == len(threads)
    assert summary.stats.builds["counter"] == summary.stats.teardowns["counter"] == len(threads)
    assert duckdb.sql(f"SELECT max(peak) FROM '{tmp_path}/o/view/*/*.parquet'").fetchall() == [(1,)]


def test_context_spend_takes_more_tokens(write_job, tmp_path):
    job = write_job(
        """
@resource_provider(rate_limit=RateLimit(requests_per_second=400, burst=4))
def api():
    return "api"

@batch_feature_view(name="view", mode="python", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("n", Int64)], resource_providers={"api": api})
def view(row, context):
    context.spend("api", 3)  # this call makes four requests in all
    return {"n": 1}
"""
    )
    summary = backfill(job, datetime(2024, 10, 26), datetime(2024, 10, 27), output=tmp_path / "o")
    assert summary.ok, summary.failed
    # 48 calls x 4 tokens at 400/s take at least 0.47 s of waiting (wall time, however many
    # calls wait at once); without spend() it would be 0.12 s. A loaded machine only adds.
    assert summary.stats.limiter_wait_seconds > 0.3
    assert summary.stats.limiter_wait_seconds <= summary.seconds  # wall time, not a sum


def test_a_secret_never_leaves_the_worker(write_job, tmp_path):
    token = "tok-" + os.urandom(12).hex()
    log = tmp_path / "log"
    job = write_job(
        LOGGER.format(log=str(log))
        + """
import logging

@resource_provider(secrets={"t": Secret(scope="acme", key="token")})
def api(context):
    logging.getLogger("rivulet").warning("built with %s", context.secrets)
    return context.secrets["t"]
"""
        + ERRORS.format(mode="python", policy="skip", param="row", body=PYTHON_BODY).replace(
            'features=[Attribute("n", Int64)])',
            'features=[Attribute("n", Int64)], resource_providers={"api": api}, '
            'secrets={"t": Secret(scope="acme", key="token")})',
        )
    )
    result = run_cli(
        "backfill", job, "--start", "2024-10-26", "--end", "2024-10-29", "--output", tmp_path / "o",
        "--json", "--debug", env={"RIVULET_SECRET_ACME__TOKEN": token},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert '"dead_lettered_rows": 21' in result.stdout
    assert (
        "***"
        in duckdb.sql(
            f"SELECT any_value(error) FROM '{tmp_path}/o/_errors/view/*/*.parquet'"
        ).fetchall()[0][0]
    )
    places = {"stdout": result.stdout, "stderr": result.stderr}
    places |= {
        str(p): p.read_bytes().decode("latin-1")
        for p in tmp_path.rglob("*")
        if p.is_file() and p.suffix != ".py"
    }
    assert len(places) > 8  # output files, dead letters, the log
    for place, text in places.items():
        assert token not in text, f"the secret leaked into {place}"


def test_a_transform_raising_stop_iteration_fails_its_interval(write_job, tmp_path):
    job = write_job(
        """
@batch_feature_view(name="view", mode="python", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("n", Int64)])
def view(row):
    return {"n": next(iter([]))}  # StopIteration cannot cross into an asyncio future
"""
    )
    summary = backfill(job, datetime(2024, 10, 26), datetime(2024, 10, 27), output=tmp_path / "o")
    [failed] = summary.failed
    assert "RuntimeError: StopIteration escaped the call" in failed.error


def test_skip_policy_covers_values_that_do_not_cast(write_job, tmp_path):
    job = write_job(
        """
@batch_feature_view(name="view", mode="python", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26), on_error="skip",
    features=[Attribute("n", Int64)])
def view(row):
    return {"n": "not a number" if row["quantity"] == 3 else row["quantity"]}
"""
    )
    summary = backfill(job, datetime(2024, 10, 26), datetime(2024, 10, 27), output=tmp_path / "o")
    assert summary.ok, summary.failed
    assert duckdb.sql(f"SELECT count(*) FROM '{tmp_path}/o/view/*/*.parquet'").fetchall() == [(41,)]
    errors = f"{tmp_path}/o/_errors/view/*/*.parquet"
    [(count, error)] = duckdb.sql(f"SELECT count(*), any_value(error) FROM '{errors}'").fetchall()
    assert count == 7 and "'n' is declared Int64 but the transform returned str" in error
