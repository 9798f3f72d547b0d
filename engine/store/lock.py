"""One writer per offline store: a run holds an exclusive lock on `<output>/_rivulet/lock`."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.errors import SettingsError
from engine.store.ledger import LEDGER_FOLDER


@contextmanager
def output_lock(output: str | Path) -> Iterator[None]:
    """Hold the store's lock for a run; the OS releases it if the process dies."""
    path = Path(output) / LEDGER_FOLDER / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise SettingsError(
                f"Another Rivulet run ({holder}) is writing to {output}; wait for it to finish "
                f"or use another --output."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
