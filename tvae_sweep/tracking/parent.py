"""The sweep's parent run: opened (or found again) before the first trial, the aggregates logged on
it as trials finish, and its status settled when the sweep stops."""
from __future__ import annotations

import json
import time
from collections.abc import Callable

import pandas as pd
from mlflow.exceptions import MlflowException

from ..config import ConfigError
from ..sweep.layout import SweepDir, origin_of
from ..sweep.space import num_trials
from ..sweep.spec import SweepSpec
from . import confirmation, publish
from . import store as stores
from .runs import ERROR, FAILED, FINISHED, KILLED, NOTE, SweepRuns, launch_id
from .writer import Writer, first_line


def parent_params(spec: SweepSpec) -> dict[str, str]:
    """The searched axes and the search settings."""
    params = {f"space.{key}": json.dumps(p.model_dump(exclude_none=True, exclude_defaults=True))
              for key, p in spec.space.items()}
    for section in ("search", "resources"):
        for key, value in getattr(spec, section).model_dump().items():
            params[f"{section}.{key}"] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    params["num_trials"] = str(num_trials(spec))
    return params


def parent_tags(spec: SweepSpec, sweep: SweepDir) -> dict[str, str]:
    state = sweep.read_state()
    s = spec.search
    searched = ", ".join(spec.space) or "the base config"
    objectives = ", ".join(f"{m} ({d})" for m, d in zip(s.metrics, s.modes, strict=True))
    note = (f"Sweep **{sweep.name}**: {num_trials(spec)} trials of {searched} by {s.algorithm} "
            f"with {s.scheduler}, optimising {objectives}. "
            f"Results in `{sweep.root}`, Ray experiment `{state.get('experiment_path')}`.")
    return {"tvae_sweep.experiment_path": str(state.get("experiment_path")),
            "tvae_sweep.results": str(sweep.root), NOTE: note}


class ParentRun:
    def __init__(self, runs: SweepRuns, spec: SweepSpec, sweep: SweepDir, figure_interval: float = 300.0):
        self.runs, self.spec, self.sweep = runs, spec, sweep
        # during a sweep the figures are redrawn at most this often: drawing them takes the tracking
        # thread seconds of the driver's CPU, which the trials share (the tables take milliseconds)
        self.figure_interval = figure_interval
        self.step = 0  # the finished trials last logged on the parent
        self.last_figures = 0.0

    @classmethod
    def open(cls, store: stores.Store, experiment: str, spec: SweepSpec, sweep: SweepDir,
             saved_trials: Callable[[], set[str]], writer: Writer, figure_interval: float = 300.0) -> ParentRun:
        """Opens the sweep's parent run in `store`, finding it again if the sweep ran before (then the
        runs of trials missing from `saved_trials`, Ray's saved trial ids, are discarded); a store
        that cannot be used is a one-line error."""
        stores.check(store)
        try:
            client = stores.client(store)
            experiment_id = stores.experiment_id(client, experiment, store.artifact_root)
            runs = SweepRuns(client, experiment_id, sweep.name, launch_id(sweep))
            created = runs.open_parent(sweep.name, parent_tags(spec, sweep), parent_params(spec),
                                       [sweep.spec] if sweep.spec.is_file() else [])
        except (MlflowException, OSError) as e:
            reason = stores.redact(first_line(str(e))) or type(e).__name__
            raise ConfigError(f"tracking store {store.describe()}: {reason}") from None
        parent = cls(runs, spec, sweep, figure_interval)
        if not created:
            history = client.get_metric_history(runs.parent_id, "finished_trials")
            parent.step = max((m.step for m in history), default=0)
            parent.discard_lost_trials(saved_trials, writer)
        return parent

    @property
    def run_id(self) -> str:
        return self.runs.parent_id

    def discard_lost_trials(self, saved_trials: Callable[[], set[str]], writer: Writer) -> None:
        """Deletes the runs of trials missing from Ray's saved experiment: their driver was killed
        before Ray saved them, and the resume replaces them with new trials."""
        try:
            saved = saved_trials()
        except Exception as e:  # unreadable now: keep every run rather than guess
            writer.warn("reading Ray's saved trials", e)
            return
        for run in self.runs.children():
            if run.data.tags.get("tvae_sweep.trial_id") not in saved:
                self.runs.discard(run, "its driver was killed before Ray saved this trial, "
                                       "so the resumed sweep replaced it with a new trial")

    def publish(self, frame: pd.DataFrame, final: bool, histories: publish.Histories | None = None) -> None:
        """Aggregated tables to the results folder and the parent run after every finished trial;
        figures at the end and during the sweep at most every figure_interval seconds; the learning
        curves where the trials' `histories` are given (at the end)."""
        draw = final or time.monotonic() - self.last_figures >= self.figure_interval
        result = publish.compute(frame, self.spec, self.sweep, figures=draw, histories=histories)
        if draw:
            self.last_figures = time.monotonic()
        step = result.finished if result.finished > self.step else None
        publish.log_on_parent(self.runs, result, step)
        if step is not None:
            self.step = step

    def close(self, status: str, error: BaseException | None = None) -> None:
        """FINISHED, KILLED (interrupted), or FAILED with the error that stopped the sweep."""
        if error is not None and not isinstance(error, KeyboardInterrupt):
            self.runs.set_tags(self.run_id, {ERROR: first_line(f"{type(error).__name__}: {error}")})
            self.runs.set_status(self.run_id, FAILED)
        else:
            self.runs.set_status(self.run_id, FINISHED if status == "finished" else KILLED)


