"""The search space as an Optuna define-by-run function, and the samplers.

A trial's config is the spec's base config with the sampled keys set (a preset key holds the name
of the preset sampled, beside the keys its bundle sets). Keys are sampled in an order
where every key comes after the keys it refers to (`when`, `max_from`, `same_as`), so a condition
always sees the value it depends on, and every sampled config is valid by construction: the space
is sampled in a dry run before a sweep starts, and an impossible combination is refused then.
"""
from __future__ import annotations

import itertools
import warnings
from typing import Any

import optuna

from ..compat import order_grid
from ..config import ConfigError, RunConfig, run_config_from_dict
from .spec import RUN_SECTIONS, ParamSpec, SweepSpec

DRY_RUN_SAMPLES = 64


def sampling_order(space: dict[str, ParamSpec]) -> list[str]:
    """Searched keys, each after the searched keys it depends on, depth first in the space's order.

    This is the order Optuna draws the keys in, so it is part of every seeded sweep's trials:
    graphlib's order (every key without dependencies first) would change them."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(key: str) -> None:
        if key in order:
            return
        if key in visiting:
            raise ConfigError(f"space.{key}: its conditions refer back to itself (a cycle)")
        visiting.add(key)
        for dep in space[key].depends_on():
            if dep in space:
                visit(dep)
        visiting.discard(key)
        order.append(key)

    for key in space:
        visit(key)
    return order


def lookup(key: str, values: dict[str, Any], base: dict[str, Any]) -> Any:
    """A config value: sampled if it was, else the base config's."""
    if key in values:
        return values[key]
    section, _, field = key.partition(".")
    return base.get(section, {}).get(field)


def trial_run_config(base: dict[str, Any], config: dict[str, Any]) -> RunConfig:
    """The RunConfig of one trial: base config with the trial's dotted keys set."""
    raw = {s: dict(base.get(s) or {}) for s in RUN_SECTIONS}
    for key, value in config.items():
        section, _, field = key.partition(".")
        if section in RUN_SECTIONS and field:
            raw[section][field] = value
    return run_config_from_dict(raw)


class DefineByRun:
    """Optuna define-by-run space (a class, so Ray can pickle it with the searcher's state)."""

    def __init__(self, space: dict[str, ParamSpec], resolved_base: dict[str, Any]):
        self.space = space
        self.base = resolved_base  # the base config with defaults filled in, for lookups
        self.order = sampling_order(space)

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for key in self.order:
            p = self.space[key]
            if p.same_as:
                values[key] = lookup(p.same_as, values, self.base)
                continue
            if p.when and any(lookup(k, values, self.base) not in allowed for k, allowed in p.when.items()):
                continue
            if p.type == "int":
                high = int(p.high)
                if p.max_from:
                    high = min(high, int(lookup(p.max_from, values, self.base)))
                values[key] = trial.suggest_int(key, int(p.low), high, step=int(p.step or 1), log=p.log)
            elif p.type == "float":
                values[key] = trial.suggest_float(key, p.low, p.high, step=p.step, log=p.log)
            elif p.type == "categorical":
                values[key] = trial.suggest_categorical(key, p.values)
            else:  # preset: a named bundle of config values, its name recorded under the key
                name = trial.suggest_categorical(key, list(p.values))
                values[key] = name
                values.update(p.values[name])
        return values


def grid_points(space: dict[str, ParamSpec]) -> dict[str, list[Any]]:
    """The finite values of each key, for a grid search."""
    grid: dict[str, list[Any]] = {}
    for key, p in space.items():
        if p.same_as:
            continue
        if p.type == "int":
            grid[key] = list(range(int(p.low), int(p.high) + 1, int(p.step or 1)))
        elif p.type == "float":
            n = int(round((p.high - p.low) / p.step))
            grid[key] = [p.low + i * p.step for i in range(n + 1)]
        elif p.type == "categorical":
            grid[key] = list(p.values)
        else:
            grid[key] = list(p.values)
    return grid


def grid_size(space: dict[str, ParamSpec]) -> int:
    size = 1
    for values in grid_points(space).values():
        size *= len(values)
    return size


def make_sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    """An explicit, seeded sampler (Optuna's defaults change between releases)."""
    s = spec.search
    if s.algorithm == "tpe":
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # `group`
        return optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=s.n_startup_trials,
                                          multivariate=True, group=True, constant_liar=True)
    if s.algorithm == "gp":
        return optuna.samplers.GPSampler(seed=s.seed, n_startup_trials=s.n_startup_trials)
    if s.algorithm == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=s.seed, n_startup_trials=s.n_startup_trials)
    if s.algorithm == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    grid = optuna.samplers.GridSampler(grid_points(spec.space), seed=s.seed)
    define, base = define_by_run(spec), spec.base_dict()
    order_grid(grid, lambda params: -config_cost(base, define(optuna.trial.FixedTrial(params))))
    return grid


