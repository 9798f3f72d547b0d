"""Compare a view's output rows to its golden rows: missing rows, extra rows, changed cells."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.testing.rows import Row, cell_text, row_line

SHOWN = 10  # entries of each list a report shows before "… and N more"
WIDTH = 160  # characters of one value or row a report shows


@dataclass(frozen=True)
class CellChange:
    """One cell whose value differs, in the row matched by join keys and timestamp."""

    key: tuple[tuple[str, Any], ...]
    column: str
    golden: Any
    actual: Any

    def describe(self) -> str:
        keys = ", ".join(f"{name}={_short(value)}" for name, value in self.key)
        return f"{keys}: {self.column}: golden {_value_change(self.golden, self.actual)}"


@dataclass(frozen=True)
class ViewDiff:
    """How one feature view's output differs from its golden file `path`."""

    view: str
    path: Path
    golden_rows: int
    actual_rows: int
    missing: tuple[Row, ...] = ()  # in the golden file, not in the output
    extra: tuple[Row, ...] = ()  # in the output, not in the golden file
    changed: tuple[CellChange, ...] = ()
    columns_missing: tuple[str, ...] = ()  # golden columns the output lacks
    columns_extra: tuple[str, ...] = ()  # output columns the golden file lacks
    no_golden: bool = False  # the golden file does not exist

    @property
    def ok(self) -> bool:
        return not (
            self.no_golden
            or self.missing
            or self.extra
            or self.changed
            or self.columns_missing
            or self.columns_extra
        )

    def counts(self) -> str:
        """E.g. "2 changed cells, 1 missing row, 0 extra rows"."""
        parts = [
            _plural(len(self.changed), "changed cell"),
            _plural(len(self.missing), "missing row"),
            _plural(len(self.extra), "extra row"),
        ]
        if self.columns_missing or self.columns_extra:
            parts.insert(0, "different columns")
        return ", ".join(parts)

    def render(self) -> list[str]:
        """Report lines: the column, cell and row differences, each list capped."""
        lines = []
        if self.columns_missing:
            lines.append(f"columns in the golden file, not in the output: {self.columns_missing}")
        if self.columns_extra:
            lines.append(f"columns in the output, not in the golden file: {self.columns_extra}")
        sections: tuple[tuple[str, Sequence[Any], Callable[[Any], str]], ...] = (
            ("changed cells (keys: column: golden → actual)", self.changed, CellChange.describe),
            ("missing rows (in the golden file, not in the output)", self.missing, row_line),
            ("extra rows (in the output, not in the golden file)", self.extra, row_line),
        )
        for title, entries, show in sections:
            if entries:
                lines.append(f"{title}:")
                lines += [f"  {_cut(show(entry))}" for entry in entries[:SHOWN]]
                if len(entries) > SHOWN:
                    lines.append(f"  … and {len(entries) - SHOWN} more")
        return lines


def compare(
    view: str,
    path: Path,
    golden: tuple[list[str], list[Row]],
    actual: tuple[list[str], list[Row]],
    key_columns: Sequence[str],
) -> ViewDiff:
    """The differences of `actual` from `golden` (each: columns, rows).

    Identical rows cancel out (as multisets). Of the rest, a golden row and an output row
    with the same join keys and timestamp are paired and their differing cells reported;
    unpaired golden rows are missing, unpaired output rows extra. Cells are compared over
    the columns both sides have; differing column sets are reported on their own.
    """
    golden_columns, golden_rows = golden
    actual_columns, actual_rows = actual
    golden_columns = golden_columns or actual_columns  # an empty golden file has no columns
    common = [c for c in actual_columns if c in golden_columns]
    keys = [c for c in key_columns if c in common]

    def canon(row: Row) -> tuple[str, ...]:
        return tuple(cell_text(row.get(c)) for c in common)

    surplus = Counter(map(canon, golden_rows))
    surplus.subtract(map(canon, actual_rows))
    only_golden = _take(golden_rows, surplus, canon, sign=1)
    only_actual = _take(actual_rows, surplus, canon, sign=-1)

    unpaired: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, row in enumerate(only_actual):
        unpaired[tuple(cell_text(row.get(c)) for c in keys)].append(i)
    missing, changed, paired = [], [], set()
    for row in only_golden:
        partners = unpaired.get(tuple(cell_text(row.get(c)) for c in keys)) if keys else None
        if not partners:
            missing.append(row)
            continue
        paired.add(partners[0])
        partner = only_actual[partners.pop(0)]
        key = tuple((c, row.get(c)) for c in keys)
        changed += [
            CellChange(key, c, row.get(c), partner.get(c))
            for c in common
            if cell_text(row.get(c)) != cell_text(partner.get(c))
        ]
    extra = [row for i, row in enumerate(only_actual) if i not in paired]
    return ViewDiff(
        view,
        path,
        len(golden_rows),
        len(actual_rows),
        tuple(missing),
        tuple(extra),
        tuple(changed),
        tuple(c for c in golden_columns if c not in actual_columns),
        tuple(c for c in actual_columns if c not in golden_columns),
    )


def _take(rows: list[Row], surplus: Counter, canon: Any, sign: int) -> list[Row]:
    """The rows (in order) that `surplus` counts on their side: > 0 golden, < 0 output."""
    left = {k: abs(n) for k, n in surplus.items() if n * sign > 0}
    taken = []
    for row in rows:
        k = canon(row)
        if left.get(k, 0) > 0:
            left[k] -= 1
            taken.append(row)
    return taken


def _value_change(golden: Any, actual: Any) -> str:
    """ "A → B", or for lists of one length the elements that differ."""
    if isinstance(golden, list) and isinstance(actual, list) and len(golden) == len(actual):
        at = [i for i, (g, a) in enumerate(zip(golden, actual, strict=True)) if g != a]
        shown = "; ".join(f"[{i}] {_short(golden[i])} → {_short(actual[i])}" for i in at[:3])
        more = f"; … and {len(at) - 3} more elements" if len(at) > 3 else ""
        return f"{_short(golden)} → actual {_short(actual)} (elements {shown}{more})"
    return f"{_short(golden)} → actual {_short(actual)}"


def _short(value: Any) -> str:
    return _cut(cell_text(value), WIDTH // 2)


def _cut(text: str, width: int = WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
