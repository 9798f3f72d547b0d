"""A damaged store: unreadable committed files are moved aside and recomputed, a corrupt ledger
is one paragraph; and row groups stay large whatever the micro-batch size."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import engine
from engine.errors import StoreError
from engine.materialize import plan
from engine.store.ledger import Ledger
from engine.store.parquet import ROW_GROUP_ROWS, PartitionWriter
from tests.conftest import make_events, run_cli

JOB = """
import os

@batch_feature_view(name="view", mode="python", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26), micro_batch_size={batch},
    features=[Attribute("score", Float64)])
def view(row, context):
    with open(os.environ["CALL_LOG"], "a") as log:
        log.write(f"{{context.start_time:%Y-%m-%d}}\\n")
    if os.environ.get("FAIL_DAY") == f"{{context.start_time:%Y-%m-%d}}":
        raise ValueError("the API is down")
    return {{"score": row["amount"] * 2}}
"""
D26, D29 = datetime(2024, 10, 26, tzinfo=UTC), datetime(2024, 10, 29, tzinfo=UTC)
RANGE = ("--start", "2024-10-26", "--end", "2024-10-29")


def expected(events: pa.Table, start: datetime = D26, end: datetime = D29) -> list[dict]:
    """The rows 'view' should hold for `events` in [start, end), in source order."""
    return [
        {"user_id": e["user_id"], "timestamp": ts, "score": e["amount"] * 2}
        for e in events.to_pylist()
        if start <= (ts := e["timestamp"].replace(tzinfo=UTC)) < end
    ]


def calls(log: Path) -> Counter[str]:
    return Counter(log.read_text().split()) if log.exists() else Counter()


def flat(text: str) -> str:
    """Output without whitespace, so a path the terminal wrapped is found whole."""
    return "".join(text.split())


@pytest.fixture
def store(write_job, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(job, output) after a backfill of three days, one file each; calls go to tmp/calls.log."""
    monkeypatch.setenv("CALL_LOG", str(tmp_path / "calls.log"))
    job = write_job(JOB.format(batch=4))
    summary = engine.backfill(job, D26, D29, output=tmp_path / "store")
    assert summary.ok and sum(calls(tmp_path / "calls.log").values()) == 144
    return job, tmp_path / "store"


def truncate(store: Path, day: str) -> Path:
    """Cut the committed file of `day` in half, as a full disk or a bad copy would."""
    path = store / "view" / f"interval_start={day}T00-00-00Z" / "data.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


EVERY_DAY = {"2024-10-26": 48, "2024-10-27": 48, "2024-10-28": 48}


@pytest.mark.parametrize(
    ("command", "day", "recomputed"),
    [
        (("backfill", *RANGE), "2024-10-27", {"2024-10-27": 48}),
        (("backfill", *RANGE, "--overwrite"), "2024-10-27", EVERY_DAY),
        # The first interval: a scheduled run still goes back to it.
        (("run", "--until", "2024-10-29"), "2024-10-26", {"2024-10-26": 48}),
    ],
)
def test_a_run_moves_an_unreadable_file_aside_and_recomputes_it(
    store, tmp_path, command, day, recomputed
):
    job, out = store
    bad = truncate(out, day)
    damaged = bad.read_bytes()
    log = tmp_path / "rerun.log"

    result = run_cli(command[0], job, *command[1:], "--output", out, env={"CALL_LOG": str(log)})

    assert result.returncode == 0, result.stderr
    [aside] = (out / "_rivulet" / "quarantine" / "view" / bad.parent.name).iterdir()
    assert aside.name.startswith("data.parquet.") and aside.read_bytes() == damaged
    note = flat(result.stderr)
    assert f"moved{bad},whichcannotberead(Parquetmagicbytesnotfound" in note
    assert f"to{aside};itsintervalisnowmissing" in note
    assert calls(log) == recomputed
    assert sorted(p.parent.name for p in out.glob("*/*/*.parquet")) == [
        f"interval_start={d}T00-00-00Z" for d in ("2024-10-26", "2024-10-27", "2024-10-28")
    ]  # a glob over the store sees the recomputed files, not the damaged one
    assert engine.read_features(job, "view", output=out).to_pylist() == expected(make_events())
    entries = Ledger(out).entries("view")
    assert [(e.interval_start.day, e.state, e.rows) for e in entries] == [
        (26, "committed", 48),
        (27, "committed", 48),
        (28, "committed", 48),
    ]


def test_an_interval_moved_aside_whose_recompute_fails_is_failed(store, tmp_path):
    job, out = store
    bad = truncate(out, "2024-10-27")
    env = {"CALL_LOG": str(tmp_path / "rerun.log"), "FAIL_DAY": "2024-10-27"}

    result = run_cli("backfill", job, *RANGE, "--output", out, env=env)

    assert result.returncode == 1, result.stderr
    assert "Failed view [2024-10-27 00:00, 2024-10-28 00:00)" in result.stderr
    assert not bad.exists() and len(list(out.glob("_rivulet/quarantine/view/*/*"))) == 1
    planned, _ = plan(job, D26, D29, output=out)
    assert [(p.task.start.day, p.state, p.compute) for p in planned] == [
        (26, "committed", False),
        (27, "failed", True),
        (28, "committed", False),
    ]


