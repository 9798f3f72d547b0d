"""`python -m bench [names...] [--quick]` (or `make bench`): run the scenarios, print one
table each, and write `bench/results/results.json` and `results.png`."""

from __future__ import annotations

import argparse
import importlib
import tempfile
import time
from pathlib import Path

from bench import report

SCENARIOS = {
    "s1_api": "api",
    "s2_rate": "rate",
    "s3_batched": "batched",
    "s4_cpu": "cpu",
    "s5_overhead": "overhead",
    "s6_startup": "startup",
    "s7_memory": "memory",
    "s8_serving": "serving",
    "s9_ray": "ray",
    "s10_shared_limit": "limit",
    "s11_seed": "seed",
    "s12_schedule": "hourly",
    "s13_online": "online",
    "s14_aggregates": "aggregates",
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    choices = [*SCENARIOS, *SCENARIOS.values(), *(n.split("_")[0] for n in SCENARIOS)]
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"scenarios (default all): {', '.join(choices)}"
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one run each")
    args = parser.parse_args()
    if unknown := set(args.names) - set(choices):
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    chosen = [
        module for module, alias in SCENARIOS.items()
        if not args.names or {module, alias, module.split("_")[0]} & set(args.names)
    ]  # fmt: skip
    paths: tuple[Path, ...] = ()
    with tempfile.TemporaryDirectory(prefix="rivulet-bench-") as workdir:
        for name in chosen:
            began = time.perf_counter()
            scenario = importlib.import_module(f"bench.{name}").run(Path(workdir), args.quick)
            print(report.table(scenario), flush=True)
            print(f"({time.perf_counter() - began:.0f} s)", flush=True)
            paths = report.write([scenario])  # after each, so a failure keeps what was measured
    for path in paths:
        print(f"wrote {path}")


main()
