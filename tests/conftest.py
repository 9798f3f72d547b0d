"""Shared fixtures: job files written on the fly, small event data, the mock API, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.services import require_service

if TYPE_CHECKING:
    from fixtures.mock_api import MockAPI

REPO = Path(__file__).resolve().parent.parent
START = datetime(2024, 10, 26)

JOB_HEADER = """\
from datetime import datetime, timedelta
import polars as pl
import pyarrow as pa
from engine import *

EVENTS = {events!r}
events = BatchSource("events", batch_config=FileConfig(uri=EVENTS, timestamp_field="timestamp"))
user = Entity(name="user", join_keys=[Field("user_id", String)])
"""


def make_events(days: int = 3, per_day: int = 48, users: int = 3) -> pa.Table:
    """Events every 24h/per_day from START: user_id, naive UTC timestamp, text, amount, quantity."""
    step = timedelta(days=1) / per_day
    n = days * per_day
    return pa.table(
        {
            "user_id": [f"u{i % users}" for i in range(n)],
            "timestamp": pa.array([START + i * step for i in range(n)], pa.timestamp("us")),
            "text": [f"event number {i} for user {i % users}" for i in range(n)],
            "amount": [round(i * 1.25, 2) for i in range(n)],
            "quantity": [i % 7 for i in range(n)],
        }
    )


@pytest.fixture
def events_file(tmp_path: Path) -> Path:
    """Three days of events, 48 a day, in one Parquet file."""
    path = tmp_path / "events.parquet"
    pq.write_table(make_events(), path)
    return path


@pytest.fixture
def write_job(tmp_path: Path, events_file: Path) -> Callable[[str], Path]:
    """Write a job file: the standard header (events source, user entity) plus `body`."""

    def write(body: str, name: str = "job") -> Path:
        path = tmp_path / f"{name}.py"
        header = JOB_HEADER.format(events=str(events_file))
        path.write_text(header + "\n" + textwrap.dedent(body))
        return path

    return write


@pytest.fixture(scope="session")
def mock_api() -> Iterator[MockAPI]:
    """The mock OpenAI-compatible API on loopback, no added latency."""
    from fixtures.mock_api import MockAPI

    with MockAPI() as api:
        yield api


@pytest.fixture
def openai_env(mock_api: MockAPI, monkeypatch: pytest.MonkeyPatch) -> MockAPI:
    """Point the openai SDK at the mock API and give the embeddings job its secret."""
    monkeypatch.setenv("OPENAI_BASE_URL", mock_api.base_url)
    monkeypatch.setenv("RIVULET_SECRET_OPENAI_EMBEDDINGS__OPEN_AI", "test-token")
    return mock_api


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m engine ARGS` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "engine", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd or REPO,
        timeout=300,
    )


ONLINE_REDIS = "redis://127.0.0.1:6379/5"  # a database of its own: each test empties it


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    """None for the default SQLite file beside the store, or the machine's Redis, emptied."""
    if request.param == "sqlite":
        return None

    def probe() -> str:
        import redis

        client = redis.Redis.from_url(ONLINE_REDIS, socket_connect_timeout=3)
        client.flushdb()
        client.close()
        return ONLINE_REDIS

    return require_service("Redis", ONLINE_REDIS, probe)
