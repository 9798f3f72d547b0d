"""The state ledger: one SQLite file in `<output>/_rivulet/`, written by the driver alone.

Per feature view and interval it records the state, rows, definition fingerprint, run id,
attempt, start and finish times and error; per run, its command and outcome. The Parquet
files are the truth and the ledger their index: a partition file is renamed into place
first and recorded second, and `reconcile()` repairs whatever a crash left in between. A
damaged ledger raises a StoreError: deleting it is safe, as reconcile rebuilds it from the files.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from engine.errors import SettingsError, StoreError, one_line

SCHEMA_VERSION = 1
LEDGER_FOLDER = "_rivulet"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS intervals (
    feature_view TEXT NOT NULL,
    interval_start TEXT NOT NULL,
    interval_end TEXT NOT NULL,
    state TEXT NOT NULL,
    rows INTEGER,
    fingerprint TEXT,
    run_id TEXT,
    attempt INTEGER NOT NULL DEFAULT 1,
    started_at TEXT,
    finished_at TEXT,
    error TEXT,
    PRIMARY KEY (feature_view, interval_start)
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    command TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    outcome TEXT,
    intervals INTEGER,
    failed INTEGER,
    rows INTEGER
);
"""


@dataclass(frozen=True)
class Entry:
    """What the ledger knows of one interval of one feature view."""

    feature_view: str
    interval_start: datetime
    interval_end: datetime
    state: str  # "committed", "failed", or "missing" (committed, then its file was lost)
    rows: int | None
    fingerprint: str | None
    run_id: str | None
    attempt: int
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None


@dataclass(frozen=True)
class RunRecord:
    """One run: what was asked and how it ended."""

    run_id: str
    job: str
    command: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    intervals: int | None
    failed: int | None
    rows: int | None


