"""What the table scripts of results/README.md share: a cell (a mean with its 95% interval, the
aggregates' own: tvae_sweep.tracking.stats.interval), a replicated sweep's seeds, and markdown.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from tvae_sweep.tracking.stats import interval

SEED_COLUMN = re.compile(r"^final/(.+)_seed(\d+)$")
# decimals a metric is written with (its value at initialisation, what training added and the
# differences taken of it alike): nats and E_eq to 1, kl to 2, ratios, correlations and agreements to 3
DECIMALS = {"kl_": 2, "equivariance_ratio": 3, "capsule_correlation": 3, "topographic_agreement": 3}


def decimals(metric: str) -> int:
    return next((d for prefix, d in DECIMALS.items() if metric.startswith(prefix)), 1)


def written(mean: float, low: float, high: float, digits: int) -> str:
    """`mean [low, high]` to `digits` decimals; the mean alone without an interval."""
    if math.isnan(low):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def cell(values: np.ndarray, digits: int) -> str:
    """The mean of `values` with its interval (NaNs left out; empty for none)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if not len(values):
        return ""
    return written(float(values.mean()), *interval(values), digits)


def seeds_of(frame: pd.DataFrame) -> list[int]:
    """The seeds of a replicated sweep's trials (their final/<metric>_seed<s> columns)."""
    return sorted({int(m.group(2)) for c in frame.columns if (m := SEED_COLUMN.match(c))})


def markdown(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---:" if i else "---" for i in range(len(frame.columns))) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])
