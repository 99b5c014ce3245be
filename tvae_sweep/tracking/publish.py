"""A sweep's aggregated results, written to results/<name>/aggregates/ and logged on the parent run.

Files: <key>.parquet per searched key (value, metric, mean, std, ci_low, ci_high, best, count),
<key>_summary.parquet for the first preset key (one row per preset: <metric>_mean, <metric>_std,
<metric>_ci_low, <metric>_ci_high, count), comparisons.parquet where the spec names a baseline preset
(each other preset against it, seed by seed: compare.py), curves.parquet and curves.png (each
metric at every evaluated epoch per group of trials that differ only by seed: curves.py; where the
trials' histories are given, at the end of a sweep, in `report` and `collect`), pareto.png,
metrics_by_axis.png, best_traversals.png; for a spec with a preset key (the paper's models), the
best trial of each preset's forecast (forecasts.png, the paper's Figure 1) and topographic map
(topographic_maps.png, Figure 3); importance.parquet (objective, param, importance, evaluator,
trials: importance.py, its notes in the schema metadata) and importance.png, drawn with the figures;
and trials/<trial>/<picture>.png, each finished trial's pictures, kept so that they can be drawn side
by side after Ray has pruned its checkpoints. For several objectives the front's hypervolume goes on
the parent run (metric front_hypervolume, its reference in tags).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..images import FORECAST_FILE, MAP_FILE, TRAVERSAL_FILE
from ..sweep.layout import SweepDir
from ..sweep.results import hypervolume_summary, ranked, write_table
from ..sweep.spec import SweepSpec
from .aggregate import axis_tables, axis_values, finished, wide_table
from .compare import compared_key, comparisons
from .curves import FILE as CURVES
from .curves import Histories, curve_table, headline
from .figures import axes_figure, curves_figure, importance_figure, pareto_figure, save, traversals_figure
from .importance import Importance, importance_metrics, param_importance

FOLDER = "aggregates"
TOP_TRAVERSALS = 4
COMPARISONS = "comparisons"  # aggregates/comparisons.parquet, and .json on the parent run
IMPORTANCE = "importance"  # aggregates/importance.parquet and .png, and .json on the parent run
NOTES_KEY = b"tvae_sweep.importance_notes"  # importance.parquet's schema metadata: its notes, as JSON
HYPERVOLUME_REFERENCE = "tvae_sweep.hypervolume_reference"  # tags of the parent run: the reference point,
HYPERVOLUME_REFERENCE_FROM = "tvae_sweep.hypervolume_reference_from"  # and where it came from


@dataclass
class Aggregates:
    tables: dict[str, pd.DataFrame]
    best: pd.Series | None
    finished: int
    figures: dict[str, Path] = field(default_factory=dict)
    wide: dict[str, pd.DataFrame] = field(default_factory=dict)  # the compared key's paper-style table
    comparisons: pd.DataFrame | None = None  # each preset against the baseline, where the spec names one
    hypervolume: dict | None = None  # the front's (results.hypervolume_summary), for several objectives
    importance: Importance | None = None  # each objective's parameter importance, computed with the figures
    curves: pd.DataFrame | None = None  # the learning curves, where the trials' histories were given


def folder(sweep: SweepDir) -> Path:
    return sweep.root / FOLDER


def table_path(sweep: SweepDir, key: str) -> Path:
    return folder(sweep) / f"{key}.parquet"  # keys are config keys: letters, digits, '.', '_'


def cached_picture(sweep: SweepDir, trial_id: str, name: str) -> Path:
    return folder(sweep) / "trials" / trial_id / name


def objective(spec: SweepSpec) -> tuple[str, str]:
    return spec.search.metrics[0], spec.search.modes[0]


def compute(frame: pd.DataFrame, spec: SweepSpec, sweep: SweepDir, figures: bool = True,
            histories: Histories | None = None) -> Aggregates:
    """Tables (and figures, which take seconds to draw) from a trials frame, written into the
    sweep's aggregates folder; the learning curves too where the trials' `histories` (trial id ->
    its reports: records.histories_of) are given."""
    out = folder(sweep)
    out.mkdir(parents=True, exist_ok=True)
    tables = axis_tables(frame, spec)
    for key, table in tables.items():
        table.to_parquet(table_path(sweep, key), index=False)
    metric, mode = objective(spec)
    best = ranked(frame, metric, 1, mode)
    result = Aggregates(tables, best.iloc[0] if len(best) else None, len(finished(frame)))
    s = spec.search
    result.hypervolume = hypervolume_summary(frame, s.metrics, s.modes, s.hypervolume_reference)
    key = compared_key(spec)
    if key is not None:
        result.wide[key] = wide_table(tables[key], key, list(spec.space[key].values))
        result.wide[key].to_parquet(out / f"{key}_summary.parquet", index=False)
    if spec.baseline is not None:
        result.comparisons = comparisons(frame, spec)
        result.comparisons.to_parquet(out / f"{COMPARISONS}.parquet", index=False)
    if histories is not None:
        result.curves = curve_table(frame, spec, histories)
        result.curves.to_parquet(out / f"{CURVES}.parquet", index=False)
    if not figures:
        return result
    result.importance = param_importance(frame, spec)  # a random forest per objective: seconds for a big sweep
    write_table(result.importance.table, out / f"{IMPORTANCE}.parquet",
                {NOTES_KEY: json.dumps(result.importance.notes).encode()})
    drawn = {"pareto.png": pareto_figure(frame), "metrics_by_axis.png": axes_figure(frame, spec),
             "best_traversals.png": traversals_figure(best_pictures(frame, spec, sweep, TRAVERSAL_FILE)),
             f"{IMPORTANCE}.png": importance_figure(result.importance.table),
             f"{CURVES}.png": curves_figure(result.curves, headline(result.curves))}
    if key is not None:
        drawn["forecasts.png"] = traversals_figure(pictures_by_value(frame, spec, sweep, key, FORECAST_FILE), 2)
        drawn["topographic_maps.png"] = traversals_figure(pictures_by_value(frame, spec, sweep, key, MAP_FILE))
    result.figures = {name: save(fig, out / name) for name, fig in drawn.items() if fig is not None}
    return result


def picture(sweep: SweepDir, row: pd.Series, name: str) -> Path | None:
    """A finished trial's picture: the cached copy, else the one in its last checkpoint."""
    path = cached_picture(sweep, row["trial_id"], name)
    checkpoint = row.get("checkpoint")
    if not path.is_file() and isinstance(checkpoint, str):
        path = Path(checkpoint) / name
    return path if path.is_file() else None


