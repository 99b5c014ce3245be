"""The controls table of results/README.md, from a replicated sweep's trials.parquet.

    python results/controls_table.py results/reference/learned_equivariance/trials.parquet

One row per config (its searched values), each cell the mean over the trial's seeds with its 95%
interval (tvae_sweep.tracking.stats.interval, the aggregates' own): what training changed in the
equivariance ratio, the ratio at the posterior means against the input-free control (each frame's u
from a random test frame), what training changed in E_eq itself, roll gain and its lead over the
reversed roll, the likelihood and kl_z. Differences are taken seed by seed.
"""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
from readme_tables import cell, decimals, markdown, seeds_of  # results/ is the script's path

SHORT = {"model.coherence_window": "window", "model.n_off_diag": "n_off_diag", "model.mu_init": "mu",
         "model.n_caps": "n_caps", "model.cap_dim": "cap_dim", "model.shift": "shift"}


COLUMNS = {  # column: (metric, minus metric or None), each taken seed by seed
    "ratio learned": ("equivariance_ratio_learned", None),
    "at mean": ("equivariance_ratio_at_mean", None),
    "input-free": ("equivariance_ratio_input_free", None),
    "at mean - input-free": ("equivariance_ratio_at_mean", "equivariance_ratio_input_free"),
    "E_eq learned": ("equivariance_error_learned", None),
    "roll gain - reversed": ("roll_gain", "roll_gain_reversed"),
    "log p(x)": ("log_likelihood", None),
    "kl_z": ("kl_z", None),
}


def per_seed(row: pd.Series, metric: str, seeds: list[int]) -> np.ndarray:
    return np.array([row[f"final/{metric}_seed{s}"] for s in seeds], dtype=float)


def row_cells(row: pd.Series, seeds: list[int]) -> dict[str, str]:
    return {column: cell(per_seed(row, metric, seeds) - (per_seed(row, minus, seeds) if minus else 0), decimals(metric))
            for column, (metric, minus) in COLUMNS.items()}


def table(frame: pd.DataFrame) -> pd.DataFrame:
    seeds = seeds_of(frame)
    searched = [c for c in frame.columns if c.startswith("config/") and frame[c].nunique() > 1
                and c != "config/train.seed"]
    rows = []
    for _, row in frame[frame["state"] == "TERMINATED"].iterrows():
        config = {SHORT.get(c[7:], c[7:]): row[c] for c in searched}
        if "n_off_diag" in config:
            config["K"] = 2 * int(config.pop("n_off_diag")) + 1
        rows.append({**config, "n": len(seeds), **row_cells(row, seeds)})
    out = pd.DataFrame(rows)
    keys = [k for k in ("mu", "window", "K") if k in out] or list(out.columns[:1])
    return out[keys + [c for c in out.columns if c not in keys]].sort_values(keys)


if __name__ == "__main__":
    print(markdown(table(pd.read_parquet(sys.argv[1]))))
