"""Seed-by-seed differences of results/README.md: each value of a searched key against a baseline
value, the sweep's other searched keys equal, from its trials.parquet.

    python results/paired_table.py results/reference/learned_equivariance model.mu_init 30.0
    python results/paired_table.py results/reference/paper_table1_curve paper_model tvae_L13_36

One row per value and setting of the other keys (those that vary within one value of KEY: a preset's
own settings do not): n (the seeds both trained) and, per metric, the mean of (value - baseline)
over those seeds with its 95% interval. Trials are paired by seed, so what a seed shares (its test
set, its initial weights where the shapes agree) cancels out.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from readme_tables import cell, markdown, per_seed  # results/ is the script's path

METRICS = {"log_likelihood": 1, "roll_gain": 1, "kl_z": 2, "equivariance_ratio_learned": 3}  # metric: digits


def held_equal(seeds: pd.DataFrame, key: str) -> list[str]:
    """The other config columns that vary within one value of `key`."""
    return [c for c in seeds.columns if c.startswith("config/") and c != key
            and (seeds.groupby(key)[c].nunique(dropna=False) > 1).any()]


def paired(frame: pd.DataFrame, key: str, baseline: str, metrics: dict[str, int] = METRICS) -> pd.DataFrame:
    """The table (see the module's text); `baseline` is compared with the key's values as text."""
    seeds = per_seed(frame)
    column = f"config/{key}"
    if column not in seeds:
        raise SystemExit(f"paired_table: the sweep has no searched key {key}")
    same = held_equal(seeds, column)
    seeds = seeds.assign(value=seeds[column].astype(str)).set_index([*same, "seed"])
    base = seeds[seeds["value"] == baseline]
    if base.empty:
        raise SystemExit(f"paired_table: no finished trial has {key} = {baseline}")
    metrics = {m: digits for m, digits in metrics.items() if m in seeds}
    base = base[list(metrics)].add_suffix(" base")
    rows = []
    for value, trials in seeds[seeds["value"] != baseline].groupby("value", sort=False):
        both = trials.join(base, how="inner")
        if both.empty:
            continue
        for setting, pairs in both.groupby(level=same, sort=True) if same else [((), both)]:
            setting = setting if isinstance(setting, tuple) else (setting,)
            row = {c.removeprefix("config/"): v for c, v in zip(same, setting, strict=True)}
            row.update({key: value, "n": len(pairs)})
            row.update({m: cell(pairs[m] - pairs[f"{m} base"], digits) for m, digits in metrics.items()})
            rows.append(row)
    return pd.DataFrame(rows)


def main(sweep: Path, key: str, baseline: str) -> None:
    table = paired(pd.read_parquet(sweep / "trials.parquet"), key, baseline)
    if table.empty:
        raise SystemExit(f"paired_table: no trial shares its seed and its other keys with one of {key} = {baseline}")
    print(markdown(table))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
