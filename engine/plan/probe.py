"""Probe each view's source schema once before any work, so a source problem stops the run
instead of failing every interval."""

from __future__ import annotations

from collections.abc import Iterable

from engine.arrow import duckdb_cursor
from engine.define.feature_views import BatchFeatureView, may_name
from engine.define.sources import PythonConfig
from engine.errors import SourceError, SourceSchemaError
from engine.read.sources import source_relation, window_column_type


def probe_sources(views: Iterable[BatchFeatureView]) -> None:
    """Raise one SourceSchemaError, a paragraph per view, if any view's source matches no file,
    lacks its window column or has it as other than a timestamp, or lacks a join key the
    transform does not name (so cannot return). DuckDB only binds each source's query: no
    row is read. PythonConfig sources are left out, since describing them means calling
    the loader."""
    paragraphs = [" ".join(problems) for view in views if (problems := _problems(view))]
    if paragraphs:
        raise SourceSchemaError("\n\n".join(paragraphs))


def _problems(view: BatchFeatureView) -> list[str]:
    problems, columns = [], []
    for source in view.sources:
        if isinstance(source.batch_config, PythonConfig):
            return problems  # its columns are not known: the join keys cannot be checked
        with duckdb_cursor() as con:
            try:
                _, _, relation = source_relation(con, view, source)
            except SourceError as exc:
                return [*problems, exc.message]  # its columns are not known
            names, types = relation.columns, [str(t) for t in relation.types]
        if not source.is_unfiltered:
            try:
                window_column_type(view, source, names, types)
            except SourceError as exc:
                problems.append(exc.message)
        columns += names
    names = " or ".join(f"'{source.name}'" for source in view.sources)
    for entity in view.entities:
        for key in entity.join_keys:
            if key.name not in columns and not may_name(view.function, key.name):
                problems.append(
                    f"Feature view '{view.name}': source {names} has no column "
                    f"'{key.name}' for the join key of entity '{entity.name}', and the transform "
                    f"does not name it, so cannot return it; its columns are "
                    f"{', '.join(columns)}. Rename the join key or the column (in a "
                    f"DuckDBConfig query, for example)."
                )
    return problems
