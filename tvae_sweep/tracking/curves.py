"""Learning curves: each metric at every evaluated epoch, per group of trials that differ only by
seed (aggregates/curves.parquet).

A group is a trial's preset (the first preset key's recorded name, grouped as the axis tables
group it), or in a spec without presets its searched values, the seed aside. A group's seeds are
counted as the comparisons count them (compare.by_seed): each finished trial at its train.seed,
a replicated trial's `<m>_seed<s>` values each at its own seed, a fused trial's points each a
trial; a group's trials at one seed are averaged first. Each (group, epoch, metric) where the
metric was reported gets n (seeds), the mean, the standard deviation and the mean's 95% interval
(stats.interval: Student t, none for n = 1).

A trial's history is every report it made (TrialRecord.history). A report carries each evaluated
metric on to the epochs after it, so only the epochs the trial evaluated are kept: those that
evaluation.evaluation_due gives under the trial's own config.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ..config import TrainConfig
from ..evaluation import evaluation_due
from ..metrics import is_metric, metric_order
from ..sweep.confirm import searched_config
from ..sweep.results import row_config
from ..sweep.space import trial_run_config
from ..sweep.spec import SweepSpec
from .aggregate import axis_values, finished, seed_metrics
from .compare import SEED_COLUMN, by_seed, compared_key
from .stats import interval

FILE = "curves"  # aggregates/curves.parquet and curves.png, and curves.json on the parent run
COLUMNS = ["group", "epoch", "metric", "n", "mean", "std", "ci_low", "ci_high"]
HEADLINE = ("log_likelihood", "equivariance_ratio_learned", "roll_gain", "kl_z")  # drawn, and in report.md
SHOWN_EPOCHS = (5, 10, 20, 40, 80)  # report.md shows the evaluated epochs nearest to these, and the last
BASE_CONFIG = "base config"  # the group of a spec that searches nothing but seeds

Histories = Mapping[str, Sequence[Mapping[str, Any]]]  # trial id -> its reports, oldest first


def config_label(values: Mapping[str, Any]) -> str:
    """A config's searched values as 'key=value, ...' (the base config's name when there are none)."""
    shown = (f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(values.items()))
    return ", ".join(shown) or BASE_CONFIG


def trial_groups(done: pd.DataFrame, spec: SweepSpec) -> pd.Series:
    """Each finished trial's group: its preset, else its searched values without the seed."""
    key = compared_key(spec)
    if key is not None:
        return axis_values(done, key, spec.space[key])
    return pd.Series([config_label(searched_config(row)) for _, row in done.iterrows()], index=done.index,
                     dtype=object)


def evaluated(history: Sequence[Mapping[str, Any]], train: TrainConfig) -> dict[int, Mapping[str, Any]]:
    """{epoch: report} of the epochs a trial evaluated (a repeated epoch: its last report)."""
    out = {}
    for report in history:
        epoch = int(report["epoch"])
        if evaluation_due(epoch, train):
            out[epoch] = report
    return out


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def epoch_rows(done: pd.DataFrame, spec: SweepSpec, histories: Histories,
               groups: pd.Series) -> tuple[pd.DataFrame, list[tuple[Any, int]]]:
    """One row per finished trial and evaluated epoch, read as a trials table reads (its seed as
    config/train.seed, the epoch's metrics as final/<metric>), and the (group, epoch) of each row."""
    base, rows, cells = spec.base_dict(), [], []
    for index, row in done.iterrows():
        group, history = groups[index], histories.get(row["trial_id"]) or ()
        if group is None or pd.isna(group) or not history:
            continue
        seed = {SEED_COLUMN: row[SEED_COLUMN]} if SEED_COLUMN in done else {}
        train = trial_run_config(base, row_config(row)).train
        for epoch, report in evaluated(history, train).items():
            metrics = {f"final/{k}": float(v) for k, v in report.items() if is_metric(k) and _number(v)}
            rows.append({**seed, **metrics})
            cells.append((group, epoch))
    return pd.DataFrame(rows), cells


def curve_table(frame: pd.DataFrame, spec: SweepSpec, histories: Histories) -> pd.DataFrame:
    """The rows of curves.parquet (COLUMNS): groups in the spec's order, then epochs, then metrics
    in the registry's order."""
    done = finished(frame)
    if done.empty:
        return pd.DataFrame(columns=COLUMNS)
    groups = trial_groups(done, spec)
    epochs, cells = epoch_rows(done, spec, histories, groups)
    if epochs.empty:
        return pd.DataFrame(columns=COLUMNS)
    code_of = {cell: code for code, cell in enumerate(dict.fromkeys(cells))}  # by_seed's model column
    where = list(code_of)
    codes = pd.Series([code_of[c] for c in cells], index=epochs.index)
    rows = []
    for metric in seed_metrics(epochs):
        for code, values in by_seed(epochs, codes, metric, spec.run.train.seed).items():
            values = values.dropna()
            if values.empty:
                continue
            low, high = interval(values)
            group, epoch = where[code]
            rows.append({"group": group, "epoch": epoch, "metric": metric, "n": len(values), "mean": values.mean(),
                         "std": values.std(ddof=1) if len(values) > 1 else float("nan"),
                         "ci_low": low, "ci_high": high})
    key = compared_key(spec)
    order = list(spec.space[key].values) if key is not None else []
    order += [g for g in dict.fromkeys(groups.dropna()) if g not in order]
    rows.sort(key=lambda r: (order.index(r["group"]), r["epoch"], metric_order(r["metric"])))
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.astype({"epoch": "int64", "n": "int64"})


def headline(table: pd.DataFrame | None) -> list[str]:
    """The headline metrics the table has."""
    present = set() if table is None or table.empty else set(table["metric"])
    return [m for m in HEADLINE if m in present]


def shown_epochs(epochs: Sequence[int]) -> list[int]:
    """At most six evaluated epochs to show: all of them where there are no more, else those
    nearest to 5, 10, 20, 40 and 80, and the last."""
    present = sorted(set(int(e) for e in epochs))
    if len(present) <= len(SHOWN_EPOCHS) + 1:
        return present
    nearest = {min(present, key=lambda e, t=target: (abs(e - t), e)) for target in SHOWN_EPOCHS}
    return sorted(nearest | {present[-1]})
