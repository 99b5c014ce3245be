"""The sweep spec: a training config (data, model, train) plus space, search, resources, tracking, storage.

Everything is checked before anything starts; every problem is a ConfigError whose message is one
line naming the field and what is allowed. The models share the config's strict base and types: a
count refuses true and 'many', an unknown key is named with the allowed ones.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from ..config import (
    SECTIONS,
    Bool,
    ConfigError,
    Count,
    Float,
    Int,
    Positive,
    RunConfig,
    Schema,
    Setting,
    Str,
    apply_overrides,
    at_least,
    read_yaml,
    rule,
    run_config_from_dict,
    set_path,
)

RUN_SECTIONS = tuple(SECTIONS)  # data, model, train
PROFILE = Setting("--profile", key="profile")  # else the first profile the spec lists
Mode = Literal["min", "max"]
Finite = Annotated[Float, rule(math.isfinite, "must be a finite number")]


class ParamSpec(Schema):
    """One searched config key.

    type int / float: low..high (step, log); categorical: a list of values; preset: named bundles of
    config values, {name: {key: value}}. `when` samples the key only when other keys have one of the
    given values; `max_from` caps the upper bound by another key's value; `same_as` copies another
    key's value instead of sampling.
    """

    type: Literal["int", "float", "categorical", "preset"] | None = None
    low: Float | None = None
    high: Float | None = None
    step: Float | None = None
    log: Bool = False
    values: list[Any] | dict[Str, dict[Str, Any]] | None = None
    when: dict[Str, list[Any]] | None = None
    max_from: Str | None = None
    same_as: Str | None = None

    @model_validator(mode="after")
    def _shape(self) -> ParamSpec:
        if self.same_as is not None:
            if self.type is not None or self.values is not None or self.low is not None:
                raise ValueError("same_as copies another key: give it alone")
        elif self.type is None:
            raise ValueError("needs a type: int, float, categorical or preset (or same_as: KEY)")
        elif self.type in ("int", "float"):
            self._check_range()
        else:
            self._check_values()
        return self

    def _check_range(self) -> None:
        """type int or float: low..high, with a step or on a log scale."""
        if self.low is None or self.high is None:
            raise ValueError(f"type {self.type} needs low and high")
        if self.low > self.high:
            raise ValueError(f"empty range: low {self.low:g} > high {self.high:g}")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        if self.step is not None and self.step <= 0:
            raise ValueError("step must be > 0")
        if self.type == "int" and any(v is not None and not v.is_integer() for v in (self.low, self.high, self.step)):
            raise ValueError("type int needs integer low, high and step")
        if self.values is not None:
            raise ValueError(f"type {self.type} takes low/high, not values")

    def _check_values(self) -> None:
        """type categorical or preset: a non-empty list, or named bundles."""
        if not self.values:
            raise ValueError(f"type {self.type} needs a non-empty list of values")
        if self.type == "preset" and not isinstance(self.values, dict):
            raise ValueError("type preset needs values as {name: {config.key: value}}")
        if self.type == "categorical" and not isinstance(self.values, list):
            raise ValueError("type categorical needs values as a list")
        if self.low is not None or self.high is not None or self.step is not None or self.log:
            raise ValueError(f"type {self.type} takes values, not low/high/step/log")

    def depends_on(self) -> list[str]:
        keys = list(self.when or {})
        keys += [k for k in (self.max_from, self.same_as) if k]
        return keys


class SearchSpec(Schema):
    section: ClassVar[str] = "search"

    algorithm: Literal["tpe", "gp", "cmaes", "random", "grid"] = "tpe"
    metric: Str | list[Str] = "log_likelihood"
    mode: Mode | list[Mode] = "max"
    num_trials: Count = 8
    max_concurrent: Count = 2
    seed: Int = 0
    warm_start: list[dict[Str, Any]] = Field(default_factory=list)
    scheduler: Literal["asha", "fifo", "pbt"] = "asha"
    grace_period: Count = 1  # asha: epochs before a trial may be stopped (at most train.epochs)
    # asha: 1/reduction_factor of the trials go on at each rung
    reduction_factor: Annotated[Float, rule(lambda v: v >= 2, "must be >= 2")] = 2.0
    n_startup_trials: Count = 4  # tpe, gp, cmaes: random trials before the model-based ones
    perturbation_interval: Count = 2  # pbt: epochs between exploit-and-explore steps
    mutate: list[Str] = Field(default_factory=list)  # pbt: the searched keys it may change
    replicates: Count = 1  # each trial's config trained under this many seeds, fused; reports their mean
    fuse: Bool = False  # grid: the points that share the network's shapes trained as one fused trial
    # several objectives: the reference point of the front's hypervolume, one value per objective in its
    # own units (default: the worst finished value of each)
    hypervolume_reference: list[Finite] | None = None

    @field_validator("fuse")
    @classmethod
    def _fusable(cls, fuse: bool, info) -> bool:
        s = info.data
        if fuse and s.get("algorithm") != "grid":
            raise ValueError(f"needs search.algorithm grid (the points to fuse are known before the sweep), "
                             f"got {s.get('algorithm')}")
        if fuse and s.get("scheduler") != "fifo":
            raise ValueError(f"fused points train to their end together: needs search.scheduler fifo, "
                             f"got {s.get('scheduler')}")
        if fuse and s.get("replicates", 1) > 1:
            raise ValueError("fuses a grid's points, while replicates fuses a trial's seeds: use one of them")
        return fuse

    @property
    def metrics(self) -> list[str]:
        return [self.metric] if isinstance(self.metric, str) else list(self.metric)

    @property
    def modes(self) -> list[str]:
        return [self.mode] if isinstance(self.mode, str) else list(self.mode)

    @property
    def multi_objective(self) -> bool:
        return len(self.metrics) > 1


class ResourcesSpec(Schema):
    section: ClassVar[str] = "resources"

    cpus_per_trial: Positive = 1.0
    gpus_per_trial: Annotated[Float, at_least(0)] = 0.0
    reuse_actors: Bool = True  # a finished trial's worker process runs the next trial (no new process)

    @field_validator("gpus_per_trial")
    @classmethod
    def _whole_above_one(cls, value: float) -> float:
        if value > 1 and not float(value).is_integer():
            raise ValueError("above 1 it must be a whole number of GPUs")
        return value


class TrackingSpec(Schema):
    """MLflow: the store's URI (--tracking-uri and $MLFLOW_TRACKING_URI win over it; default
    sqlite:///<results>/mlflow.db), the experiment (default: the sweep's name), and where a new
    experiment keeps its artifacts (default: <results>/mlartifacts for SQLite, the server's choice
    for an http:// server)."""

    section: ClassVar[str] = "tracking"

    enabled: Bool = True
    uri: Str | None = None
    experiment: Str | None = None
    artifact_location: Str | None = None


class StorageSpec(Schema):
    """Where Ray keeps trial results and checkpoints: the sweep's folder under the results directory
    (None), a folder, or an object store URI (s3://, gs://, abfss://...). On a cluster of several
    nodes every node must reach it: an object store URI, or a folder mounted at the same path on
    every node, declared with shared: true."""

    section: ClassVar[str] = "storage"

    path: Str | None = None
    shared: Bool = False
    keep_checkpoints: Count = 2

    @field_validator("shared")
    @classmethod
    def _shared_needs_a_folder(cls, value: bool, info) -> bool:
        path = info.data.get("path")
        if value and not path:
            raise ValueError("true needs storage.path, the folder every node mounts")
        if value and "://" in path and not path.startswith("file://"):
            raise ValueError(f"{path} is an object store URI, which every node reads already; "
                             "shared is for a filesystem path: remove it")
        return value


Baseline = Str | dict[Str, dict[Str, Any]]  # a preset's name, a config file, or {name: {config.key: value}}


class ConfirmSpec(Schema):
    """After the search, its best configs (the top `top` by the objective, or up to `top` of the
    Pareto front) and the baselines retrained under `seeds` new seeds (tvae-sweep confirm)."""

    section: ClassVar[str] = "confirm"

    top: Count = 3
    seeds: Annotated[Int, at_least(2)] = 3  # an interval needs two
    baselines: list[Baseline] = Field(default_factory=list)


class SweepSpec(Schema):
    name: Str | None = None
    profile: Str | None = None  # the profile the spec was resolved with (see select_profile)
    data: dict[Str, Any] = Field(default_factory=dict)
    model: dict[Str, Any] = Field(default_factory=dict)
    train: dict[Str, Any] = Field(default_factory=dict)
    space: dict[Str, ParamSpec] = Field(default_factory=dict)
    search: SearchSpec = Field(default_factory=SearchSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    baseline: Str | None = None  # the preset the others are compared with, seed by seed
    confirm: ConfirmSpec | None = None  # launch retrains the best configs under new seeds after the search
    _run: RunConfig = PrivateAttr()

    @model_validator(mode="after")
    def _parse_run(self) -> SweepSpec:
        self._run = run_config_from_dict(self.base_dict())
        return self

    @field_validator("baseline")
    @classmethod
    def _a_preset(cls, name: str | None, info) -> str | None:
        """The baseline names a preset of the space's first preset key (the models compared)."""
        if name is None:
            return name
        presets = next((p for p in (info.data.get("space") or {}).values() if p.type == "preset"), None)
        if presets is None:
            raise ValueError("needs a preset key in space: the baseline names one of its presets")
        if name not in presets.values:
            raise ValueError(f"{name!r} is not a preset; the space's presets: {', '.join(presets.values)}")
        return name

    @property
    def run(self) -> RunConfig:
        """The base config: data, model and train parsed once, defaults filled in."""
        return self._run

    def base_dict(self) -> dict[str, Any]:
        """data, model and train as the spec gives them, which a trial's sampled values overlay."""
        return {s: dict(getattr(self, s)) for s in RUN_SECTIONS}


def select_profile(raw: dict, profile: str | None = None) -> dict:
    """The spec with one of its profiles applied, and the profiles section removed.

    A spec may carry `profiles: {NAME: {section.key: value}}`, e.g. a `cpu` size and the paper's
    `full` size. The profile is `profile` (--profile), else the spec's `profile` key, else the first
    one listed; the result records it under `profile`. --set overrides apply after it.
    """
    profiles = raw.get("profiles")
    if profiles is None:
        if profile:
            raise ConfigError(f"--profile {profile}: the spec has no profiles section")
        return raw
    if not isinstance(profiles, dict) or not profiles or not all(isinstance(p, dict) for p in profiles.values()):
        raise ConfigError("profiles: must map each profile name to {section.key: value}")
    name = PROFILE.pick(profile, raw.get("profile"), next(iter(profiles)))[0]
    if name not in profiles:
        raise ConfigError(f"profile {name!r}: no such profile; the spec has: {', '.join(profiles)}")
    out = {k: v for k, v in raw.items() if k != "profiles"}
    for key, value in profiles[name].items():
        set_path(out, str(key).split("."), value, f"profiles.{name}.{key}")
    out["profile"] = name
    return out


def read_spec(path: str | Path, overrides: list[str] = (), profile: str | None = None) -> dict:
    """The raw spec of a file, with its profile and then the --set overrides applied."""
    raw = read_yaml(path)
    if not raw:
        raise ConfigError(f"{path}: the spec is empty; a spec is a config (data, model, train) and the "
                          "space to search (search_spaces/smoke.yaml is a small one)")
    return apply_overrides(select_profile(raw, profile), list(overrides))
