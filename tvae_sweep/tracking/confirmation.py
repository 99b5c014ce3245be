"""The confirmation's table (aggregates/confirmation.parquet): each retrained config's objectives
over the new seeds and its paired difference from the baseline.

One row per config (a preset of the confirmation's one preset key: the chosen configs, then the
baselines) and objective: `search`, the value the search reported for the trial that chose it (an
optimistic number: it was picked as the best); the mean over the n new seeds, the mean's 95%
interval (Student t); and from comparisons.parquet the paired difference from the baseline over the
shared seeds (`diff`, `diff_ci_low`, `diff_ci_high`) and its paired t-test's p-value, Holm-corrected
across the table's comparisons (its objectives and configs: the claims the confirmation makes;
comparisons.parquet corrects across every metric), and the verdict in the objective's direction.
"""
from __future__ import annotations

import math

import pandas as pd

from ..sweep.spec import SweepSpec
from .aggregate import axis_values, finished
from .compare import by_seed, compared_key, comparisons
from .stats import holm, interval, verdict

COLUMNS = ["config", "metric", "search", "mean", "n", "ci_low", "ci_high", "baseline", "diff", "diff_ci_low",
           "diff_ci_high", "p", "p_holm", "verdict"]
IS_BASELINE = "(the baseline)"
FILE = "confirmation"  # aggregates/confirmation.parquet, and <stage>/confirmation.json on the parent run


def table(frame: pd.DataFrame, spec: SweepSpec, compared: pd.DataFrame | None = None,
          search: dict[str, dict[str, float]] | None = None) -> pd.DataFrame:
    """The rows (COLUMNS) of a confirmation's trials `frame` under its `spec`; `compared`: its
    comparisons (computed when not given); `search`: {config: {objective: the search's value}}."""
    key = compared_key(spec)
    done = finished(frame)
    compared = comparisons(frame, spec) if compared is None else compared
    models = axis_values(done, key, spec.space[key]) if not done.empty else pd.Series(dtype=object)
    metrics = spec.search.metrics
    seeds = {m: by_seed(done, models, m, spec.run.train.seed) if not done.empty else pd.DataFrame() for m in metrics}
    rows = []
    for name in spec.space[key].values:
        for metric in metrics:
            values = seeds[metric][name].dropna() if name in seeds[metric] else pd.Series(dtype=float)
            low, high = interval(values)
            row = {"config": name, "metric": metric, "search": (search or {}).get(name, {}).get(metric, math.nan),
                   "mean": values.mean() if len(values) else math.nan, "n": len(values), "ci_low": low,
                   "ci_high": high, "baseline": spec.baseline}
            rows.append({**row, **_against_baseline(compared, spec, name, metric)})
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["n"] = out["n"].astype("int64")
    compared_rows = out["diff"].notna()
    if compared_rows.any():
        modes = dict(zip(metrics, spec.search.modes, strict=True))
        out.loc[compared_rows, "p_holm"] = holm(out.loc[compared_rows, "p"])
        out.loc[compared_rows, "verdict"] = [verdict(d, p, modes[m]) for d, p, m in out.loc[
            compared_rows, ["diff", "p_holm", "metric"]].itertuples(index=False)]
    return out


def _against_baseline(compared: pd.DataFrame, spec: SweepSpec, name: str, metric: str) -> dict:
    if name == spec.baseline:
        return {"verdict": IS_BASELINE}
    match = compared[(compared["model"] == name) & (compared["metric"] == metric)] if len(compared) else compared
    if match.empty:
        return {"verdict": "-" if spec.baseline is None else "no seed shared with the baseline"}
    first = match.iloc[0]
    return {"diff": first["diff"], "diff_ci_low": first["ci_low"], "diff_ci_high": first["ci_high"], "p": first["p"]}
