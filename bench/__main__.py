"""`python -m bench` (or `make bench`): run every benchmark and print its table."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bench import api_throughput, memory


def run() -> None:
    only = set(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="rivulet-bench-") as workdir:
        for name, module in (("api", api_throughput), ("memory", memory)):
            if not only or name in only:
                module.main(Path(workdir) / name)


run()