def test_plan_shows_an_unreadable_interval_and_changes_nothing(store):
    job, out = store
    bad = truncate(out, "2024-10-27")
    damaged, entries = bad.read_bytes(), Ledger(out).entries()

    planned, _ = plan(job, D26, D29, output=out)
    assert [(p.task.start.day, p.state, p.compute) for p in planned] == [
        (26, "committed", False),
        (27, "unreadable", True),
        (28, "committed", False),
    ]
    result = run_cli("plan", job, *RANGE, "--output", out, env={"COLUMNS": "200"})

    assert result.returncode == 0, result.stderr
    [row] = [line for line in result.stdout.splitlines() if "2024-10-27 00:00," in line]
    assert "unreadable" in row and "compute" in row
    assert "2 committed, 1 unreadable" in result.stdout
    note = flat(result.stderr)
    assert f"Note:{bad}cannotbereadasParquet(Parquetmagicbytesnotfound" in note
    assert f"arunorbackfillmovesitto{out / '_rivulet' / 'quarantine'}" in note
    assert bad.read_bytes() == damaged and Ledger(out).entries() == entries
    assert not (out / "_rivulet" / "quarantine").exists()


def test_read_names_an_unreadable_file_in_range_and_reads_around_it(store):
    job, out = store
    bad = truncate(out, "2024-10-27")

    with pytest.raises(StoreError) as error:
        engine.read_features(job, "view", output=out)
    message = str(error.value)
    assert message.startswith(
        f"Feature view 'view': {bad} cannot be read as Parquet (Parquet magic bytes not found"
    )
    quarantine = out / "_rivulet" / "quarantine"
    assert f"moves an unreadable file aside to {quarantine} and computes its interval" in message
    after = datetime(2024, 10, 28, tzinfo=UTC)  # the damaged interval is out of range
    rows = engine.read_features(job, "view", output=out, start=after)
    assert rows.to_pylist() == expected(make_events(), start=after)

    result = run_cli("read", job, "view", "--output", out, "--format", "csv")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"Store error: {message}\n"
    assert bad.exists() and not quarantine.exists()  # reading moves nothing


def test_a_corrupt_ledger_is_one_paragraph_and_deleting_it_is_safe(store, tmp_path):
    job, out = store
    ledger = out / "_rivulet" / "ledger.sqlite"
    ledger.write_bytes(b"not a database, just garbage\n" * 100)
    log = tmp_path / "rerun.log"

    for args in (("backfill", job, *RANGE), ("plan", job, *RANGE), ("status", job)):
        result = run_cli(*args, "--output", out, env={"CALL_LOG": str(log)})
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(
            f"Store error: The ledger {ledger} is damaged (file is not a database). "
        )
        assert "deleting it is safe" in result.stderr and "only the run history" in result.stderr
        assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert calls(log) == Counter()

    for path in out.glob("_rivulet/ledger.sqlite*"):
        path.unlink()
    rebuilt = run_cli("backfill", job, *RANGE, "--output", out, env={"CALL_LOG": str(log)})
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stderr.count("committed without a ledger entry") == 3
    assert calls(log) == Counter()  # nothing recomputed
    assert len(Ledger(out).entries(state="committed")) == 3


def test_micro_batches_of_one_row_make_one_row_group_per_file(
    write_job, events_file, tmp_path, monkeypatch
):
    events = make_events(days=2, per_day=1500)
    pq.write_table(events, events_file)
    job, out = write_job(JOB.format(batch=1)), tmp_path / "store"
    monkeypatch.setenv("CALL_LOG", str(tmp_path / "calls.log"))
    summary = engine.backfill(job, D26, D26 + timedelta(days=2), output=out)
    assert summary.ok and summary.rows_by_view == {"view": 3000}

    files = sorted(out.glob("view/*/data.parquet"))
    assert [pq.ParquetFile(f).num_row_groups for f in files] == [1, 1]
    query = "SELECT * FROM read_parquet($files, hive_partitioning = false)"  # in file order
    with duckdb.connect() as con:
        read = con.sql(query, params={"files": [str(f) for f in files]}).to_arrow_table()
    assert read.to_pylist() == expected(events, end=D26 + timedelta(days=2))


def test_partition_writer_coalesces_tables_into_row_groups(tmp_path):
    schema = pa.schema([("key", pa.string()), ("value", pa.int64())])
    n = 2 * ROW_GROUP_ROWS + 18_928
    with PartitionWriter(tmp_path, schema, {"rivulet.run_id": "r1"}, filtered_on=["key"]) as w:
        for i in range(n):
            w.write(pa.table({"key": [f"k{i % 7}"], "value": [i]}, schema=schema))
        path = w.commit()

    metadata = pq.read_metadata(path)
    sizes = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
    assert sizes == [ROW_GROUP_ROWS, ROW_GROUP_ROWS, 18_928] and w.rows == n
    assert metadata.metadata[b"rivulet.run_id"] == b"r1"
    stats = [metadata.row_group(0).column(c).is_stats_set for c in range(2)]
    assert stats == [True, False]  # only the column readers filter on
    values = duckdb.sql(f"SELECT value FROM read_parquet('{path}')").fetchnumpy()["value"]
    assert values.tolist() == list(range(n))  # in the order written


def test_partition_writer_keeps_row_groups_within_the_byte_budget(tmp_path):
    mib = 1024 * 1024
    schema = pa.schema([("blob", pa.binary(mib)), ("i", pa.int8())])
    with PartitionWriter(tmp_path, schema, {}) as writer:
        for i in range(100):  # 1 MiB and 1 byte a row: 31 rows of them fill the 32 MiB budget
            writer.write(pa.table({"blob": [bytes([i]) * mib], "i": [i]}, schema=schema))
        path = writer.commit()

    metadata = pq.read_metadata(path)
    sizes = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
    assert sizes == [31, 31, 31, 7]
    assert pq.read_table(path, columns=["i"]).column("i").to_pylist() == list(range(100))
