"""Launch and resume sweeps: a Ray Tune Tuner with OptunaSearch, a scheduler and our trainable."""
from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.exceptions import AuthenticationError
from ray.tune.logger import JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from ..compat import set_callbacks_of_restored
from ..config import ConfigError, dump_yaml, read_yaml
from ..data import check_sources, load_sources
from ..errors import redact
from .cluster import check_reachable, check_storage, join_error, ray_address
from .console import RayLog, ray_output_to
from .disk import raise_first
from .eta import Eta
from .full_stop import StopWhenFull
from .fusion import costliest_first, fused_groups, grid, ray_trials
from .heap import fix_mmap_threshold
from .layout import SweepDir, storage_location
from .mo_asha import MultiObjectiveAsha
from .pbt import full_points, pbt_param_space, pbt_scheduler, pbt_searcher
from .pruning import CheckpointPruner, prune_finished
from .records import TrialRecord, saved_records
from .results import frame_of
from .rungs import asha_rungs
from .searcher import FusedGridSearch, optuna_search, space_exhausted
from .space import epoch_cost, num_trials, trial_run_config
from .spec import SweepSpec
from .trainable import train_trial
from .validation import spec_from_dict
from .whole_files import whole_files

EXPERIMENT = "tune"  # Ray's experiment folder inside the storage path
MAX_FAILURES = 2


def connect(address: str | None, quiet: bool = True) -> None:
    """Joins the Ray cluster at `address` (or $RAY_ADDRESS), else starts one on this machine.

    A cluster with token authentication (what `ray start --head` starts) accepts this driver only with
    RAY_AUTH_MODE=token and the cluster's token ($RAY_AUTH_TOKEN_PATH, $RAY_AUTH_TOKEN or
    ~/.ray/auth_token) in the environment. An address where nothing listens fails within seconds.
    """

    if ray.is_initialized():
        return
    address, label = ray_address(address)
    kwargs: dict[str, Any] = {"log_to_driver": not quiet, "logging_level": "WARNING"}
    if address is None:
        ray.init(include_dashboard=False, **kwargs)  # a one-machine cluster for this command
        return
    check_reachable(address, label)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, AuthenticationError, RuntimeError) as e:
        raise join_error(address, label, e) from None


def experiment_path(spec: SweepSpec, sweep: SweepDir) -> str:
    storage = storage_location(spec.storage.path, sweep)
    name = EXPERIMENT if not spec.storage.path else sweep.name
    return f"{storage.rstrip('/')}/{name}"


def _trainable(spec: SweepSpec):
    base = spec.base_dict()
    run = spec.run
    sources = load_sources(run.data)  # loaded once here, shared through the object store
    trainable = tune.with_parameters(train_trial, base=base, sources=sources, replicates=spec.search.replicates)
    return tune.with_resources(trainable, {"cpu": spec.resources.cpus_per_trial,
                                           "gpu": spec.resources.gpus_per_trial})


def _searcher(spec: SweepSpec, sweep: SweepDir):
    s = spec.search
    if s.scheduler == "pbt":
        return pbt_searcher(spec)
    if s.fuse:
        groups = costliest_first(fused_groups(spec), spec)
        return FusedGridSearch(groups, s.metrics, s.modes, sweep.name, f"sqlite:///{sweep.optuna_db}")
    return optuna_search(spec, sweep.name, optuna.storages.RDBStorage(f"sqlite:///{sweep.optuna_db}"))


def sweep_eta(spec: SweepSpec, queue: list[list[dict[str, Any]]] | None = None) -> Eta:
    """The sweep's time left: each trial's epoch priced by its config, its trials' configs where
    known in the order Ray creates them (`queue`, by default trial_queue's)."""
    base = spec.base_dict()
    return Eta(num_trials(spec), spec.run.train.epochs, len(spec.search.warm_start),
               cost=lambda config: epoch_cost(trial_run_config(base, config)),
               queue=trial_queue(spec) if queue is None else queue)


def trial_queue(spec: SweepSpec) -> list[list[dict[str, Any]]] | None:
    """The configs of the sweep's Ray trials (a point's each) in the order the searcher creates them,
    where they are known before the sweep: PBT's first population, a grid's (None: a sampler's)."""
    s = spec.search
    if s.scheduler == "pbt":
        return [[point] for point in full_points(spec)]
    if s.algorithm != "grid":
        return None
    groups = fused_groups(spec) if s.fuse else [[point] for point in grid(spec)]  # a grid's costliest first
    return [[p.trial_config for p in points] for points in costliest_first(groups, spec)]


