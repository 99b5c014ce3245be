"""Which topographic structure gives equivariant capsules: the sweep's metrics per searched axis.

Input is a trials frame (one row per trial: trial_id, state, config/<key>, final/<metric>), as
`tvae_sweep.sweep.results.frame_of` builds it from trial records, live or saved. For each searched
key, over the finished trials: mean, std, the mean's 95% interval (Student t; none for one trial),
best and count (n) of each metric per value of the key. Continuous keys with many values are cut
into quantile bins. A preset key's value is the name the trial recorded when it was sampled.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ..metrics import SEED, STD, best_of, is_metric, metric_order
from ..sweep.records import TERMINATED
from ..sweep.results import pareto_trials
from ..sweep.spec import ParamSpec, SweepSpec
from .stats import interval

TRAINING_ONLY = ("loss", "train_loss")  # the aggregates leave out the objective's own training terms
MAX_VALUES = 8  # a numeric key with more distinct values than this is binned
BINS = 5
STATS = ("mean", "std", "ci_low", "ci_high", "best", "count")
WIDE_STATS = ("mean", "std", "ci_low", "ci_high")  # a paper-style table's columns per metric


def _number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def finished(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty or "state" not in frame:
        return frame.iloc[0:0]
    return frame[frame["state"] == TERMINATED]


def reported_metrics(frame: pd.DataFrame) -> list[str]:
    """The aggregated metrics that at least one trial of the frame reports, in the registry's order."""
    names = [c.removeprefix("final/") for c in frame if c.startswith("final/") and frame[c].notna().any()]
    return sorted((m for m in names if is_metric(m) and m not in TRAINING_ONLY), key=metric_order)


def seed_metrics(frame: pd.DataFrame) -> list[str]:
    """The reported metrics each once: not a replicated trial's `<m>_seed<s>` or `<m>_std`."""
    return [m for m in reported_metrics(frame) if not SEED.search(m) and not m.endswith(STD)]


def axis_values(frame: pd.DataFrame, key: str, param: ParamSpec) -> pd.Series:
    """The value of searched key `key` for each trial; binned labels for continuous keys.

    NaN (or None) where the key was not sampled (a `when` condition did not hold)."""
    column = f"config/{key}"
    if column not in frame:
        return pd.Series([None] * len(frame), index=frame.index, dtype=object)
    if param.type == "preset":  # the name recorded at sampling, never inferred from the config
        return frame[column].map(_label).astype(object)
    values = frame[column]
    present = values.dropna()
    if len(present) and all(_number(v) for v in present):
        values = pd.to_numeric(values)
        if present.nunique() > MAX_VALUES:
            return _bins(values)
        if all(float(v).is_integer() for v in present) and param.type != "float":
            return values.astype("Int64")
        return values
    return values.map(_label).astype(object)


def _label(value: Any) -> str | None:
    """A categorical value as text; None where the key was not sampled."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _bins(values: pd.Series) -> pd.Series:
    """Quantile bins labelled 'low..high', ordered by their lower edge."""
    cut = pd.qcut(values, q=BINS, duplicates="drop")
    labels = {iv: f"{iv.left:.3g}..{iv.right:.3g}" for iv in cut.cat.categories}
    return pd.Series(pd.Categorical(cut.map(labels), categories=list(labels.values()), ordered=True),
                     index=values.index)


def axis_table(frame: pd.DataFrame, key: str, param: ParamSpec) -> pd.DataFrame:
    """Rows (value of `key`, metric) with the mean, std, best and count of the finished trials."""
    done = finished(frame)
    metrics = reported_metrics(done)
    columns = [key, "metric", *STATS]
    if done.empty or not metrics:
        return pd.DataFrame(columns=columns)
    values = axis_values(done, key, param)
    rows = []
    for value, group in done.groupby(values, dropna=False, sort=True, observed=True):
        for metric in metrics:
            series = group[f"final/{metric}"].dropna().astype(float)
            low, high = interval(series)
            rows.append({
                key: value, "metric": metric,
                "mean": series.mean() if len(series) else np.nan,
                "std": series.std(ddof=1) if len(series) > 1 else np.nan,
                "ci_low": low, "ci_high": high,
                "best": float(best_of(series, metric)),
                "count": int(len(series)),
            })
    table = pd.DataFrame(rows, columns=columns)
    if isinstance(values.dtype, pd.CategoricalDtype):
        table[key] = table[key].astype(str)
    table["count"] = table["count"].astype("int64")
    return table


def wide_table(table: pd.DataFrame, key: str, order: list | None = None) -> pd.DataFrame:
    """An axis table with one row per value and the columns <metric>_mean, <metric>_std,
    <metric>_ci_low, <metric>_ci_high and count (n): the paper's layout (mean, standard deviation
    and the mean's 95% interval over seeds). Rows follow `order` when given."""
    if table.empty:
        return pd.DataFrame(columns=[key, "count"])
    wide = table.pivot(index=key, columns="metric", values=list(WIDE_STATS))
    wide.columns = [f"{metric}_{stat}" for stat, metric in wide.columns]
    metrics = list(dict.fromkeys(table["metric"]))
    wide = wide[[f"{m}_{stat}" for m in metrics for stat in WIDE_STATS]]
    wide["count"] = table.groupby(key)["count"].max()
    if order is not None:
        wide = wide.reindex([v for v in order if v in wide.index])
    return wide.reset_index()


def axis_tables(frame: pd.DataFrame, spec: SweepSpec) -> dict[str, pd.DataFrame]:
    """One table per searched key of the spec."""
    return {key: axis_table(frame, key, param) for key, param in spec.space.items()}


def pareto_front(frame: pd.DataFrame, x: str = "equivariance_ratio", y: str = "log_likelihood") -> pd.DataFrame:
    """Finished trials that no other trial beats on both `x` (lower is better) and `y` (higher is
    better), ordered by `x`."""
    return pareto_trials(frame, [x, y], ["min", "max"])