class Ledger:
    """The ledger of one offline store. The driver of a run writes it (workers return what
    they committed); readers (`status`, `plan`) open their own. The connection stays open
    until `close()` (or garbage collection): opening one per write cost ~3 ms an interval.

    Example:
        ledger = Ledger("offline_store")
        committed = ledger.entries("text_embedding", state="committed")
    """

    def __init__(self, output: str | Path) -> None:
        self.path = Path(output) / LEDGER_FOLDER / "ledger.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db: sqlite3.Connection | None = None
        with self._connect() as db:
            db.executescript(_SCHEMA)
            db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            version = int(
                db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
            )
        if version != SCHEMA_VERSION:
            raise SettingsError(
                f"The ledger {self.path} has schema version {version}; this Rivulet reads "
                f"version {SCHEMA_VERSION}. Use the Rivulet that wrote it, or a new --output."
            )

    @classmethod
    def existing(cls, output: str | Path) -> Ledger | None:
        """The store's ledger if it has one; None (and nothing created) otherwise."""
        return cls(output) if (Path(output) / LEDGER_FOLDER / "ledger.sqlite").exists() else None

    def commit(
        self,
        view: str,
        start: datetime,
        end: datetime,
        rows: int,
        fingerprint: str,
        run_id: str,
        started_at: datetime | None = None,
    ) -> None:
        """Record an interval whose file has just been renamed into place."""
        with self._connect() as db:
            db.execute(
                """INSERT INTO intervals VALUES (?, ?, ?, 'committed', ?, ?, ?, 1, ?, ?, NULL)
                ON CONFLICT (feature_view, interval_start) DO UPDATE SET
                    interval_end = excluded.interval_end, state = 'committed',
                    rows = excluded.rows, fingerprint = excluded.fingerprint,
                    run_id = excluded.run_id, attempt = intervals.attempt + 1,
                    started_at = excluded.started_at, finished_at = excluded.finished_at,
                    error = NULL""",
                (view, _iso(start), _iso(end), rows, fingerprint, run_id,
                 _iso(started_at), _iso(_now())),
            )  # fmt: skip

    def fail(
        self,
        view: str,
        start: datetime,
        end: datetime,
        run_id: str,
        error: str,
        started_at: datetime | None = None,
    ) -> None:
        """Record a failed attempt; an interval committed earlier stays committed."""
        with self._connect() as db:
            db.execute(
                """INSERT INTO intervals VALUES (?, ?, ?, 'failed', NULL, NULL, ?, 1, ?, ?, ?)
                ON CONFLICT (feature_view, interval_start) DO UPDATE SET
                    attempt = intervals.attempt + 1, error = excluded.error,
                    state = CASE WHEN intervals.state = 'committed' THEN 'committed'
                                 ELSE 'failed' END,
                    run_id = CASE WHEN intervals.state = 'committed' THEN intervals.run_id
                                  ELSE excluded.run_id END,
                    finished_at = excluded.finished_at""",
                (view, _iso(start), _iso(end), run_id, _iso(started_at), _iso(_now()), error),
            )

    def forget(self, view: str, start: datetime, reason: str = "its file is missing") -> None:
        """Forget that an interval was committed (its file is gone or was moved aside). The
        entry stays, as "missing" with `reason` as its error, so that a scheduled run, which
        starts from the first interval ever recorded, still goes back to it."""
        with self._connect() as db:
            db.execute(
                """UPDATE intervals SET state = 'missing', rows = NULL, fingerprint = NULL,
                    finished_at = ?, error = ?
                WHERE feature_view = ? AND interval_start = ?""",
                (_iso(_now()), reason, view, _iso(start)),
            )

    def entries(self, view: str | None = None, state: str | None = None) -> list[Entry]:
        """Entries, oldest interval first, optionally of one view and one state."""
        query, params = "SELECT * FROM intervals WHERE 1 = 1", []
        if view is not None:
            query, params = query + " AND feature_view = ?", [*params, view]
        if state is not None:
            query, params = query + " AND state = ?", [*params, state]
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY feature_view, interval_start", params).fetchall()
        return [
            Entry(r[0], _time(r[1]), _time(r[2]), r[3], r[4], r[5], r[6], r[7], _time(r[8]),
                  _time(r[9]), r[10])
            for r in rows
        ]  # fmt: skip

    def start_run(self, run_id: str, job: str, command: str) -> None:
        """Record that a run began; `finish_run` records how it ended."""
        with self._connect() as db:
            db.execute(
                "INSERT INTO runs (run_id, job, command, started_at) VALUES (?, ?, ?, ?)",
                (run_id, job, command, _iso(_now())),
            )

    def finish_run(self, run_id: str, outcome: str, intervals: int, failed: int, rows: int) -> None:
        """Record a run's outcome ("succeeded", "failed", "interrupted") and its counts."""
        with self._connect() as db:
            db.execute(
                """UPDATE runs SET finished_at = ?, outcome = ?, intervals = ?, failed = ?, rows = ?
                WHERE run_id = ?""",
                (_iso(_now()), outcome, intervals, failed, rows, run_id),
            )

    def runs(self, job: str | None = None, limit: int = 20) -> list[RunRecord]:
        """The most recent runs first."""
        query, params = "SELECT * FROM runs", []
        if job is not None:
            query, params = query + " WHERE job = ?", [job]
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY started_at DESC LIMIT ?", [*params, limit])
            return [
                RunRecord(r[0], r[1], r[2], _time(r[3]), _time(r[4]), r[5], r[6], r[7], r[8])
                for r in rows.fetchall()
            ]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """The connection, in one transaction. A damaged file raises a StoreError saying what
        to do."""
        try:
            if self._db is None:
                self._db = sqlite3.connect(self.path, timeout=60)
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = FULL")
            with self._db:
                yield self._db
        except sqlite3.DatabaseError as exc:
            if exc.sqlite_errorname not in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
                raise
            raise StoreError(
                f"The ledger {self.path} is damaged ({one_line(exc)}). It only indexes the "
                f"committed files, so deleting it is safe: delete it (with its -wal and -shm "
                f"files, if any) and the next run rebuilds it from the files, losing only the "
                f"run history (the records of failed intervals and of past runs)."
            ) from exc


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)
