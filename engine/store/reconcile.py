"""Make the ledger agree with the files after a crash at any instant."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from engine.define.feature_views import BatchFeatureView
from engine.store.dead_letters import ERRORS_FOLDER
from engine.store.ledger import LEDGER_FOLDER, Ledger
from engine.store.parquet import UnreadableFile, committed_files


def quarantine_dir(output: str | Path) -> Path:
    """Where reconcile moves unreadable files: `<output>/_rivulet/quarantine/`, out of any
    glob over the views' folders."""
    return Path(output) / LEDGER_FOLDER / "quarantine"


def reconcile(output: str | Path, views: Sequence[BatchFeatureView], ledger: Ledger) -> list[str]:
    """Remove temporary leftovers, move unreadable files into the quarantine folder, record
    committed files the ledger lacks (a crash between rename and ledger write), and forget
    commits whose file is gone, so that their intervals are computed again. Returns what it
    did."""
    output = Path(output)
    notes = []
    for view in views:
        for folder in (output / view.name, output / ERRORS_FOLDER / view.name):
            leftovers = list(folder.glob("*/.*.tmp"))
            for leftover in leftovers:
                leftover.unlink(missing_ok=True)
            if leftovers:
                notes.append(f"removed {len(leftovers)} unfinished file(s) under {folder}")
        unreadable: list[UnreadableFile] = []
        files = {f.start: f for f in committed_files(output, view.name, unreadable.append)}
        moved: dict[datetime | None, str] = {}  # why, by interval start
        for bad in unreadable:
            aside = _move_aside(output, view.name, bad.path)
            moved[bad.start] = f"its file could not be read ({bad.error}) and was moved to {aside}"
            notes.append(
                f"moved {bad.path}, which cannot be read ({bad.error}), to {aside}; its "
                f"interval is now missing and will be computed again"
            )
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
                if start in moved:
                    ledger.forget(view.name, start, moved[start])
                    continue
                ledger.forget(view.name, start)
                notes.append(f"forgot {view.name} {start:%Y-%m-%d %H:%M}, whose file is missing")
    return notes


def _move_aside(output: Path, view: str, path: Path) -> Path:
    """Move `path` to `<quarantine>/<view>/<its folder>/data.parquet.<UTC time>`."""
    aside = quarantine_dir(output) / view / path.parent.name
    aside.mkdir(parents=True, exist_ok=True)
    target = aside / f"{path.name}.{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}"
    os.replace(path, target)
    return target
