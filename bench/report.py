"""Print each scenario's table, write `bench/results/results.json` and `results.png`."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import ROOT, Scenario

RESULTS = ROOT / "bench" / "results"
VERDICT = {True: "MET", False: "NOT MET", None: "no target"}


def _figure(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.3g}"


def table(scenario: Scenario) -> str:
    """The scenario as a plain-text table with its target and verdict."""
    width = max(len(row.contender) for row in scenario.rows)
    lines = [
        "",
        scenario.title,
        f"{'contender':<{width}}  {scenario.unit:>11}  {'ratio':>7}  detail",
    ]
    for row in scenario.rows:
        lines.append(
            f"{row.contender:<{width}}  {_figure(row.median):>11}  {row.ratio:>6.2f}x  {row.detail}"
        )
    lines.append(f"target: {scenario.target} -> {VERDICT[scenario.met]}")
    lines += [f"note: {note}" for note in scenario.notes]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """Where and when: enough to tell runs apart, not to compare absolute figures."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "commit": commit or None,
    }


def write(scenarios: list[Scenario]) -> tuple[Path, Path]:
    """Merge `scenarios` into results.json (a rerun of one scenario keeps the others) and
    render every scenario in it to results.png."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "results.json"
    saved = json.loads(path.read_text())["scenarios"] if path.exists() else {}
    where = machine()
    for scenario in scenarios:
        saved[scenario.name] = {**dataclasses.asdict(scenario), **where}
    ordered = dict(sorted(saved.items(), key=lambda item: _number(item[0])))
    path.write_text(json.dumps({"scenarios": ordered}, indent=2) + "\n")
    return path, chart(list(saved.values()))


def _number(name: str) -> int:
    """A scenario's number, from its name ("s10_shared_limit": 10), to order them by."""
    return int(name[1:].split("_")[0])


def chart(scenarios: list[dict[str, Any]]) -> Path:
    """One subplot per scenario: horizontal bars of each contender's ratio to the reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(scenarios, key=lambda s: _number(s["name"]))
    figure, axes = plt.subplots(
        len(ordered), 1, figsize=(10, 2.2 + 0.9 * sum(len(s["rows"]) for s in ordered) / 2),
        squeeze=False,
    )  # fmt: skip
    for ax, scenario in zip(axes[:, 0], ordered, strict=True):
        names = [row["contender"] for row in scenario["rows"]][::-1]
        ratios = [row["ratio"] for row in scenario["rows"]][::-1]
        colors = ["#888888" if r == 1.0 else "#3b75af" for r in ratios]
        ax.barh(names, ratios, color=colors)
        ax.axvline(1.0, color="black", linewidth=0.8)
        for y, ratio in enumerate(ratios):
            ax.text(ratio, y, f" {ratio:.2f}x", va="center", fontsize=7)
        better = "higher" if scenario["higher_is_better"] else "lower"
        verdict = VERDICT[scenario["met"]]
        ax.set_title(
            f"{scenario['title']}  [{verdict}]\nratio of {scenario['unit']} to the reference "
            f"(grey), {better} is better", fontsize=8, loc="left",
        )  # fmt: skip
        ax.tick_params(labelsize=7)
        ax.set_xlim(0, max(ratios) * 1.2)
    figure.tight_layout()
    path = RESULTS / "results.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