def trial_cost(cfg: RunConfig) -> int:
    """A trial's cost relative to another's: its epochs at epoch_cost. A grid trains its costliest
    points first (longest processing time first), so its slots end together rather than one slot
    training the two largest points one after the other at the end."""
    return epoch_cost(cfg) * cfg.train.epochs


def config_cost(base: dict[str, Any], config: dict[str, Any]) -> int:
    """trial_cost of a trial's config (its dotted keys) over the sweep's base config."""
    return trial_cost(trial_run_config(base, config))


def epoch_cost(cfg: RunConfig) -> int:
    """An epoch's cost relative to another's: its sequences, an epoch's cost growing with the latent
    units (n_caps x cap_dim; on 2 cores 1.6 s at 36 units, 9.9 s at 324)."""
    return cfg.model.n_caps * cfg.model.cap_dim * cfg.data.train_sequences


def num_trials(spec: SweepSpec) -> int:
    """A grid runs each point once; other searches run search.num_trials."""
    return grid_size(spec.space) if spec.search.algorithm == "grid" else spec.search.num_trials


def define_by_run(spec: SweepSpec) -> DefineByRun:
    return DefineByRun(spec.space, spec.run.to_dict())


def check_space(spec: SweepSpec) -> list[RunConfig]:
    """Refuses a space that can produce an invalid config, before anything starts; returns the
    configs it tried (warm starts, a dry run's samples and the space's corners)."""
    for key, p in spec.space.items():
        if p.type == "preset" and "." in key:  # its value, the preset's name, is recorded in the config
            raise ConfigError(f"space.{key}: a preset key is a name of its own, not a config key: "
                              f"use one without '.', e.g. {key.replace('.', '_')}")
    dbr = define_by_run(spec)
    base = spec.base_dict()
    runs = []
    for i, point in enumerate(spec.search.warm_start):
        for key in point:
            if key not in spec.space:
                raise ConfigError(f"search.warm_start[{i}].{key}: not a searched key; "
                                  f"searched: {', '.join(spec.space)}")
        runs.append(_check_config(base, {**point}, f"search.warm_start[{i}]"))
    if not spec.space:
        return runs + [spec.run]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    candidates = [study.ask() for _ in range(DRY_RUN_SAMPLES)]
    for trial in candidates:
        runs.append(_check_config(base, dbr(trial), "space"))
    for corner in _corners(spec):
        runs.append(_check_config(base, dbr(optuna.trial.FixedTrial(corner)), "space"))
    return runs


def _corners(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every combination of each key's extreme values (bounded), where a dry run may miss one."""
    extremes = {}
    for key, p in spec.space.items():
        if p.same_as:
            continue
        if p.type in ("int", "float"):
            extremes[key] = [int(p.low) if p.type == "int" else p.low, int(p.high) if p.type == "int" else p.high]
        else:
            extremes[key] = list(p.values)
    keys = list(extremes)
    combos = itertools.islice(itertools.product(*(extremes[k] for k in keys)), 256)
    corners = [dict(zip(keys, c, strict=True)) for c in combos]
    return [_clip_to_max_from(spec, c) for c in corners]


def _clip_to_max_from(spec: SweepSpec, corner: dict[str, Any]) -> dict[str, Any]:
    """FixedTrial ignores dynamic bounds: apply max_from the way the sampler would."""
    base = spec.run.to_dict()
    values: dict[str, Any] = {}
    for key in sampling_order(spec.space):
        p = spec.space[key]
        if p.same_as:
            values[key] = lookup(p.same_as, values, base)
        elif p.type == "preset":
            values.update(p.values[corner[key]])
        elif key in corner:
            v = corner[key]
            if p.max_from:
                v = min(v, lookup(p.max_from, values, base))
            values[key] = v
    out = dict(corner)
    for key, p in spec.space.items():
        if p.max_from and key in out:
            out[key] = values[key]
    return out


def _check_config(base: dict[str, Any], config: dict[str, Any], where: str) -> RunConfig:
    try:
        return trial_run_config(base, config)
    except ConfigError as e:
        shown = ", ".join(f"{k}={v}" for k, v in config.items() if "." in k)
        raise ConfigError(f"{where}: the combination {shown} is impossible: {e}") from None
