"""The learning-curve tables of results/README.md, from a sweep's aggregates/curves.parquet.

    python results/curve_table.py results/reference/paper_table1_curve [EPOCH ...]

For each metric below, one row per group (a model, or a config over its seeds) and one column per
epoch given (default 5, 10, 20, 40, 80): the mean over the group's n seeds with its 95% interval,
as the aggregates computed them (tvae_sweep/tracking/curves.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from readme_tables import decimals, markdown, written  # results/ is the script's path

METRICS = ("log_likelihood", "kl_z", "equivariance_ratio_learned", "equivariance_error_learned", "roll_gain",
           "roll_gain_reversed")


def cell(row: pd.Series, digits: int) -> str:
    return written(row["mean"], row["ci_low"], row["ci_high"], digits)


def metric_table(curves: pd.DataFrame, metric: str, epochs: list[int], digits: int) -> pd.DataFrame:
    rows = []
    for group, curve in curves[curves["metric"] == metric].groupby("group", sort=False):
        at = curve.set_index("epoch")
        rows.append({"group": group.removeprefix("paper_model="), "n": int(at["n"].min()),
                     **{str(e): cell(at.loc[e], digits) if e in at.index else "" for e in epochs}})
    return pd.DataFrame(rows)


def main(sweep: Path, epochs: list[int]) -> None:
    curves = pd.read_parquet(sweep / "aggregates" / "curves.parquet")
    for metric in METRICS:
        table = metric_table(curves, metric, epochs, decimals(metric))
        if not table.empty:
            print(f"{metric}:\n\n{markdown(table)}\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), [int(e) for e in sys.argv[2:]] or [5, 10, 20, 40, 80])
