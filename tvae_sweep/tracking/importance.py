"""Which searched keys matter: each objective's parameter importance over a sweep's finished trials.

The trials are read from the trials table (config/<key>, final/<metric>), the finished trials with
every objective finite, as the aggregates and the Pareto front read them; this works alike for a
search, a fused grid, PBT and `collect` (which has no Optuna study). They are put into an in-memory
Optuna study, each key with the distribution its spec gives it (a range, or its values; a preset
by its names), and Optuna's fANOVA evaluator (FanovaImportanceEvaluator, seeded by search.seed)
splits the variance of each objective across the trials between the keys: a random forest fitted
to the trials, and each key's share of the variance that it explains alone (interactions are left
out), normalised to sum to 1 per objective.

fANOVA assesses the keys every finished trial has: a key that a `when` condition leaves out of some
trials, or one that never varies, is named in a note instead. So is an objective that never varies,
and a sweep with fewer than MIN_TRIALS finished trials gets a note and no table. (Optuna's other
evaluator, PED-ANOVA, compares the best tenth of the trials with all of them, and with the tens of
trials of a sweep here it ranks a continuous key first whatever drives the objective.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna
import pandas as pd
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.importance import FanovaImportanceEvaluator, get_param_importances

from ..sweep.results import finished_on
from ..sweep.spec import ParamSpec, SweepSpec

EVALUATOR = "fANOVA"  # the importance table's `evaluator`: Optuna's FanovaImportanceEvaluator
MIN_TRIALS = 5  # fewer finished trials than this give a note, not a table
COLUMNS = ["objective", "param", "importance", "evaluator", "trials"]


@dataclass
class Importance:
    table: pd.DataFrame  # COLUMNS: each objective's keys, most important first
    notes: list[str] = field(default_factory=list)  # what was not assessed, and why


def distribution(param: ParamSpec) -> BaseDistribution:
    """A searched key's Optuna distribution, from its spec: a range, or its values (a preset's
    names; a categorical key's values by their text, so that any YAML value is a choice)."""
    if param.type == "int":
        return IntDistribution(int(param.low), int(param.high), log=param.log)
    if param.type == "float":
        return FloatDistribution(param.low, param.high, log=param.log)
    return CategoricalDistribution([str(v) for v in param.values])


def _choice(value: Any, param: ParamSpec) -> Any:
    """A trial's value of the key as its distribution holds it; None where it was not sampled."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if param.type == "int":
        return int(value)
    if param.type == "float":
        return float(value)
    names = [str(v) for v in param.values]
    matches = [name for name, v in zip(names, param.values, strict=True) if _same(v, value)]
    return matches[0] if matches else None


def _same(choice: Any, value: Any) -> bool:
    try:
        return bool(choice == value)
    except ValueError:  # a list value read back from parquet as an array
        return list(choice) == list(value) if isinstance(choice, list) else False


def _keys(done: pd.DataFrame, spec: SweepSpec) -> tuple[dict[str, list], list[str]]:
    """({key: its value in each finished trial} of the keys fANOVA can assess, notes on the others)."""
    keys, notes = {}, []
    for key, param in spec.space.items():
        if param.same_as:  # a copy of another key
            continue
        column = done.get(f"config/{key}", pd.Series([None] * len(done), index=done.index))
        values = [_choice(v, param) for v in column]
        if any(v is None for v in values):
            notes.append(f"{key} is not in every finished trial (a `when` condition): fANOVA leaves it out")
        elif len(set(values)) < 2:
            notes.append(f"{key} has the same value in every finished trial: nothing to assess")
        else:
            keys[key] = values
    return keys, notes


def study_of(done: pd.DataFrame, spec: SweepSpec, keys: dict[str, list]) -> optuna.Study:
    """The finished trials as an in-memory study: the keys' values and the objectives'."""
    s = spec.search
    study = optuna.create_study(directions=["maximize" if m == "max" else "minimize" for m in s.modes])
    distributions = {key: distribution(spec.space[key]) for key in keys}
    objectives = done[[f"final/{m}" for m in s.metrics]].to_numpy(dtype=float)
    study.add_trials([optuna.trial.create_trial(
        params={key: values[i] for key, values in keys.items()}, distributions=distributions,
        values=objectives[i].tolist()) for i in range(len(done))])
    return study


def param_importance(frame: pd.DataFrame, spec: SweepSpec) -> Importance:
    """Each objective's importance of each searched key over the finished trials (module docstring)."""
    s = spec.search
    done = finished_on(frame, [f"final/{m}" for m in s.metrics])
    empty = pd.DataFrame(columns=COLUMNS)
    if len(done) < MIN_TRIALS:
        return Importance(empty, [f"parameter importance needs {MIN_TRIALS} finished trials with every objective; "
                                  f"there are {len(done)}"])
    keys, notes = _keys(done, spec)
    if not keys:
        return Importance(empty, notes)
    study = study_of(done, spec, keys)
    rows = []
    for i, metric in enumerate(s.metrics):
        if done[f"final/{metric}"].nunique() < 2:
            notes.append(f"{metric} is the same in every finished trial: nothing to apportion")
            continue
        shares = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=s.seed),
                                       params=list(keys), target=lambda t, i=i: t.values[i])
        rows += [{"objective": metric, "param": key, "importance": float(share), "evaluator": EVALUATOR,
                  "trials": len(done)} for key, share in shares.items()]
    return Importance(pd.DataFrame(rows, columns=COLUMNS) if rows else empty, notes)


def importance_metrics(table: pd.DataFrame) -> dict[str, float]:
    """The table as MLflow metrics, importance.<objective>.<key>."""
    return {f"importance.{row['objective']}.{row['param']}": float(row["importance"]) for _, row in table.iterrows()}
