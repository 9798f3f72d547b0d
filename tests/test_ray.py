"""`--executor ray`: the same output as local workers, resources once per actor, actors that
die mid-run replaced and their interval retried, a two-node cluster, resume after the
driver is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from engine.execute.local import LocalExecutor
from engine.execute.protocol import TaskStarted
from engine.materialize import RunPlanned, backfill
from fixtures.mock_api import MockAPI
from tests.conftest import REPO, START

ray = pytest.importorskip("ray")  # the ray extra; the dev extras install it

DAYS = (START, datetime(2024, 10, 29))


@pytest.fixture(scope="module")
def local_ray(mock_api: MockAPI) -> Iterator[None]:
    """One local Ray for the module's tests (starting one costs seconds). Its actors see
    the environment Ray started with: the mock API's URL is set before."""
    saved = os.environ.get("OPENAI_BASE_URL")
    os.environ["OPENAI_BASE_URL"] = mock_api.base_url
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024 * 1024)
    yield
    ray.shutdown()
    if saved is None:
        os.environ.pop("OPENAI_BASE_URL")
    else:
        os.environ["OPENAI_BASE_URL"] = saved


@pytest.fixture
def seed_fixed(tmp_path: Path, openai_env: MockAPI) -> Path:
    """tests/jobs/tecton_seed.py with its batch view's declaration fixed to what it returns."""
    text = (REPO / "tests" / "jobs" / "tecton_seed.py").read_text()
    text = text.replace('Attribute("text", String)', 'Attribute("embedding", Array(Float32))')
    text = text.replace("from engine import (", "from engine import (\n    Array,\n    Float32,")
    text = text.replace("Path(__file__).resolve().parents[2]", f"Path({str(REPO)!r})")
    job = tmp_path / "seed_fixed.py"
    job.write_text(text)
    return job


def table(output: Path, view: str) -> list[tuple]:
    return duckdb.sql(
        f"SELECT * FROM read_parquet('{output}/{view}/*/*.parquet') ORDER BY ALL"
    ).fetchall()


def test_ray_actors_write_what_local_workers_write_and_build_once_each(
    local_ray: None, seed_fixed: Path, tmp_path: Path
) -> None:
    from engine.execute.ray import RayExecutor

    on_ray = backfill(seed_fixed, *DAYS, output=tmp_path / "ray", executor=RayExecutor(2))
    local = backfill(seed_fixed, *DAYS, output=tmp_path / "local", executor=LocalExecutor(2))
    assert on_ray.ok and local.ok, [r.error for r in on_ray.failed + local.failed]
    assert table(tmp_path / "ray", "bfv") == table(tmp_path / "local", "bfv")
    assert len(table(tmp_path / "ray", "bfv")) > 0
    assert len(on_ray.workers) == 2
    assert [dict(w.stats.builds) for w in on_ray.workers] == [{"open_ai_client": 1}] * 2


GATED_JOB = """
import os, time
from pathlib import Path

GATE = Path({gate!r})  # in the job's text: a Ray started earlier does not see new variables

@batch_feature_view(mode="python", sources=[events], entities=[user],
                    features=[Attribute("n", Int64)], batch_schedule=timedelta(days=1),
                    feature_start_time=datetime(2024, 10, 26), timestamp_field="timestamp")
def gated(row):
    if row["timestamp"].day == 27 and not GATE.exists():
        GATE.write_text(str(os.getpid()))  # the first attempt at day 27 waits to be killed
        time.sleep(600)
    return {{"n": len(row["text"])}}
"""


