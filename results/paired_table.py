"""Seed-by-seed differences of results/README.md: each value of a searched key against a baseline
value, the sweep's other searched keys equal, from its trials.parquet.

    python results/paired_table.py results/reference/learned_equivariance model.mu_init 30.0
    python results/paired_table.py results/reference/paper_table1_curve paper_model tvae_L13_36

One row per value and setting of the other keys (those that vary within one value of KEY: a preset's
own settings do not): n (the seeds both trained) and, per metric, the mean of (value - baseline)
over those seeds with its 95% interval. Trials are paired by seed as the aggregates' comparisons
pair them (tracking/compare.py), so what a seed shares (its test set, its initial weights where the
shapes agree) cancels out.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from readme_tables import decimals, markdown, written  # results/ is the script's path

from tvae_sweep.tracking.aggregate import finished
from tvae_sweep.tracking.compare import by_seed
from tvae_sweep.tracking.stats import paired as paired_difference

METRICS = ("log_likelihood", "roll_gain", "kl_z", "equivariance_ratio_learned")
ONE_SEED = 0  # the seed of a sweep whose trials all had the spec's one seed (no config/train.seed)


def held_equal(done: pd.DataFrame, column: str) -> list[str]:
    """The other config columns that vary within one value of `column`."""
    return [c for c in done.columns if c.startswith("config/") and c not in (column, "config/train.seed")
            and (done.groupby(column)[c].nunique(dropna=False) > 1).any()]


def paired(frame: pd.DataFrame, key: str, baseline: str, metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """The table (see the module's text); `baseline` is compared with the key's values as text."""
    done = finished(frame)
    column = f"config/{key}"
    if column not in done:
        raise SystemExit(f"paired_table: the sweep has no searched key {key}")
    values = done[column].astype(str)
    if not (values == baseline).any():
        raise SystemExit(f"paired_table: no finished trial has {key} = {baseline}")
    same = held_equal(done, column)
    rows = []
    for setting, trials in done.groupby(same, sort=True) if same else [((), done)]:
        setting = setting if isinstance(setting, tuple) else (setting,)
        tables = {m: by_seed(trials, values[trials.index], m, ONE_SEED) for m in metrics}
        for value in dict.fromkeys(values[trials.index]):
            found = {m: paired_difference(t[value], t[baseline]) for m, t in tables.items()
                     if value != baseline and {value, baseline} <= set(t.columns)}
            n = max((d.n for d in found.values()), default=0)
            if n:
                row = {c.removeprefix("config/"): v for c, v in zip(same, setting, strict=True)}
                rows.append({**row, key: value, "n": n, **{m: written(d.diff, d.ci_low, d.ci_high, decimals(m))
                                                          for m, d in found.items() if d.n}})
    return pd.DataFrame(rows)


def main(sweep: Path, key: str, baseline: str) -> None:
    table = paired(pd.read_parquet(sweep / "trials.parquet"), key, baseline)
    if table.empty:
        raise SystemExit(f"paired_table: no trial shares its seed and its other keys with one of {key} = {baseline}")
    print(markdown(table))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
