"""Atomic Parquet output: one file per feature view and interval, renamed into place."""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.parquet as pq

from engine.define.schedule import as_utc
from engine.errors import StoreError, one_line

DATA_FILE = "data.parquet"
_FOLDER = "interval_start=%Y-%m-%dT%H-%M-%SZ"
_DICTIONARY_BYTES = 64 * 1024  # past this, a column chunk's dictionary falls back to plain
# A row group holds at most this many rows or (about) bytes of Arrow data, whichever comes first.
ROW_GROUP_ROWS = 64 * 1024
ROW_GROUP_BYTES = 32 * 1024 * 1024
_MERGE_EVERY = 64  # buffered small tables are merged in runs of this many (each costs ~3 KB)


def partition_dir(output: str | Path, view: str, start: datetime) -> Path:
    """`<output>/<view>/interval_start=<YYYY-MM-DDTHH-MM-SSZ>`, a hive-style folder per interval."""
    return Path(output) / view / f"{start:{_FOLDER}}"


class PartitionWriter:
    """Streams tables into a temporary file that only `commit()` renames to `data.parquet`.

    The temporary name does not end in `.parquet`, so readers globbing `*.parquet` never see
    a partial file, and it is this writer's own, so two attempts at one interval never write
    into one file. Leaving the `with` block without `commit()` removes the temporary file.
    A commit never replaces a file its own run committed: a late attempt of an interval
    (a Ray actor presumed dead that was not) raises AlreadyCommitted instead of replacing
    the attempt the ledger recorded.
    Tables are buffered and written as row groups of `ROW_GROUP_ROWS` rows or
    `ROW_GROUP_BYTES` bytes, whichever is reached first, however small the tables are: the
    buffer bounds memory, and a file keeps few row groups (each costs footer metadata and a
    seek for every reader). Only `filtered_on` (the columns readers select rows by) get
    min/max statistics, and a column's dictionary encoding gives up early when its values are
    mostly distinct: both cost more than the compression itself on long, distinct strings.

    Example:
        with PartitionWriter(folder, schema, {"rivulet.run_id": run_id}) as writer:
            writer.write(table)
            writer.commit()
    """

    def __init__(
        self,
        folder: Path,
        schema: pa.Schema,
        metadata: dict[str, str],
        filtered_on: Sequence[str] = (),
    ) -> None:
        self.folder = folder
        self.rows = 0
        self._schema = schema.with_metadata(metadata)
        self._statistics = list(filtered_on) or False
        self._run_id = metadata.get("rivulet.run_id", "")
        attempt = f"{self._run_id or 'run'}.{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._temporary = folder / f".{DATA_FILE}.{attempt}.tmp"
        self._writer: pq.ParquetWriter | None = None
        self._buffer: list[pa.Table] = []
        self._merged = 0  # the tables at the front of the buffer already merged
        self._buffered_rows = 0
        self._buffered_bytes = 0

    def __enter__(self) -> PartitionWriter:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(
            self._temporary,
            self._schema,
            compression="zstd",
            write_statistics=self._statistics,
            dictionary_pagesize_limit=_DICTIONARY_BYTES,
        )
        return self

    def write(self, table: pa.Table) -> None:
        """Buffer `table`, writing each row group as soon as the buffer fills one."""
        assert self._writer is not None, "use PartitionWriter in a with block"
        self._buffer.append(table.replace_schema_metadata(self._schema.metadata))
        self._buffered_rows += table.num_rows
        self._buffered_bytes += table.nbytes
        self.rows += table.num_rows
        if len(self._buffer) - self._merged >= _MERGE_EVERY:
            self._buffer[self._merged :] = [
                pa.concat_tables(self._buffer[self._merged :]).combine_chunks()
            ]
            self._merged += 1
        while self._buffered_rows >= ROW_GROUP_ROWS or self._buffered_bytes >= ROW_GROUP_BYTES:
            self._write_row_group()

    def _write_row_group(self) -> None:
        """Write the buffer's first row group: at most ROW_GROUP_ROWS rows and, at its average
        row size, ROW_GROUP_BYTES bytes (at least one row); keep the rest buffered."""
        assert self._writer is not None
        buffered = pa.concat_tables(self._buffer)
        row_bytes = max(buffered.nbytes // buffered.num_rows, 1)
        size = min(buffered.num_rows, ROW_GROUP_ROWS, max(ROW_GROUP_BYTES // row_bytes, 1))
        self._writer.write_table(buffered.slice(0, size), row_group_size=size)
        rest = buffered.slice(size)
        self._buffer = [rest] if rest.num_rows else []
        self._merged = len(self._buffer)
        self._buffered_rows, self._buffered_bytes = rest.num_rows, rest.nbytes

    def commit(self) -> Path:
        """Write what is buffered, close the file and rename it into place atomically; return
        its final path."""
        assert self._writer is not None, "use PartitionWriter in a with block"
        while self._buffered_rows:
            self._write_row_group()
        self._writer.close()
        self._writer = None
        with open(self._temporary, "rb+") as written:
            os.fsync(written.fileno())  # the data is on disk before its name says committed
        final = self.folder / DATA_FILE
        folder = os.open(self.folder, os.O_RDONLY)
        try:
            # One commit at a time per interval. A filesystem that cannot lock a folder
            # (some network mounts) still gets the check, short of two commits in one instant.
            with contextlib.suppress(OSError):
                fcntl.flock(folder, fcntl.LOCK_EX)
            committed = _committed_by(final)
            if self._run_id and committed is not None and committed[0] == self._run_id:
                raise AlreadyCommitted(final, committed[1])
            os.replace(self._temporary, final)
            os.fsync(folder)  # and so is the rename
        finally:
            os.close(folder)  # and the lock with it
        return final

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._temporary.unlink(missing_ok=True)


@dataclass(frozen=True)
class CommittedFile:
    """One committed interval file of a feature view, as its own metadata describes it."""

    path: Path
    start: datetime
    end: datetime
    rows: int
    fingerprint: str
    run_id: str


@dataclass(frozen=True)
class UnreadableFile:
    """A `data.parquet` whose footer cannot be read: truncated, overwritten, not Parquet."""

    path: Path
    start: datetime | None  # the interval its folder names, if the name parses
    error: str

    def __str__(self) -> str:
        return f"{self.path} cannot be read as Parquet ({self.error})"


class AlreadyCommitted(Exception):
    """Another attempt of this run committed the interval first: its file is `path`."""

    def __init__(self, path: Path, rows: int) -> None:
        super().__init__(f"{path} was already committed by another attempt of this run")
        self.path, self.rows = path, rows


def _committed_by(path: Path) -> tuple[str, int] | None:
    """(run id, rows) of the Parquet file at `path`, or None if there is none to read."""
    try:
        footer = pq.read_metadata(path)
    except (OSError, pa.ArrowException):
        return None
    run_id = (footer.metadata or {}).get(b"rivulet.run_id", b"").decode()
    return run_id, footer.num_rows


def _refuse(file: UnreadableFile) -> None:
    """What `committed_files` does by default with an unreadable file: an error naming it."""
    raise StoreError(
        f"{file}. A run or backfill moves such a file aside and computes its interval again."
    )


def committed_files(
    output: str | Path, view: str, on_unreadable: Callable[[UnreadableFile], None] = _refuse
) -> list[CommittedFile]:
    """The `data.parquet` files of `view` under `output`, oldest interval first. A file whose
    metadata cannot be read is left out and passed to `on_unreadable` (which by default
    raises a StoreError naming it), so each caller decides what to do with it.

    Example:
        [first, *_] = committed_files("offline_store", "text_embedding")
    """
    found = []
    for path in sorted((Path(output) / view).glob(f"interval_start=*/{DATA_FILE}")):
        try:
            metadata = pq.read_metadata(path)
        except (pa.ArrowException, OSError) as exc:
            on_unreadable(UnreadableFile(path, _folder_start(path), one_line(exc).rstrip(".")))
            continue
        values = {k.decode(): v.decode() for k, v in (metadata.metadata or {}).items()}
        if "rivulet.interval_start" not in values or "rivulet.interval_end" not in values:
            raise StoreError(
                f"{path} is not a file Rivulet wrote (it has no rivulet.interval_start "
                f"metadata); move it out of the offline store."
            )
        found.append(
            CommittedFile(
                path,
                as_utc(datetime.fromisoformat(values["rivulet.interval_start"])),
                as_utc(datetime.fromisoformat(values["rivulet.interval_end"])),
                metadata.num_rows,
                values.get("rivulet.fingerprint", ""),
                values.get("rivulet.run_id", ""),
            )
        )
    return sorted(found, key=lambda f: f.start)


def _folder_start(path: Path) -> datetime | None:
    """The interval start a partition folder's name gives; None if the name does not parse."""
    try:
        return datetime.strptime(path.parent.name, _FOLDER).replace(tzinfo=UTC)
    except ValueError:
        return None
