"""The tables of results/README.md for a sweep of named models (a preset key) over seeds, from its
trials.parquet and aggregates/comparisons.parquet.

    python results/preset_table.py results/reference/paper_table1

One row per model: n (its finished seeds) and, for each quantity, the mean over the seeds with its
95% interval (tvae_sweep.tracking.stats.interval, the aggregates' own): the likelihood and the test
set's mean image, kl_z, the equivariance ratio and what training changed in it, the ratio at the
posterior means beside the input-free control, roll gain beside the reversed roll (differences taken
within each trial). Then each model against the spec's baseline, seed by seed, as the aggregates
computed it: the paired difference, its interval, Holm's p and the verdict.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from controls_table import markdown  # the tables' one markdown writer (results/ is the script's path)

from tvae_sweep.tracking.stats import interval

QUANTITIES = {  # column: (metric, minus metric or None, digits)
    "log p(x)": ("log_likelihood", None, 1),
    "mean image": ("mean_image_nll", None, 1),
    "kl_z": ("kl_z", None, 2),
    "ratio": ("equivariance_ratio", None, 3),
    "ratio learned": ("equivariance_ratio_learned", None, 3),
    "at mean - input-free": ("equivariance_ratio_at_mean", "equivariance_ratio_input_free", 3),
    "roll gain - reversed": ("roll_gain", "roll_gain_reversed", 1),
}
COMPARED = ("log_likelihood", "equivariance_ratio_learned", "roll_gain", "kl_z")


def cell(values: np.ndarray, digits: int) -> str:
    values = values[~np.isnan(values)]
    if not len(values):
        return ""
    low, high = interval(values)
    if np.isnan(low):
        return f"{values.mean():.{digits}f}"
    return f"{values.mean():.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def models_table(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    done = frame[frame["state"] == "TERMINATED"]
    rows = []
    for model, group in done.groupby(f"config/{key}", sort=False):
        row = {"model": model, "n": len(group)}
        for column, (metric, minus, digits) in QUANTITIES.items():
            if f"final/{metric}" not in group or (minus and f"final/{minus}" not in group):
                row[column] = ""
                continue
            values = group[f"final/{metric}"].to_numpy(float)
            if minus:
                values = values - group[f"final/{minus}"].to_numpy(float)
            row[column] = cell(values, digits)
        rows.append(row)
    return pd.DataFrame(rows)


def comparisons_table(sweep: Path) -> pd.DataFrame:
    path = sweep / "aggregates" / "comparisons.parquet"
    if not path.is_file():
        return pd.DataFrame()
    table = pd.read_parquet(path)
    table = table[table["metric"].isin(COMPARED)].copy()
    table["diff [95% CI]"] = [f"{d:+.3g} [{lo:+.3g}, {hi:+.3g}]" for d, lo, hi in
                              zip(table["diff"], table["ci_low"], table["ci_high"], strict=True)]
    table["p (Holm)"] = table["p_holm"].map(lambda p: f"{p:.3g}")
    return table[["model", "baseline", "metric", "n", "diff [95% CI]", "p (Holm)", "verdict"]]


def main(sweep: Path) -> None:
    frame = pd.read_parquet(sweep / "trials.parquet")
    key = next(c[7:] for c in frame.columns if c.startswith("config/") and "." not in c[7:])  # the preset key
    print(markdown(models_table(frame, key)))
    compared = comparisons_table(sweep)
    if not compared.empty:
        print()
        print(markdown(compared))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
