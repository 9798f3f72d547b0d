"""The Executor protocol: a second executor, hosting the public worker loop on threads of this
process and handing tasks out in reverse order, gives the output and ledger LocalExecutor does."""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

import pyarrow.parquet as pq

from engine import backfill
from engine.define.secrets import Secret
from engine.execute.protocol import (
    Event,
    Outcome,
    Recover,
    RunSettings,
    Task,
    TaskResult,
    WorkerReport,
    serve,
)
from engine.store.ledger import Ledger
from tests.conftest import run_cli

JOB = """
@resource_provider
def doubler():
    return lambda n: 2 * n

@batch_feature_view(name="doubled", mode="python", sources=[events], entities=[user],
    batch_schedule="12h", feature_start_time=datetime(2024, 10, 26), micro_batch_size=5,
    features=[Attribute("twice", Int64)], resource_providers={"d": doubler})
def doubled(row, context):
    return {"twice": context.resources["d"](row["quantity"])}

@batch_feature_view(name="totals", mode="polars", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("total", Float64)])
def totals(df):
    return df.select("user_id", "timestamp", (pl.col("amount") * 2).alias("total"))
"""
DAYS = (datetime(2024, 10, 26), datetime(2024, 10, 29))


class ReversedThreads:
    """Hosts `serve` on `threads` threads of this process, tasks handed out last first; the
    workers' events reach `on_event` on the caller's thread, as the protocol asks."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.order: list[Task] = []

    def execute(
        self,
        tasks: Sequence[Task],
        settings: RunSettings,
        secret_values: Mapping[Secret, str],
        on_event: Callable[[Event], None],
        recover: Recover = lambda task: None,
    ) -> Outcome:
        pending, lock, events = list(tasks), threading.Lock(), queue.SimpleQueue()

        def take() -> Task | None:
            with lock:
                task = pending.pop() if pending else None
                if task is not None:
                    self.order.append(task)
                return task

        workers = [
            threading.Thread(
                target=serve,
                args=(settings, secret_values, take, events.put, lambda: False),
                kwargs={"worker_id": i},
            )
            for i in range(self.workers)
        ]
        for worker in workers:
            worker.start()
        results: dict[Task, TaskResult] = {}
        reports: list[WorkerReport] = []
        while len(reports) < self.workers:
            event = events.get()
            on_event(event)
            if isinstance(event, TaskResult):
                results[event.task] = event
            elif isinstance(event, WorkerReport):
                reports.append(event)
        for worker in workers:
            worker.join()
        return Outcome([results[task] for task in tasks], reports, False)


def store(output) -> tuple[dict, list]:
    """Every committed file's rows and Rivulet metadata (less the run id), and the ledger's
    intervals (less run ids and times)."""
    files = {}
    for path in sorted(output.glob("*/interval_start=*/data.parquet")):
        metadata = pq.read_metadata(path).metadata
        kept = {
            k: v
            for k, v in metadata.items()
            if k.startswith(b"rivulet.") and k != b"rivulet.run_id"
        }
        files[str(path.relative_to(output))] = (pq.read_table(path).to_pylist(), kept)
    entries = [
        (e.feature_view, e.interval_start, e.interval_end, e.state, e.rows, e.fingerprint)
        for e in Ledger(output).entries()
    ]
    return files, entries


def test_a_second_executor_gives_what_the_local_one_gives(write_job, tmp_path) -> None:
    job = write_job(JOB)
    local = backfill(job, *DAYS, output=tmp_path / "local")
    threads = ReversedThreads(2)
    other = backfill(job, *DAYS, output=tmp_path / "threads", executor=threads)
    assert local.ok and other.ok, (local.failed, other.failed)
    assert threads.order == list(reversed([r.task for r in local.results]))
    assert len(threads.order) == 9  # 6 half-days of one view, 3 days of the other
    assert store(tmp_path / "threads") == store(tmp_path / "local")
    assert {r.worker for r in other.results} <= {0, 1}


def test_the_cli_names_its_executor(write_job, tmp_path) -> None:
    job = write_job(JOB)
    chosen = run_cli("backfill", job, "--start", "2024-10-26", "--end", "2024-10-27",
                     "--executor", "local", "--output", tmp_path / "o")  # fmt: skip
    assert chosen.returncode == 0, chosen.stderr
    unknown = run_cli("backfill", job, "--start", "2024-10-26", "--end", "2024-10-27",
                      "--executor", "dask", "--output", tmp_path / "o")  # fmt: skip
    assert unknown.returncode == 2
    assert "Invalid value for '--executor': 'dask' is not one of 'local', 'ray'" in unknown.stderr
    misplaced = run_cli("backfill", job, "--start", "2024-10-26", "--end", "2024-10-27",
                        "--ray-address", "127.0.0.1:6379", "--output", tmp_path / "o")  # fmt: skip
    assert misplaced.returncode == 2 and "--ray-address needs --executor ray" in misplaced.stderr


def test_workers_auto_starts_one_worker_per_core(write_job, tmp_path) -> None:
    job = write_job(JOB)
    done = run_cli("backfill", job, "--start", "2024-10-26", "--end", "2024-10-29",
                   "--workers", "auto", "--json", "--output", tmp_path / "o")  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert len(summary["resource_builds_by_worker"]) == min(os.cpu_count() or 1, 9)
    bad = run_cli("backfill", job, "--start", "2024-10-26", "--end", "2024-10-27",
                  "--workers", "many", "--output", tmp_path / "o")  # fmt: skip
    assert bad.returncode == 2
    assert "Invalid value for '--workers': 'many' is neither a number of processes nor auto" in (
        bad.stderr
    )
