"""A spec checked as a whole before anything starts: its sections, its space and its search.

spec.py declares the schema; this module checks what needs several sections at once, samples the
space in a dry run (space.check_space) and refuses objectives some trial could not report. Every
problem is a ConfigError whose message is one line naming the field and what is allowed.
"""
from __future__ import annotations

from pathlib import Path

from ..config import ConfigError, RunConfig
from ..metrics import reported_metrics
from .confirm import baseline_bundles
from .pbt import check_pbt
from .space import check_space
from .spec import SearchSpec, SweepSpec, read_spec


def config_keys(run: RunConfig) -> set[str]:
    return {f"{section}.{key}" for section, values in run.to_dict().items() for key in values}


def check_objectives(spec: SweepSpec, runs: list[RunConfig]) -> None:
    """Every objective is reported by every trial the space can produce (Tune needs it in each report)."""
    reported = [set(reported_metrics(run)) for run in runs]
    for metric in spec.search.metrics:
        missing = [run for run, names in zip(runs, reported, strict=True) if metric not in names]
        if len(missing) == len(runs):
            raise ConfigError(f"search.metric: no trial reports {metric!r}; reported: "
                              f"{', '.join(sorted(set().union(*reported)))}")
        if missing:
            m, d = missing[0].model, missing[0].data
            raise ConfigError(f"search.metric: trials with model.variant={m.variant}, model.seq_len={m.seq_len} "
                              f"and data.transforms={d.transforms} do not report {metric!r}; "
                              "choose an objective every trial reports")


def check_search(spec: SweepSpec, run: RunConfig) -> None:
    s = spec.search
    if run.train.cuda_graph and spec.resources.gpus_per_trial == 0:
        raise ConfigError("train.cuda_graph: trials run on the CPU (resources.gpus_per_trial is 0); "
                          "give them GPUs or set it false")
    if len(s.metrics) != len(s.modes):
        raise ConfigError(f"search.mode: give one mode per metric ({len(s.metrics)} metrics, {len(s.modes)} modes)")
    if s.scheduler == "pbt":
        check_pbt(spec)
    if s.mutate and s.scheduler != "pbt":
        raise ConfigError("search.mutate: only the pbt scheduler mutates keys; remove it or set scheduler: pbt")
    if s.multi_objective and s.algorithm == "cmaes":
        raise ConfigError("search.algorithm: cmaes has one objective; use tpe, gp or random for a Pareto front")
    if s.replicates > 1 and "train.seed" in searched_keys(spec):
        raise ConfigError("space.train.seed: search.replicates trains each trial under train.seed, train.seed + 1, "
                          "...: searching the seed too gives trials each other's seeds; remove one of them")
    if s.algorithm == "grid":
        for key, p in spec.space.items():
            if p.type in ("float",) and p.step is None:
                raise ConfigError(f"space.{key}: a grid needs finite values: give a step, or use categorical")
            if p.when:
                raise ConfigError(f"space.{key}.when: conditions are not supported in a grid; use a preset")
            if p.log:
                raise ConfigError(f"space.{key}.log: a grid needs finite values: use categorical")


def check_front_reference(s: SearchSpec) -> None:
    """search.hypervolume_reference: one value per objective, of a search with several."""
    reference = s.hypervolume_reference
    if reference is None:
        return
    if not s.multi_objective:
        raise ConfigError("search.hypervolume_reference: the hypervolume is of a front of several objectives; "
                          f"search.metric has one ({s.metrics[0]}): remove it")
    if len(reference) != len(s.metrics):
        raise ConfigError(f"search.hypervolume_reference: give one value per objective ({', '.join(s.metrics)}), "
                          f"got {len(reference)}")


def check_asha(s: SearchSpec, run: RunConfig) -> None:
    """ASHA may stop a trial after grace_period epochs, and its last rung is train.epochs (launch's max_t)."""
    epochs = run.train.epochs
    if s.scheduler == "asha" and s.grace_period > epochs:
        raise ConfigError(f"search.grace_period: {s.grace_period} epochs before ASHA may stop a trial, but trials "
                          f"train for {epochs} (train.epochs); give at most {epochs}")


def searched_keys(spec: SweepSpec) -> set[str]:
    """The config keys the space sets: its keys and those its presets bundle."""
    bundled = {k for p in spec.space.values() if p.type == "preset" for bundle in p.values.values() for k in bundle}
    return set(spec.space) | bundled


def check_space_keys(spec: SweepSpec, run: RunConfig) -> None:
    known = config_keys(run)
    searched = set(spec.space)
    for key, p in spec.space.items():
        if p.type == "preset":
            for name, bundle in p.values.items():
                for k in bundle:
                    if k not in known:
                        raise ConfigError(f"space.{key}.values.{name}.{k}: not a config key")
        elif key not in known:
            raise ConfigError(f"space.{key}: not a config key; use section.field, e.g. model.n_caps")
        for dep in p.depends_on():
            if dep not in known and dep not in searched:
                raise ConfigError(f"space.{key}: refers to {dep}, which is not a config key")


def load_spec(path: str | Path, overrides: list[str] = (), profile: str | None = None) -> SweepSpec:
    """Reads, overrides and checks a spec; raises ConfigError with one line on any problem."""
    spec = spec_from_dict(read_spec(path, overrides, profile))
    check_confirm(spec)
    return spec


def check_confirm(spec: SweepSpec) -> None:
    """The confirmation's baselines are presets of the space, readable config files or valid inline
    configs (checked when a spec is launched, not when a saved sweep is read again)."""
    if spec.confirm is not None:
        baseline_bundles(spec.confirm.baselines, spec, "confirm.baselines")


def spec_from_dict(raw: dict) -> SweepSpec:
    """Parses and checks a raw spec; raises ConfigError with one line on any problem."""
    if not raw.get("space"):
        raise ConfigError("space: the spec searches nothing; give the keys to search, "
                          "or run one config with `tvae-sweep train CONFIG --output DIR`")
    spec = SweepSpec.parse(raw)
    run = spec.run
    check_space_keys(spec, run)
    check_search(spec, run)
    check_asha(spec.search, run)
    check_front_reference(spec.search)
    check_objectives(spec, check_space(spec))
    return spec
