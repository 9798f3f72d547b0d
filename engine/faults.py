"""Crash points for crash tests: RIVULET_KILL_AT=<point>:<n> SIGKILLs the process at the
n-th pass of `point`. "committed" is in a worker after a file's rename, before its result
reaches the driver; "published" is in the driver after the ledger recorded a commit,
before the online store has it."""

from __future__ import annotations

import os
import signal


def fault_point(point: str, count: int) -> None:
    if os.environ.get("RIVULET_KILL_AT") == f"{point}:{count}":
        os.kill(os.getpid(), signal.SIGKILL)
