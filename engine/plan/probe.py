"""Probe each view's source schema once before any work, so a source problem stops the run
instead of failing every interval."""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Iterable

from engine.define.feature_views import BatchFeatureView
from engine.define.sources import PythonConfig
from engine.errors import SourceError, SourceSchemaError
from engine.read.sources import source_cursor, source_relation, window_column_type


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
    config = view.source.batch_config
    if isinstance(config, PythonConfig):
        return []
    with source_cursor() as con:
        try:
            _, _, relation = source_relation(con, view, config)
        except SourceError as exc:
            return [exc.message]
        columns, types = relation.columns, [str(t) for t in relation.types]
    problems = []
    try:
        window_column_type(view, columns, types)
    except SourceError as exc:
        problems.append(exc.message)
    for entity in view.entities:
        for key in entity.join_keys:
            if key.name not in columns and not _may_return(view, key.name):
                problems.append(
                    f"Feature view '{view.name}': source '{view.source.name}' has no column "
                    f"'{key.name}' for the join key of entity '{entity.name}', and the transform "
                    f"does not name it, so cannot return it; its columns are "
                    f"{', '.join(columns)}. Rename the join key or the column (in a "
                    f"DuckDBConfig query, for example)."
                )
    return problems


def _may_return(view: BatchFeatureView, column: str) -> bool:
    """Whether the transform's body names `column`, as a string or a keyword argument: the
    only ways its output can hold a column the source lacks (`{"key": ...}` in python mode,
    `.alias("key")` or `with_columns(key=...)` in frame modes). True when its code cannot be
    read, since then nothing is known."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(view.function)))
    except (OSError, TypeError, SyntaxError):
        return True
    functions = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
    definition = next((node for node in ast.walk(tree) if isinstance(node, functions)), None)
    if definition is None:
        return True
    body = definition.body if isinstance(definition.body, list) else [definition.body]
    return any(
        (isinstance(node, ast.Constant) and node.value == column)
        or (isinstance(node, ast.keyword) and node.arg == column)
        for statement in body
        for node in ast.walk(statement)
    )
