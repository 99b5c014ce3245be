"""Each model against the spec's baseline, seed by seed: aggregates/comparisons.parquet.

Models are the presets of the space's first preset key; the baseline is the spec's `baseline`.
Two models trained with the same seed share their test sequences, so for every metric and every
other preset the difference (model minus baseline) is taken seed by seed, matched by train.seed
(a replicated trial's `<m>_seed<s>` values count as its seeds): its mean, 95% interval, paired
t-test p-value, the p-value Holm-corrected across all the rows, and a verdict in the metric's
direction. A model's trials at one seed (other searched keys) are averaged first.
"""
from __future__ import annotations

import re

import pandas as pd

from ..metrics import metric_mode
from ..sweep.spec import SweepSpec
from .aggregate import axis_values, finished, seed_metrics
from .stats import holm, paired, verdict

COLUMNS = ["metric", "model", "baseline", "n", "diff", "ci_low", "ci_high", "p", "p_holm", "verdict"]
SEED_COLUMN = "config/train.seed"


def compared_key(spec: SweepSpec) -> str | None:
    """The first preset key of the space: the named models a sweep compares."""
    return next((key for key, p in spec.space.items() if p.type == "preset"), None)


def by_seed(frame: pd.DataFrame, models: pd.Series, metric: str, default_seed: int) -> pd.DataFrame:
    """A (seed x model) table of `metric`: each finished trial's value at its train.seed, or its
    replicates' `<metric>_seed<s>` values where it has them."""
    per_seed = {int(m.group(1)): c for c in frame
                if (m := re.fullmatch(rf"final/{re.escape(metric)}_seed(\d+)", c))}
    seeds = frame[SEED_COLUMN] if SEED_COLUMN in frame else pd.Series(default_seed, index=frame.index)
    rows = []
    for index, row in frame.iterrows():
        model = models[index]
        if model is None or pd.isna(model):
            continue
        values = {s: row[c] for s, c in per_seed.items() if pd.notna(row[c])}
        if not values and pd.notna(row.get(f"final/{metric}")):
            values = {int(seeds[index]): row[f"final/{metric}"]}
        rows += [{"seed": s, "model": model, "value": float(v)} for s, v in values.items()]
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).pivot_table(index="seed", columns="model", values="value", aggfunc="mean")


def comparisons(frame: pd.DataFrame, spec: SweepSpec) -> pd.DataFrame:
    """The rows of comparisons.parquet (COLUMNS); empty without a baseline or shared seeds."""
    key = compared_key(spec)
    done = finished(frame)
    if key is None or spec.baseline is None or done.empty:
        return pd.DataFrame(columns=COLUMNS)
    models = axis_values(done, key, spec.space[key])
    rows = []
    for metric in seed_metrics(done):
        table = by_seed(done, models, metric, spec.run.train.seed)
        if spec.baseline not in table:
            continue
        for model in spec.space[key].values:
            if model == spec.baseline or model not in table:
                continue
            both = table[[model, spec.baseline]].dropna()
            if both.empty:
                continue
            result = paired(both[model], both[spec.baseline])
            rows.append({"metric": metric, "model": model, "baseline": spec.baseline, "n": result.n,
                         "diff": result.diff, "ci_low": result.ci_low, "ci_high": result.ci_high, "p": result.p})
    out = pd.DataFrame(rows, columns=COLUMNS)
    if out.empty:
        return out
    out["p_holm"] = holm(out["p"])
    out["verdict"] = [verdict(d, p, metric_mode(m)) for d, p, m in
                      zip(out["diff"], out["p_holm"], out["metric"], strict=True)]
    out["n"] = out["n"].astype("int64")
    return out
