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

import pandas as pd
from readme_tables import cell, decimals, markdown, written  # results/ is the script's path

QUANTITIES = {  # column: (metric, minus metric or None)
    "log p(x)": ("log_likelihood", None),
    "mean image": ("mean_image_nll", None),
    "kl_z": ("kl_z", None),
    "ratio": ("equivariance_ratio", None),
    "ratio learned": ("equivariance_ratio_learned", None),
    "at mean - input-free": ("equivariance_ratio_at_mean", "equivariance_ratio_input_free"),
    "roll gain - reversed": ("roll_gain", "roll_gain_reversed"),
    # the 2-D model's map: neighbouring units' agreement above the same units shuffled over the grid
    "agreement - chance": ("topographic_agreement", "topographic_agreement_chance"),
    "agreement - chance, init": ("topographic_agreement_init", "topographic_agreement_chance_init"),
    "agreement learned": ("topographic_agreement_learned", None),
}
COMPARED = ("log_likelihood", "kl_z", "equivariance_ratio_learned", "roll_gain")


def models_table(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    done = frame[frame["state"] == "TERMINATED"]
    rows = []
    for model, group in done.groupby(f"config/{key}", sort=False):
        row = {"model": model, "n": len(group)}
        for column, (metric, minus) in QUANTITIES.items():
            if f"final/{metric}" not in group or (minus and f"final/{minus}" not in group):
                row[column] = ""
                continue
            values = group[f"final/{metric}"].to_numpy(float)
            if minus:
                values = values - group[f"final/{minus}"].to_numpy(float)
            row[column] = cell(values, decimals(metric))
        rows.append(row)
    table = pd.DataFrame(rows)
    return table[[c for c in table.columns if (table[c] != "").any()]]  # no column the sweep has no metric for


def comparisons_table(sweep: Path) -> pd.DataFrame:
    path = sweep / "aggregates" / "comparisons.parquet"
    if not path.is_file():
        return pd.DataFrame()
    table = pd.read_parquet(path)
    table = table[table["metric"].isin(COMPARED)].copy()
    table["diff [95% CI]"] = [written(d, low, high, decimals(metric)) for metric, d, low, high in
                              zip(table["metric"], table["diff"], table["ci_low"], table["ci_high"], strict=True)]
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