def _scheduler(spec: SweepSpec, sweep: SweepDir | None = None):
    """Ray's scheduler of the spec; multi-objective ASHA keeps its rungs in the sweep's folder."""
    s = spec.search
    if s.scheduler == "pbt":
        return pbt_scheduler(spec)
    if s.scheduler == "asha" and s.multi_objective:
        return MultiObjectiveAsha(s.metrics, s.modes, asha_rungs(spec), sweep.rungs if sweep else None)
    if s.scheduler == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=spec.run.train.epochs,
                             grace_period=s.grace_period, reduction_factor=s.reduction_factor)
    return FIFOScheduler()


def storage_filesystem(storage: str):
    """Files written whole or not at all on a folder (a full disk leaves the last saved state, not a
    truncated one); an object store's own filesystem for a URI."""
    return None if "://" in storage else whole_files()


def _run_config(spec: SweepSpec, sweep: SweepDir, callbacks: list):
    storage = storage_location(spec.storage.path, sweep)
    return tune.RunConfig(
        name=EXPERIMENT if not spec.storage.path else sweep.name,
        storage_path=storage,
        storage_filesystem=storage_filesystem(storage),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.storage.keep_checkpoints),
        failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
        callbacks=callbacks,
        verbose=0,
    )


def check_new(sweep: SweepDir, overwrite: bool) -> None:
    """Refuses to replace an existing sweep unless told to."""
    if sweep.root.exists() and any(sweep.root.iterdir()) and not overwrite:
        raise FileExistsError(f"a sweep named {sweep.name!r} exists in {sweep.root.parent}: "
                              f"`tvae-sweep resume {sweep.name}` continues it, or pass --overwrite")


def check_results_folder(root: Path) -> None:
    """Refuses a results folder that cannot be made or written, without making it."""
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"results folder {root}: cannot be created: {existing} is a file, not a folder; "
                          "pass another --results-dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"results folder {root}: {existing} is not writable; pass another --results-dir")


def preflight(spec: SweepSpec, sweep: SweepDir, address: str | None) -> None:
    """What a sweep needs before Ray starts and before anything is written: a results folder it can
    write, the data its trials read, and a cluster address where something listens."""

    check_results_folder(sweep.root.parent)
    check_reachable(*ray_address(address))
    check_sources(spec.run.data)


def join(spec: SweepSpec, sweep: SweepDir, address: str | None, log: RayLog) -> None:
    """Connects to Ray (its start-up messages into `log`) and checks that every node can reach the
    sweep's storage."""
    with ray_output_to(log):
        connect(address)
    check_storage(spec, sweep)


def create(spec: SweepSpec, sweep: SweepDir, raw_spec: dict, overwrite: bool) -> None:
    """Makes results/<name>/ (replacing an existing sweep only when told to)."""
    check_new(sweep, overwrite)
    if sweep.root.exists():
        shutil.rmtree(sweep.root)
    sweep.root.mkdir(parents=True, exist_ok=True)
    dump_yaml(without_passwords(raw_spec), sweep.spec)
    sweep.write_state(name=sweep.name, status="created", created=time.time(),
                      experiment_path=experiment_path(spec, sweep), num_trials=num_trials(spec),
                      ray_trials=ray_trials(spec))


def without_passwords(raw_spec: dict) -> dict:
    """The spec as saved with the sweep: its tracking URIs without their passwords (a resume is given
    the full URI again by --tracking-uri or $MLFLOW_TRACKING_URI)."""
    tracking = raw_spec.get("tracking")
    if not isinstance(tracking, dict):
        return raw_spec
    return {**raw_spec, "tracking": {k: redact(v) if isinstance(v, str) else v for k, v in tracking.items()}}


