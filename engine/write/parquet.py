"""Atomic Parquet output: one file per feature view and interval, renamed into place."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.parquet as pq

from engine.define.schedule import as_utc
from engine.errors import SettingsError

DATA_FILE = "data.parquet"
_DICTIONARY_BYTES = 64 * 1024  # past this, a column chunk's dictionary falls back to plain


def partition_dir(output: str | Path, view: str, start: datetime) -> Path:
    """`<output>/<view>/interval_start=<YYYY-MM-DDTHH-MM-SSZ>`, a hive-style folder per interval."""
    return Path(output) / view / f"interval_start={start:%Y-%m-%dT%H-%M-%SZ}"


class PartitionWriter:
    """Streams tables into a temporary file that only `commit()` renames to `data.parquet`.

    The temporary name does not end in `.parquet`, so readers globbing `*.parquet` never see
    a partial file. Leaving the `with` block without `commit()` removes the temporary file.
    Only `filtered_on` (the columns readers select rows by) get min/max statistics, and a
    column's dictionary encoding gives up early when its values are mostly distinct: both
    cost more than the compression itself on long, distinct strings.

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
        self._temporary = folder / f".{DATA_FILE}.{metadata.get('rivulet.run_id', 'run')}.tmp"
        self._writer: pq.ParquetWriter | None = None

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
        assert self._writer is not None, "use PartitionWriter in a with block"
        self._writer.write_table(table.replace_schema_metadata(self._schema.metadata))
        self.rows += table.num_rows

    def commit(self) -> Path:
        """Close the file and rename it into place atomically; return its final path."""
        assert self._writer is not None, "use PartitionWriter in a with block"
        self._writer.close()
        self._writer = None
        with open(self._temporary, "rb+") as written:
            os.fsync(written.fileno())  # the data is on disk before its name says committed
        final = self.folder / DATA_FILE
        os.replace(self._temporary, final)
        folder = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(folder)  # and so is the rename
        finally:
            os.close(folder)
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


def committed_files(output: str | Path, view: str) -> list[CommittedFile]:
    """The `data.parquet` files of `view` under `output`, oldest interval first.

    Example:
        [first, *_] = committed_files("offline_store", "text_embedding")
    """
    found = []
    for path in (Path(output) / view).glob(f"interval_start=*/{DATA_FILE}"):
        metadata = pq.read_metadata(path)
        values = {k.decode(): v.decode() for k, v in (metadata.metadata or {}).items()}
        if "rivulet.interval_start" not in values or "rivulet.interval_end" not in values:
            raise SettingsError(
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