# ---------------------------------------------------------------- a later stage: the confirmation


class ConfirmationParent(ParentRun):
    """A finished sweep's parent run, found again for its confirmation (a stage in the sweep's
    folder, sweep/confirm.py): the confirmation's trials are its children tagged with the stage, its
    tables go to the parent under `<stage>/`, and the search's aggregates, metrics and status stay."""

    @classmethod
    def open(cls, store: stores.Store, experiment: str, spec: SweepSpec, sweep: SweepDir,
             saved_trials: Callable[[], set[str]], writer: Writer, figure_interval: float = 300.0) -> ParentRun:
        origin, stage = origin_of(sweep)
        stores.check(store)
        try:
            client = stores.client(store)
            experiment_id = stores.experiment_id(client, experiment, store.artifact_root, create=False)
            runs = SweepRuns(client, experiment_id, origin.name, launch_id(origin), stage)
            found = runs.find_parent() if experiment_id is not None else None
        except (MlflowException, OSError) as e:
            reason = stores.redact(first_line(str(e))) or type(e).__name__
            raise ConfigError(f"tracking store {store.describe()}: {reason}") from None
        if found is None:
            raise ConfigError(f"sweep {origin.name} has no parent run in experiment {experiment!r} of "
                              f"{store.describe()}; pass the --tracking-uri it was launched with")
        runs.parent_id = found.info.run_id
        parent = cls(runs, spec, sweep, figure_interval)
        parent.discard_lost_trials(saved_trials, writer)  # the stage's own children only
        return parent

    def publish(self, frame: pd.DataFrame, final: bool, histories: publish.Histories | None = None) -> None:
        """The stage's tables on the parent under `<stage>/` after every finished trial (its
        aggregates in its own folder), and its figures (and learning curves) at the end."""
        result = publish.compute(frame, self.spec, self.sweep, figures=final, histories=histories)
        stage, parent = self.runs.stage, self.run_id
        for key, table in result.tables.items():
            self.runs.put_table(parent, table, f"{stage}/{publish.FOLDER}/{key}.json")
        if result.comparisons is not None:
            self.runs.put_table(parent, result.comparisons, f"{stage}/{publish.FOLDER}/{publish.COMPARISONS}.json")
        search = self.sweep.read_state().get("search")
        self.runs.put_table(parent, confirmation.table(frame, self.spec, result.comparisons, search),
                            f"{stage}/{confirmation.FILE}.json")
        for path in result.figures.values():
            self.runs.put_file(parent, path, f"{stage}/{publish.FOLDER}")

    def close(self, status: str, error: BaseException | None = None) -> None:
        """The stage's end as a tag of the parent, whose status stays the search's."""
        if error is not None and not isinstance(error, KeyboardInterrupt):
            status = f"failed: {first_line(f'{type(error).__name__}: {error}')}"
        self.runs.set_tags(self.run_id, {f"tvae_sweep.{self.runs.stage}": status})