def fit(spec: SweepSpec, sweep: SweepDir, address: str | None, resume: bool, callbacks: list,
        log: RayLog) -> tuple[str, list[TrialRecord]]:
    """Runs (or resumes) the sweep to its end on the cluster `join` connected to, Ray's own console
    output in the sweep's ray.log; returns the final status and the trials as Ray saved them."""

    # Ray's own loggers: only result.json, which resume and the failure tests read (no TensorBoard
    # events, no progress.csv: the trials table and MLflow hold the metrics)
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    # a trial's reports before its first evaluation (train.eval_every > 1) hold no objective yet;
    # the scheduler and the searcher wait for one
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    fix_mmap_threshold()  # a long sweep's driver does not grow by a heap of freed blocks (sweep/heap.py)
    state = sweep.read_state()
    path = state["experiment_path"]
    callbacks = [*callbacks, JsonLoggerCallback(), CheckpointPruner(), StopWhenFull()]
    trainable = _trainable(spec)
    sweep.write_state(status="running", address=ray_address(address)[0], pid=os.getpid())
    if resume and tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True,
                                   storage_filesystem=storage_filesystem(path))
        set_callbacks_of_restored(tuner, callbacks)  # this driver's, not the pickled ones
    else:
        s = spec.search
        single = not s.multi_objective
        param_space = {}
        if s.scheduler == "pbt":
            param_space = pbt_param_space(spec)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                search_alg=_searcher(spec, sweep), scheduler=_scheduler(spec, sweep),
                num_samples=ray_trials(spec), max_concurrent_trials=s.max_concurrent,
                metric=s.metrics[0] if single and not s.fuse else None,
                mode=s.modes[0] if single and not s.fuse else None,  # a fused trial reports per point
                reuse_actors=spec.resources.reuse_actors,
                trial_dirname_creator=fused_trial_folder if s.fuse else None,
            ),
            run_config=_run_config(spec, sweep, callbacks),
        )
    random.seed(spec.search.seed)  # PBT's explore step draws from Python's random
    log.attach(sweep.root)
    with ray_output_to(log):
        grid = tuner.fit()
    raise_first(r.error for r in grid)  # trials that failed for a full disk: the sweep stops, resumable
    failed = sum(1 for r in grid if r.error is not None)
    records = saved_records(path, asha_rungs(spec), histories=True)  # the experiment, read once
    unfinished = sum(1 for r in records if not r.finished)
    exhausted = space_exhausted(sweep.name, sweep.optuna_db)  # the searcher ended it early
    ended = (len(grid) >= state.get("ray_trials", state["num_trials"]) or exhausted) and not unfinished
    status = "finished" if ended else "interrupted"
    if status == "finished":  # an interrupted sweep's trials read as ended, but resume continues them
        prune_finished(records)
    sweep.write_state(status=status, trials=len(grid), failed=failed, exhausted=exhausted)
    return status, records


def fused_trial_folder(trial) -> str:
    """A fused trial's folder: its id (Ray's default name lists every point's config)."""
    return f"fused_{trial.trial_id}"


def saved_trial_records(sweep: SweepDir, histories: bool = False) -> list[TrialRecord]:
    """The records of the sweep's trials as Ray saved them (each with its history where `histories`);
    a one-line error when Ray saved none yet."""
    path = sweep.read_state()["experiment_path"]
    if not tune.Tuner.can_restore(path):
        raise ConfigError(f"sweep {sweep.name} has no trials saved in {path} yet (Ray saves them once its first "
                          f"trial starts); if its launch stopped, `tvae-sweep resume {sweep.name}` runs them")
    return saved_records(path, asha_rungs(load_saved_spec(sweep)), histories)


def saved_trials(sweep: SweepDir):
    """Ray's trials table of the sweep (results.frame_of its saved records)."""
    return frame_of(saved_trial_records(sweep))


def check_stopped(sweep: SweepDir) -> None:
    """Refuses a sweep whose driver is still running on this machine."""
    state = sweep.read_state()
    pid = state.get("pid")
    if state.get("status") == "running" and pid and _alive(int(pid)):
        raise ConfigError(f"sweep {sweep.name} is running (driver pid {pid}); wait for it to stop, or stop it first")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load_saved_spec(sweep: SweepDir) -> SweepSpec:
    sweep.read_state()
    if not sweep.spec.is_file():
        raise FileNotFoundError(f"{sweep.spec}: the sweep's spec is missing; it cannot be resumed")
    return spec_from_dict(read_yaml(sweep.spec))
