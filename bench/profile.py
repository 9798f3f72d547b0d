"""Profile one interval of a bench job inside this process (a Worker, not a spawned one).

`python -m bench.profile JOB EVENTS [--days N] [--sort tottime]` prints cProfile's top
functions over `Worker.run` of each daily interval; set MOCK_API_URL for API-bound jobs.
Worker threads are not profiled by cProfile: their share shows as time the loop waits.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
from datetime import timedelta

from bench.data import START
from bench.harness import JOBS
from engine.plan.tasks import Task
from engine.work.worker import RunSettings, Worker


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("job", help="a job in bench/jobs, e.g. trivial")
    parser.add_argument("events", help="a Parquet file of events (bench.data.write_events)")
    parser.add_argument("--view", help="the feature view (default: the job's first)")
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    os.environ["BENCH_EVENTS"] = args.events
    with tempfile.TemporaryDirectory(prefix="rivulet-profile-") as output:
        worker = Worker(RunSettings(str(JOBS / f"{args.job}.py"), output, "profile"), {})
        view = args.view or next(iter(worker.job.feature_views))
        tasks = [
            Task(view, START + timedelta(days=d), START + timedelta(days=d + 1))
            for d in range(args.days)
        ]
        profile = cProfile.Profile()
        profile.enable()
        results = [worker.materialize(task) for task in tasks]
        profile.disable()
        worker.close()
    for result in results:
        print(
            f"{result.task.label}: {result.rows:,} rows in {result.seconds:.2f} s",
            result.error or "",
        )
    pstats.Stats(profile).sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    main()