def best_pictures(frame: pd.DataFrame, spec: SweepSpec, sweep: SweepDir, name: str) -> list[tuple[str, Path]]:
    """(title, picture) of the best finished trials."""
    metric, mode = objective(spec)
    return [(f"{row['trial_id']}\n{metric} {row[f'final/{metric}']:.5g}", picture(sweep, row, name))
            for _, row in ranked(frame, metric, TOP_TRAVERSALS, mode).iterrows()]


def pictures_by_value(frame: pd.DataFrame, spec: SweepSpec, sweep: SweepDir, key: str,
                      name: str) -> list[tuple[str, Path]]:
    """(title, picture) of the best finished trial of each value of `key`, in the spec's order."""
    metric, mode = objective(spec)
    done = finished(frame)
    values = axis_values(done, key, spec.space[key])
    out = []
    for value in spec.space[key].values:
        best = ranked(done[values == value], metric, 1, mode)
        for _, row in best.iterrows():
            out.append((f"{value}\n{row['trial_id']}", picture(sweep, row, name)))
    return out


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
    if result.comparisons is not None:
        runs.put_table(parent, result.comparisons, f"{FOLDER}/{COMPARISONS}.json")
    if result.curves is not None:
        runs.put_table(parent, result.curves, f"{FOLDER}/{CURVES}.json")
    for path in result.figures.values():
        runs.put_file(parent, path, FOLDER)
    if step is not None:
        runs.log_metrics(parent, {**best_metrics(result), **front_metrics(result),
                                  "finished_trials": result.finished}, step)
    if result.best is not None:
        runs.set_tags(parent, {"tvae_sweep.best_trial": result.best["trial_id"]})
    log_front(runs, result)
    log_importance(runs, result)


def front_metrics(result: Aggregates) -> dict[str, float]:
    """front_hypervolume, once a finished trial gives the front a value."""
    volume = result.hypervolume
    return {} if volume is None or volume["value"] is None else {"front_hypervolume": volume["value"]}


def log_front(runs, result: Aggregates) -> None:
    """The hypervolume's reference point on the parent run, {metric: value} as JSON, and whence it came
    (tags: the default reference, the worst finished values, moves as trials finish)."""
    volume = result.hypervolume
    if volume is None or volume["reference"] is None:
        return
    reference = dict(zip(volume["metrics"], volume["reference"], strict=True))
    runs.set_tags(runs.parent_id, {HYPERVOLUME_REFERENCE: json.dumps(reference),
                                   HYPERVOLUME_REFERENCE_FROM: volume["reference_from"]})


def log_importance(runs, result: Aggregates) -> None:
    """The importance table (aggregates/importance.json) and its metrics, importance.<objective>.<key>,
    at the number of finished trials it was computed over; its notes as a tag."""
    if result.importance is None:
        return
    parent, table = runs.parent_id, result.importance.table
    runs.put_table(parent, table, f"{FOLDER}/{IMPORTANCE}.json")
    if not table.empty:
        runs.log_metrics(parent, importance_metrics(table), result.finished)
    runs.set_tags(parent, {"tvae_sweep.importance_notes": "; ".join(result.importance.notes) or "none"})