@pytest.mark.parametrize("how", ["ray.kill", "SIGKILL"])
def test_an_actor_killed_mid_interval_is_replaced_and_the_interval_retried(
    local_ray: None, write_job, tmp_path: Path, how: str
) -> None:
    from engine.execute.ray import RayExecutor

    gate = tmp_path / "gate"
    job = write_job(GATED_JOB.format(gate=str(gate)))
    run_id: list[str] = []
    holder: dict[str, int] = {}

    def watch(event: object) -> None:
        if isinstance(event, RunPlanned):
            run_id.append(event.run_id)
        if isinstance(event, TaskStarted) and event.task.start.day == 27:
            holder.setdefault("worker", event.worker)

    summary: list = []
    thread = threading.Thread(
        target=lambda: summary.append(
            backfill(job, *DAYS, output=tmp_path / "out", executor=RayExecutor(2), on_event=watch)
        )
    )
    thread.start()
    deadline_s = 120
    waited = threading.Event()
    for _ in range(deadline_s * 20):  # until the first attempt at day 27 is under way
        if gate.exists() and "worker" in holder:
            break
        waited.wait(0.05)
    assert gate.exists(), "no attempt at day 27 started"
    if how == "ray.kill":
        ray.kill(ray.get_actor(f"rivulet-{run_id[0]}-{holder['worker']}"))
    else:
        os.kill(int(gate.read_text()), signal.SIGKILL)
    thread.join(300)
    [done] = summary
    assert done.ok, [r.error for r in done.failed]
    assert any("while computing" in note and "retried" in note for note in done.notes)
    expected = backfill(job, *DAYS, output=tmp_path / "local", executor=LocalExecutor(1))
    assert table(tmp_path / "out", "gated") == table(tmp_path / "local", "gated")
    assert expected.ok


NODE_JOB = """
import os

@resource_provider()
def where():
    import ray
    with open(os.environ["NODE_LOG"], "a") as log:
        log.write(ray.get_runtime_context().get_node_id() + "\\n")
    return "here"

@batch_feature_view(mode="python", sources=[events], entities=[user],
                    features=[Attribute("n", Int64)], batch_schedule=timedelta(hours=6),
                    feature_start_time=datetime(2024, 10, 26), timestamp_field="timestamp",
                    resource_providers={"where": where})
def spread(row, context):
    return {"n": len(context.resources["where"]) + len(row["text"])}
"""

CLUSTER_SCRIPT = """
import sys
from datetime import datetime
import ray
from ray.cluster_utils import Cluster
from engine.execute.ray import RayExecutor
from engine.materialize import backfill

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
cluster.add_node(num_cpus=1)
ray.init(address=cluster.address)
summary = backfill(sys.argv[1], datetime(2024, 10, 26), datetime(2024, 10, 29),
                   output=sys.argv[2], executor=RayExecutor(2, num_cpus=1))
print("ok" if summary.ok else [r.error for r in summary.failed])
ray.shutdown()
cluster.shutdown()
"""


def test_a_two_node_cluster_runs_actors_on_both_nodes(write_job, tmp_path: Path) -> None:
    job = write_job(NODE_JOB)
    log = tmp_path / "nodes.log"
    done = subprocess.run(
        [sys.executable, "-c", CLUSTER_SCRIPT, str(job), str(tmp_path / "out")],
        capture_output=True, text=True, cwd=REPO, timeout=600,
        env={**os.environ, "NODE_LOG": str(log)},
    )  # fmt: skip
    assert done.stdout.strip().endswith("ok"), done.stdout + done.stderr
    nodes = Counter(log.read_text().split())
    assert len(nodes) == 2 and set(nodes.values()) == {1}  # one actor, one build, per node
    assert len(table(tmp_path / "out", "spread")) == 3 * 48


def test_a_killed_driver_resumes_on_rerun_computing_only_what_was_missing(
    write_job, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    job = write_job(GATED_JOB.format(gate=str(gate)))
    command = [sys.executable, "-m", "engine", "backfill", str(job), "--start", "2024-10-26",
               "--end", "2024-10-29", "--output", str(tmp_path / "out"), "--executor", "ray",
               "--workers", "2", "--json"]  # fmt: skip
    env = dict(os.environ)
    driver = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    waited = threading.Event()
    for _ in range(2400):  # until day 27 is stuck (its gate made) and another day committed
        if gate.exists() and list((tmp_path / "out" / "gated").glob("*/data.parquet")):
            break
        waited.wait(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait(60)
    rerun = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["skipped_intervals"] >= 1  # what the killed run committed is not redone
    assert summary["intervals"] + summary["skipped_intervals"] == 3
    assert summary["ok"]
