"""Make the ledger agree with the files after a crash at any instant."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from engine.define.feature_views import BatchFeatureView
from engine.record.ledger import Ledger
from engine.write.dead_letters import ERRORS_FOLDER
from engine.write.parquet import committed_files


def reconcile(output: str | Path, views: Sequence[BatchFeatureView], ledger: Ledger) -> list[str]:
    """Remove temporary leftovers, record committed files the ledger lacks (a crash between
    rename and ledger write), and forget entries whose file is gone. Returns what it did."""
    output = Path(output)
    notes = []
    for view in views:
        for folder in (output / view.name, output / ERRORS_FOLDER / view.name):
            leftovers = list(folder.glob("*/.*.tmp"))
            for leftover in leftovers:
                leftover.unlink(missing_ok=True)
            if leftovers:
                notes.append(f"removed {len(leftovers)} unfinished file(s) under {folder}")
        files = {f.start: f for f in committed_files(output, view.name)}
        entries = {e.interval_start: e for e in ledger.entries(view.name)}
        for start, file in sorted(files.items()):
            entry = entries.get(start)
            if entry is None or entry.state != "committed" or entry.run_id != file.run_id:
                ledger.commit(view.name, start, file.end, file.rows, file.fingerprint, file.run_id)
                notes.append(
                    f"recorded {view.name} {start:%Y-%m-%d %H:%M}, committed without a ledger entry"
                )
        for start, entry in entries.items():
            if entry.state == "committed" and start not in files:
                ledger.forget(view.name, start)
                notes.append(f"forgot {view.name} {start:%Y-%m-%d %H:%M}, whose file is missing")
    return notes
