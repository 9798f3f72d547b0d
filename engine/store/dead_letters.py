"""Rows a view skipped or nulled under its error policy, kept so nothing is lost silently."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from engine.define.feature_views import BatchFeatureView
from engine.define.types import Timestamp
from engine.errors import RivuletError
from engine.store.parquet import DATA_FILE, PartitionWriter, partition_dir

ERRORS_FOLDER = "_errors"


class DeadLetters:
    """Collects failed rows of one interval and writes them to
    `<output>/_errors/<view>/interval_start=.../data.parquet`: the row's join keys and
    timestamp, the interval, the attempts made and the error text (secrets redacted)."""

    def __init__(
        self, view: BatchFeatureView, start: datetime, end: datetime, redact: Callable[[str], str]
    ) -> None:
        self._view = view
        self._start = start
        self._end = end
        self._redact = redact
        self.rows: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any], attempts: int, error: RivuletError) -> None:
        record = {key.name: row.get(key.name) for key in self._view.join_keys}
        record[self._view.timestamp_field] = row.get(
            self._view.timestamp_field, row.get(self._view.window_field)
        )
        record.update(
            interval_start=self._start,
            interval_end=self._end,
            attempts=attempts,
            error=self._redact(str(error)),
        )
        self.rows.append(record)

    def schema(self) -> pa.Schema:
        fields = [pa.field(k.name, k.dtype.to_arrow()) for k in self._view.join_keys]
        fields.append(pa.field(self._view.timestamp_field, Timestamp.to_arrow()))
        fields += [
            pa.field("interval_start", Timestamp.to_arrow()),
            pa.field("interval_end", Timestamp.to_arrow()),
            pa.field("attempts", pa.int32()),
            pa.field("error", pa.string()),
        ]
        return pa.schema(fields)

    def commit(self, output: str | Path, metadata: dict[str, str]) -> Path | None:
        """Write the collected rows atomically; with none, remove an earlier run's file, so
        the dead letters always describe the committed data beside them."""
        folder = partition_dir(Path(output) / ERRORS_FOLDER, self._view.name, self._start)
        if not self.rows:
            (folder / DATA_FILE).unlink(missing_ok=True)
            return None
        schema = self.schema()
        with PartitionWriter(folder, schema, metadata) as writer:
            writer.write(pa.Table.from_pylist(self.rows, schema=schema))
            return writer.commit()
