"""Statistics over seeds (TVAE-SPEC 3.2): a mean's 95% interval, a paired comparison, Holm's correction.

Seeds are the unit of evidence: an interval is Student's t over n seeds (none for n = 1); two models
trained with the same seeds are compared seed by seed (paired t-test); the p-values of one report
are corrected together by Holm's step-down method.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95
ALPHA = 0.05  # a difference is resolved where its Holm-corrected p-value is below this
HIGHER, LOWER, UNRESOLVED = "higher", "lower", "no resolvable difference"


def _values(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    return array[np.isfinite(array)]


def interval(values: Sequence[float]) -> tuple[float, float]:
    """The 95% Student t interval of the mean of `values` (NaN, NaN for fewer than two)."""
    x = _values(values)
    n = len(x)
    if n < 2:
        return math.nan, math.nan
    half = stats.t.ppf(0.5 + LEVEL / 2, n - 1) * x.std(ddof=1) / math.sqrt(n)
    return float(x.mean() - half), float(x.mean() + half)


def excludes_zero(low: float, high: float) -> bool:
    """Whether an interval lies wholly on one side of 0 (never for a missing interval)."""
    return (low > 0 or high < 0) and not (math.isnan(low) or math.isnan(high))


@dataclass(frozen=True)
class Paired:
    """A paired difference over seeds: model minus baseline."""

    n: int
    diff: float
    ci_low: float
    ci_high: float
    p: float


def paired(model: Sequence[float], baseline: Sequence[float]) -> Paired:
    """Mean of model - baseline over matched seeds, its interval and the paired t-test's p-value
    (NaN for one seed; 0 or 1 where every seed differs by the same amount, which a t-test cannot
    weigh)."""
    a, b = np.asarray(model, dtype=float), np.asarray(baseline, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    d = a - b
    n = len(d)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, math.nan)
    low, high = interval(d)
    if n < 2:
        p = math.nan
    elif np.ptp(d) == 0:
        p = 1.0 if d[0] == 0 else 0.0
    else:
        p = float(stats.ttest_rel(a, b).pvalue)
    return Paired(n, float(d.mean()), low, high, p)


def holm(p: Sequence[float]) -> list[float]:
    """Holm's step-down correction of m p-values (NaN ones left out of m and left NaN):
    sorted ascending, p_holm_(i) = max over j <= i of min(1, (m - j) p_(j)), j from 0."""
    p = list(map(float, p))
    present = sorted((v, i) for i, v in enumerate(p) if not math.isnan(v))
    out = [math.nan] * len(p)
    running = 0.0
    for j, (value, i) in enumerate(present):
        running = max(running, min(1.0, (len(present) - j) * value))
        out[i] = running
    return out


def verdict(diff: float, p_holm: float, mode: str) -> str:
    """'higher' or 'lower' (the model against the baseline) where p_holm < ALPHA, else no
    resolvable difference; `mode` ('max' or 'min') says which way is better, named beside it."""
    if math.isnan(p_holm) or p_holm >= ALPHA or diff == 0:
        return UNRESOLVED
    word = HIGHER if diff > 0 else LOWER
    better = (diff > 0) == (mode == "max")
    return f"{word} ({'better' if better else 'worse'})"
