"""`python -m bench` (or `make bench`): run every benchmark and print its table."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bench import api_throughput, memory, rate_limit


def run() -> None:
    only = set(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="rivulet-bench-") as workdir:
        benchmarks = (("api", api_throughput), ("rate", rate_limit), ("memory", memory))
        for name, module in benchmarks:
            if not only or name in only:
                module.main(Path(workdir) / name)


run()
