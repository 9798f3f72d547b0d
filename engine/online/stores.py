"""Where online views keep their newest row per entity: a SQLite file, or Redis.

Both stores hold, per namespace (one feature view of one job), an entry per entity key:
its timestamp in microseconds and its features as JSON text. A write never replaces an
entry with an older one, and records the intervals it came from once its rows are in (in
the same transaction in SQLite, right after the rows' transaction in Redis), so the store
itself says what it holds: a crash between an interval's offline commit and its
online write, or a new or flushed Redis, shows as intervals it lacks (`published`).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from engine.errors import SettingsError, StoreError, one_line

Entry = tuple[str, int, str]  # entity key, timestamp in µs, features as JSON
ONLINE_FILE = "online.sqlite"
ENV = "RIVULET_ONLINE_STORE"


class OnlineStore(Protocol):
    """The interface both stores keep; `namespace` is "<job>:<view>"."""

    url: str

    def write(
        self, namespace: str, entries: Sequence[Entry], intervals: Sequence[tuple[str, str]]
    ) -> None:
        """Keep each entry unless its key has a newer one; record the intervals (start, run
        id) as published, in the same transaction."""

    def published(self, namespace: str) -> dict[str, str]:
        """The intervals written so far: run id by interval start (ISO-8601)."""

    def read(self, wanted: Sequence[tuple[str, str]]) -> list[tuple[int, str] | None]:
        """Each (namespace, key)'s (timestamp, features), or None, in one round trip."""

    def close(self) -> None: ...


def open_store(url: str | None, output: str | Path, serving: bool = False) -> OnlineStore:
    """The store at `url` (redis://HOST:PORT/DB), or by default the SQLite file in the
    offline store's `_rivulet/` folder. For `serving`, a SQLite file must be there already,
    and Redis reads give up after a second, unretried (a request answers 503 rather than
    wait). Raises SettingsError if it cannot be reached."""
    scheme = urlsplit(url).scheme if url else "sqlite"
    if scheme in ("redis", "rediss", "unix"):
        assert url is not None
        return RedisStore(url, serving)
    if scheme == "sqlite":
        path = (
            Path(url.removeprefix("sqlite://")) if url else Path(output) / "_rivulet" / ONLINE_FILE
        )
        if serving and not path.exists():
            raise SettingsError(
                f"There is no online store at {path}: backfill the job's online views to "
                f"--output {output} first, or pass the --output they were backfilled to, or "
                f"--online-store."
            )
        return SQLiteStore(path)
    raise SettingsError(
        f"--online-store '{url}' is neither a Redis URL such as redis://127.0.0.1:6379/0 nor "
        f"sqlite:///path/to/online.sqlite; leave it out for the SQLite file beside the "
        f"offline store."
    )


class SQLiteStore:
    """An online store in one SQLite file: nothing to start, one writer at a time."""

    def __init__(self, path: Path) -> None:
        self.url = f"sqlite://{path}"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, timeout=60, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.executescript(
                """CREATE TABLE IF NOT EXISTS entries (namespace TEXT, key TEXT, ts INTEGER,
                    features TEXT, PRIMARY KEY (namespace, key)) WITHOUT ROWID;
                CREATE TABLE IF NOT EXISTS published (namespace TEXT, interval_start TEXT,
                    run_id TEXT, PRIMARY KEY (namespace, interval_start)) WITHOUT ROWID;"""
            )
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"The online store {path} cannot be opened ({one_line(exc)}); delete it and "
                f"run `rivulet online load` to fill a new one from the offline store."
            ) from exc

    def write(
        self, namespace: str, entries: Sequence[Entry], intervals: Sequence[tuple[str, str]]
    ) -> None:
        with self._db:
            self._db.executemany(
                """INSERT INTO entries VALUES (?, ?, ?, ?) ON CONFLICT (namespace, key)
                DO UPDATE SET ts = excluded.ts, features = excluded.features
                WHERE excluded.ts >= entries.ts""",
                ((namespace, key, ts, features) for key, ts, features in entries),
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO published VALUES (?, ?, ?)",
                ((namespace, start, run_id) for start, run_id in intervals),
            )

    def published(self, namespace: str) -> dict[str, str]:
        rows = self._db.execute(
            "SELECT interval_start, run_id FROM published WHERE namespace = ?", (namespace,)
        )
        return dict(rows.fetchall())

    def read(self, wanted: Sequence[tuple[str, str]]) -> list[tuple[int, str] | None]:
        if not wanted:
            return []
        pairs = ", ".join(["(?, ?)"] * len(wanted))
        rows = self._db.execute(
            f"SELECT namespace, key, ts, features FROM entries "
            f"WHERE (namespace, key) IN (VALUES {pairs})",
            [part for pair in wanted for part in pair],
        )
        found = {(space, key): (ts, features) for space, key, ts, features in rows.fetchall()}
        return [found.get(pair) for pair in wanted]

    def close(self) -> None:
        self._db.close()


