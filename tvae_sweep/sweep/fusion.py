"""search.fuse: the points of a grid that share the network's shapes, trained as one Ray trial.

The grid's points are grouped before the sweep starts (`fused_groups`): points whose data and
training settings are the same (the seed apart) and whose networks have one shape. Each group is
one Ray trial, whose config lists its points; it trains them as one fused model
(one training.Trainer of several members), reports each point's metrics under MEMBERS and keeps each point's
checkpoint and pictures in point_<i>/. Downstream a point is a trial of its own (a TrialRecord,
sweep/records.py): its row in the trials table, its MLflow child run and its Optuna trial.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

import optuna

from ..training import shared_settings
from .space import DefineByRun, config_cost, grid_points, num_trials, trial_run_config
from .spec import SweepSpec

POINTS = "fused_points"  # a fused trial's config: its points' configs (dotted keys), in order
PARAMS = "fused_params"  # and each point's grid values, as Optuna records them
MEMBERS = "members"  # a fused trial's report: each point's report, in order


@dataclass(frozen=True)
class Point:
    params: dict[str, Any]  # the grid's values (a preset's name for a preset key)
    config: dict[str, Any]  # the config keys they set

    @property
    def trial_config(self) -> dict[str, Any]:
        """The point's config as a single trial's: the grid's values and the keys they set."""
        return {**self.params, **self.config}


def grid(spec: SweepSpec) -> list[Point]:
    """Every point of the spec's grid, in the grid's product order."""
    axes = grid_points(spec.space)
    define = DefineByRun(spec.space, spec.run.to_dict())
    points = []
    for values in itertools.product(*axes.values()):
        params = dict(zip(axes, values, strict=True))
        points.append(Point(params, define(optuna.trial.FixedTrial(params))))
    return points


def fused_groups(spec: SweepSpec) -> list[list[Point]]:
    """The grid's points grouped by the settings fused members share, groups in the order of their
    first point (the order `collect` reads a session's group folders in)."""
    base = spec.base_dict()
    groups: dict[str, list[Point]] = {}
    for point in grid(spec):
        shared = shared_settings(trial_run_config(base, point.config))
        groups.setdefault(json.dumps(shared, sort_keys=True), []).append(point)
    return list(groups.values())


def costliest_first(groups: list[list[Point]], spec: SweepSpec) -> list[list[Point]]:
    """The order a grid trains its groups in (a fused grid's, or one point each: the order
    space.make_sampler gives Optuna's grid): the costliest first (space.trial_cost, summed over a
    group's points; equal costs in their order), so the sweep's slots end together."""
    base = spec.base_dict()
    return sorted(groups, key=lambda points: sum(config_cost(base, p.config) for p in points), reverse=True)  # stable


def ray_trials(spec: SweepSpec) -> int:
    """How many Ray trials the sweep runs: a fused grid's groups, else its trials."""
    return len(fused_groups(spec)) if spec.search.fuse else num_trials(spec)


def group_config(points: list[Point]) -> dict[str, Any]:
    return {POINTS: [p.config for p in points], PARAMS: [p.params for p in points]}


def point_folder(index: int) -> str:
    """A point's folder inside each checkpoint of its fused trial."""
    return f"point_{index}"
