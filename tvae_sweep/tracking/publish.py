"""A sweep's aggregated results, written to results/<name>/aggregates/ and logged on the parent run.

Files: <key>.parquet per searched key (value, metric, mean, std, best, count), pareto.png,
metrics_by_axis.png, best_traversals.png, and traversals/<trial>.png (each finished trial's traversal,
kept so the best ones can be drawn side by side).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..sweep.layout import SweepDir
from ..sweep.spec import SweepSpec
from .aggregate import axis_tables, best_trial, finished, ranked
from .figures import axes_figure, pareto_figure, save, traversals_figure

FOLDER = "aggregates"
TOP_TRAVERSALS = 4
TRAVERSAL_FILE = "traversal.png"


@dataclass
class Aggregates:
    tables: dict[str, pd.DataFrame]
    best: pd.Series | None
    finished: int
    figures: dict[str, Path] = field(default_factory=dict)


def folder(sweep: SweepDir) -> Path:
    return sweep.root / FOLDER


def table_path(sweep: SweepDir, key: str) -> Path:
    return folder(sweep) / f"{key}.parquet"  # keys are config keys: letters, digits, '.', '_'


def cached_traversal(sweep: SweepDir, trial_id: str) -> Path:
    return folder(sweep) / "traversals" / f"{trial_id}.png"


def objective(spec: SweepSpec) -> tuple[str, str]:
    return spec.search.metrics[0], spec.search.modes[0]


def compute(frame: pd.DataFrame, spec: SweepSpec, sweep: SweepDir, figures: bool = True) -> Aggregates:
    """Tables (and figures) from a trials frame, written into the sweep's aggregates folder."""
    out = folder(sweep)
    out.mkdir(parents=True, exist_ok=True)
    tables = axis_tables(frame, spec)
    for key, table in tables.items():
        table.to_parquet(table_path(sweep, key), index=False)
    metric, mode = objective(spec)
    result = Aggregates(tables, best_trial(frame, metric, mode), len(finished(frame)))
    if figures:
        drawn = {"pareto.png": pareto_figure(frame), "metrics_by_axis.png": axes_figure(frame, spec),
                 "best_traversals.png": traversals_figure(best_traversals(frame, spec, sweep))}
        result.figures = {name: save(fig, out / name) for name, fig in drawn.items() if fig is not None}
    return result


def best_traversals(frame: pd.DataFrame, spec: SweepSpec, sweep: SweepDir) -> list[tuple[str, Path]]:
    """(title, picture) of the best finished trials: the cached copy, else the one in its checkpoint."""
    metric, mode = objective(spec)
    pictures = []
    for _, row in ranked(frame, metric, mode, TOP_TRAVERSALS).iterrows():
        path = cached_traversal(sweep, row["trial_id"])
        checkpoint = row.get("checkpoint")
        if not path.is_file() and isinstance(checkpoint, str) and (Path(checkpoint) / TRAVERSAL_FILE).is_file():
            path = Path(checkpoint) / TRAVERSAL_FILE
        pictures.append((f"{row['trial_id']}\n{metric} {row[f'final/{metric}']:.5g}", path))
    return pictures


def best_metrics(result: Aggregates) -> dict[str, float]:
    """The best trial's final metrics, to log on the parent run."""
    if result.best is None:
        return {}
    return {k.removeprefix("final/"): float(v) for k, v in result.best.items()
            if k.startswith("final/") and isinstance(v, (int, float)) and math.isfinite(v)}


def log_on_parent(runs, result: Aggregates, step: int | None) -> None:
    """Tables, figures and the best trial's metrics on the parent run; metrics are logged at `step`
    (the number of finished trials) unless it is None."""
    parent = runs.parent_id
    for key, table in result.tables.items():
        runs.put_table(parent, table, f"{FOLDER}/{key}.json")
    for path in result.figures.values():
        runs.put_file(parent, path, FOLDER)
    if step is not None:
        runs.log_metrics(parent, {**best_metrics(result), "finished_trials": result.finished}, step)
    if result.best is not None:
        runs.set_tags(parent, {"tvae_sweep.best_trial": result.best["trial_id"]})
