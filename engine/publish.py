"""Online views' committed intervals, published to the online store by the driver.

An interval is published right after the ledger records its commit; the store records it
in the same transaction as its rows. So the online store is behind the offline one only
between those two steps, and `repair` (run beside reconcile, before every run's work)
publishes whatever a crash there left out, as it does for a new or flushed store. Writes
keep the newer row per entity, so publishing an interval twice changes nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import pyarrow as pa

from engine.define.feature_views import BatchFeatureView
from engine.define.schedule import as_utc, boundary, interval_index
from engine.errors import SettingsError
from engine.faults import fault_point
from engine.online.rows import namespace, newest_entries, table_entries
from engine.online.stores import Entry, open_store
from engine.plan.intervals import tile
from engine.plan.job import load_job
from engine.retrieve.offline import read_files
from engine.store.ledger import LEDGER_FOLDER, Ledger
from engine.store.lock import output_lock
from engine.store.parquet import DATA_FILE, committed_files, partition_dir
from engine.store.tiles import lookback, windows_at

WRITE_CHUNK = 10_000  # entities per online-store transaction


class Publisher:
    """Publishes the committed intervals of a job's online views to the store at `url`
    (default: the SQLite file beside `output`), opened only if one of `views` is online."""

    def __init__(
        self, url: str | None, job: str, output: str | Path, views: Sequence[BatchFeatureView]
    ) -> None:
        self._job = job
        self._output = output
        self._views = {view.name: view for view in views if view.online}
        self.store = open_store(url, output) if self._views else None
        self._published = 0
        self._newest: dict[str, datetime] = {}  # each aggregate view's newest interval start

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def publish(self, view: str, start: datetime, run_id: str) -> None:
        """Publish one committed interval, if its view is online."""
        if self.store is None or view not in self._views:
            return
        self._published += 1
        fault_point("published", self._published)  # crash tests: after the ledger, before this
        self._write(self._views[view], [(start, run_id)])

    def repair(self, ledger: Ledger) -> list[str]:
        """Publish every committed interval the store does not hold; return what was done."""
        notes = []
        for name, view in self._views.items():
            assert self.store is not None  # opened, as a view is online
            held = self.store.published(namespace(self._job, view))
            lacking = [
                (entry.interval_start, entry.run_id or "")
                for entry in ledger.entries(name, state="committed")
                if held.get(entry.interval_start.isoformat()) != entry.run_id
            ]
            if lacking:
                self._write(view, lacking)
                notes.append(
                    f"published {len(lacking)} committed interval(s) of {name} that the online "
                    f"store {self.store.url} lacked"
                )
        return notes

    def _write(self, view: BatchFeatureView, intervals: Sequence[tuple[datetime, str]]) -> None:
        """Write each entity's newest row across the intervals' files, in transactions of
        WRITE_CHUNK rows; the last one records the intervals as held, so a crash before it
        leaves them to repair."""
        assert self.store is not None
        if view.aggregates:
            entries = self._windows(view, [start for start, _ in intervals])
        else:
            files = [
                partition_dir(self._output, view.name, start) / DATA_FILE for start, _ in intervals
            ]
            entries = newest_entries(view, files)
        held = [(start.isoformat(), run_id) for start, run_id in intervals]
        chunks = [entries[at : at + WRITE_CHUNK] for at in range(0, len(entries), WRITE_CHUNK)]
        space = namespace(self._job, view)
        for chunk in chunks[:-1]:
            self.store.write(space, chunk, [])
        self.store.write(space, chunks[-1] if chunks else [], held)

    def _windows(self, view: BatchFeatureView, starts: Sequence[datetime]) -> list[Entry]:
        """An aggregate view's windows at the end of its newest committed interval, stamped
        with it, for every entity with a tile its windows reached since before the oldest
        of `starts` (so an entity whose rows just left every window gets its count of 0).
        Intervals committed out of order (several workers) are so merged into the newest
        windows again as each arrives: the store keeps a row of the same time."""
        if view.name not in self._newest:  # listed once: later commits are the ones given
            self._newest[view.name] = max(
                (file.start for file in committed_files(self._output, view.name)),
                default=min(starts),
            )
        newest = self._newest[view.name] = max(self._newest[view.name], *starts)
        end = boundary(
            view.feature_start_time,
            view.batch_schedule,
            interval_index(view.feature_start_time, view.batch_schedule, newest) + 1,
        )
        reach = lookback(view)
        since = view.feature_start_time if reach is None else min(starts) - reach
        # The intervals' own files, not a listing of the view's (which reads every file's
        # metadata, once per publish: a backfill's publishing would grow with its square).
        origin, schedule = view.feature_start_time, view.batch_schedule
        paths = [
            path
            for start, _ in tile(origin, schedule, max(since, origin), end)
            if (path := partition_dir(self._output, view.name, start) / DATA_FILE).exists()
        ]
        tiles = read_files(view, paths, output=self._output)
        keys = tiles.group_by([k.name for k in view.join_keys]).aggregate([])
        moments = pa.array([end] * keys.num_rows, pa.timestamp("us", "UTC"))
        found = windows_at(view, tiles, keys, moments)
        stamped = keys.append_column(view.timestamp_field, moments)
        for name in found.column_names:
            stamped = stamped.append_column(name, found[name])
        return table_entries(view, stamped)

    def load(
        self,
        start: datetime | None,
        end: datetime | None,
        on_progress: Callable[[int, int], None] = lambda done, total: None,
    ) -> int:
        """Publish every committed file (the files, not the ledger, are the truth) of an
        interval starting in [start, end), held already or not, a view at a time; report
        (intervals done, total) after each view; return how many."""
        by_view = {
            name: [
                (file.start, file.run_id)
                for file in committed_files(self._output, name)
                if (start is None or file.start >= start) and (end is None or file.start < end)
            ]
            for name in self._views
        }
        total, done = sum(map(len, by_view.values())), 0
        for name, intervals in by_view.items():
            if intervals:
                self._write(self._views[name], intervals)
            done += len(intervals)
            on_progress(done, total)
        return total


def load_online(
    job: str | Path,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    output: str | Path = "offline_store",
    online_store: str | None = None,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
) -> int:
    """Fill the online store from the committed offline files of the job's online views
    (all, or those of intervals starting in [start, end)): a new Redis, a rebuilt one.
    Publishing twice changes nothing. Returns how many intervals were published.

    Example:
        load_online("jobs/transactions.py", online_store="redis://127.0.0.1:6379/0")
    """
    loaded = load_job(job)
    views, _ = loaded.materialized(())
    if not any(view.online for view in views):
        raise SettingsError(
            f"Job '{loaded.name}' has no feature view with online=True, so there is nothing "
            f"to load into an online store."
        )
    if Ledger.existing(output) is None:
        raise SettingsError(
            f"{output} is not an offline store (it has no {LEDGER_FOLDER}/ folder); pass the "
            f"--output the job was backfilled to."
        )
    publisher = Publisher(online_store, loaded.name, output, views)
    with output_lock(output), contextlib.closing(publisher):  # no run rewrites files meanwhile
        return publisher.load(as_utc(start) if start else None, as_utc(end) if end else None,
                              on_progress)  # fmt: skip
