"""Population based training: a random first population, then exploit-and-explore of some keys.

PBT replaces the search: Tune's PBT refuses a search algorithm, so the first population is drawn
by the same define-by-run space with a seeded random sampler, and Tune runs it as fixed points.
Only keys that keep the network's shapes may be mutated: a trial continues from the checkpoint of
a better one, with the mutated values applied on top (the config decides hyperparameters, the
checkpoint the state).
"""
from __future__ import annotations

from typing import Any

import optuna
from ray import tune
from ray.tune.schedulers import PopulationBasedTraining
from ray.tune.search import BasicVariantGenerator

from ..config import SHAPE_KEYS, ConfigError
from .space import define_by_run, grid_points, lookup
from .spec import ParamSpec, SweepSpec


def check_pbt(spec: SweepSpec) -> None:
    s = spec.search
    if s.algorithm != "random":
        raise ConfigError("search.algorithm: pbt draws its first population at random; set algorithm: random")
    if s.multi_objective:
        raise ConfigError("search.scheduler: pbt ranks trials by one metric; give a single search.metric")
    if not s.mutate:
        raise ConfigError("search.mutate: pbt needs the searched keys it may change, e.g. [train.lr]")
    for key in s.mutate:
        p = spec.space.get(key)
        if p is None:
            raise ConfigError(f"search.mutate: {key} is not a searched key; searched: {', '.join(spec.space)}")
        section, _, field = key.partition(".")
        if section == "data" or (section == "model" and field in SHAPE_KEYS):
            raise ConfigError(f"search.mutate: {key} changes the network or its data; a checkpoint cannot carry over")
        if p.type == "preset" or p.same_as or p.when:
            raise ConfigError(f"search.mutate: {key} must be a plain int, float or categorical key")
    every = spec.run.train.eval_every  # PBT compares the trials by the objective at each perturbation
    if s.perturbation_interval % every:
        raise ConfigError(f"search.perturbation_interval: PBT compares trials every {s.perturbation_interval} epochs, "
                          f"but they evaluate the objective every {every} (train.eval_every); "
                          f"give a multiple of {every}")


def initial_population(spec: SweepSpec) -> list[dict[str, Any]]:
    """num_trials configs drawn by the define-by-run space with a seeded random sampler."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=spec.search.seed))
    dbr = define_by_run(spec)
    points = [dict(p) for p in spec.search.warm_start]
    while len(points) < spec.search.num_trials:
        points.append(dbr(study.ask()))
    return points[: spec.search.num_trials]


def mutation(p: ParamSpec):
    if p.type == "float":
        return tune.loguniform(p.low, p.high) if p.log else tune.uniform(p.low, p.high)
    if p.type == "int":
        return grid_points({"k": p})["k"]  # a list: PBT steps left or right within it
    return list(p.values)


class ClipToSpace:
    """PBT's explore step scales numbers freely; bring every mutated value back into the space."""

    def __init__(self, spec: SweepSpec):
        self.space = {k: spec.space[k] for k in spec.search.mutate}
        self.base = spec.run.to_dict()

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        for key, p in self.space.items():
            if p.type not in ("int", "float") or key not in config:
                continue
            high = p.high
            if p.max_from:
                high = min(high, lookup(p.max_from, config, self.base))
            value = min(max(config[key], p.low), high)
            config[key] = int(round(value)) if p.type == "int" else float(value)
        return config


def pbt_scheduler(spec: SweepSpec):
    s = spec.search
    return PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=s.perturbation_interval,
        hyperparam_mutations={k: mutation(spec.space[k]) for k in s.mutate},
        custom_explore_fn=ClipToSpace(spec),
        # every trial waits at each perturbation, so the checkpoint a trial clones is the other's
        # latest and cannot be rotated away by keep_checkpoints before it is read
        synch=True,
        require_attrs=False,  # a report before the first evaluation (train.eval_every > 1) has no score
    )


def full_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """The first population with every key named in every point: a key that a condition left out
    holds the base config's value, which is what that trial runs with."""
    points = initial_population(spec)
    keys = sorted({key for point in points for key in point})
    base = spec.run.to_dict()
    return [{key: point[key] if key in point else lookup(key, {}, base) for key in keys} for point in points]


def pbt_searcher(spec: SweepSpec):
    return BasicVariantGenerator(points_to_evaluate=full_points(spec))


def pbt_param_space(spec: SweepSpec) -> dict[str, Any]:
    """Tune resolves fixed points against a param space that names their keys: one that holds
    their values. As every point names every key, Tune has nothing left to sample."""
    values: dict[str, list] = {}
    for point in full_points(spec):
        for key, value in point.items():
            if value not in values.setdefault(key, []):
                values[key].append(value)
    return {key: tune.choice(v) for key, v in values.items()}