# KEYS: entity keys; ARGV: (timestamp, features) per key. Keeps the newer of each pair.
_NEWEST = """
for i, key in ipairs(KEYS) do
    local ts = ARGV[2 * i - 1]
    local held = redis.call('HGET', key, 'ts')
    if not held or tonumber(held) <= tonumber(ts) then
        redis.call('HSET', key, 'ts', ts, 'f', ARGV[2 * i])
    end
end
"""
_CHUNK = 500  # keys per script call


class RedisStore:
    """An online store in Redis: an interval's entries go in one transaction (a pipeline of
    scripts that keep the newer entry), a request's keys are read in one round trip."""

    def __init__(self, url: str, serving: bool = False) -> None:
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:
            raise SettingsError(
                "--online-store redis://... needs the Redis client: pip install 'rivulet[redis]'."
            ) from None
        self.url = url
        self._errors = (redis.RedisError, OSError)
        try:
            limits = {"socket_timeout": 1.0, "retry": Retry(NoBackoff(), 0)} if serving else {}
            self._client = redis.Redis.from_url(
                url, **{"socket_connect_timeout": 3, "socket_timeout": 10, **limits}
            )
            self._client.ping()
        except (*self._errors, ValueError) as exc:
            raise SettingsError(
                f"The online store at {url} does not answer ({type(exc).__name__}: "
                f"{one_line(exc)}); start Redis there, or leave out --online-store (and "
                f"{ENV}) for the SQLite file beside the offline store."
            ) from None
        self._newest = self._client.register_script(_NEWEST)

    def write(
        self, namespace: str, entries: Sequence[Entry], intervals: Sequence[tuple[str, str]]
    ) -> None:
        with self._reaching():
            pipe = self._client.pipeline(transaction=True)
            for at in range(0, len(entries), _CHUNK):
                chunk = entries[at : at + _CHUNK]
                args = [value for _, ts, features in chunk for value in (ts, features)]
                self._newest(keys=[_key(namespace, key) for key, _, _ in chunk], args=args,
                             client=pipe)  # fmt: skip
            pipe.execute()  # raises if any command failed: EXEC does not roll the rest back
            if intervals:  # so the intervals are recorded only once every row is in
                self._client.hset(_key(namespace, "published"), mapping=dict(intervals))

    def published(self, namespace: str) -> dict[str, str]:
        with self._reaching():
            held = self._client.hgetall(_key(namespace, "published"))
        return {start.decode(): run.decode() for start, run in held.items()}

    def read(self, wanted: Sequence[tuple[str, str]]) -> list[tuple[int, str] | None]:
        with self._reaching():
            pipe = self._client.pipeline(transaction=False)
            for namespace, key in wanted:
                pipe.hmget(_key(namespace, key), "ts", "f")
            answers = pipe.execute()
        return [None if ts is None else (int(ts), features.decode()) for ts, features in answers]

    def close(self) -> None:
        self._client.close()

    @contextlib.contextmanager
    def _reaching(self) -> Iterator[None]:
        """Turns a lost Redis into a StoreError naming it."""
        try:
            yield
        except self._errors as exc:
            raise StoreError(
                f"The online store at {self.url} failed ({type(exc).__name__}: {one_line(exc)})."
            ) from None


def _key(namespace: str, key: str) -> str:
    """Entity keys are JSON lists ("[...]"), so they never meet "published"."""
    return f"rivulet:{namespace}:{key}"
