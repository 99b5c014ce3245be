"""A sweep's trials written into MLflow: the parent run, a child run per trial, on a thread of its own.

`TrialLog.start` opens the store and the sweep's parent run before the first trial (so a store that
cannot be used is a one-line error); `later` hands each write to the tracking thread, which logs it
into the trial's child run; `close` waits for that thread, then settles every status once the sweep
has returned: FINISHED, FAILED (with the reason), KILLED. It knows trials only as TrialViews and
imports no Ray: tracking/callback.py adapts Tune's hooks to it.

Trials never talk to MLflow: they report to the driver, and their pictures are read from the
checkpoints they write to the sweep's storage path (a local folder, NFS, or an object store).
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..config import ConfigError
from ..images import PICTURES
from ..sweep.disk import notice
from ..sweep.layout import SweepDir
from ..sweep.results import last_line, trials_frame
from ..sweep.space import num_trials, trial_run_config
from ..sweep.spec import SweepSpec
from . import publish
from . import store as stores
from .aggregate import TERMINATED as RAY_FINISHED
from .runs import ERROR, FAILED, FINISHED, KILLED, NOTE, RUNNING, Child, SweepRuns, flatten, launch_id

RAY_ERROR = "ERROR"


def first_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


def parent_params(spec: SweepSpec) -> dict[str, str]:
    """The searched axes and the search settings."""
    params = {f"space.{key}": json.dumps(p.model_dump(exclude_none=True, exclude_defaults=True))
              for key, p in spec.space.items()}
    for section in ("search", "resources"):
        for key, value in getattr(spec, section).model_dump().items():
            params[f"{section}.{key}"] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    params["num_trials"] = str(num_trials(spec))
    return params


def searched_values(trial) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(trial.config.items()))


@dataclass(frozen=True)
class TrialView:
    """What the tracking thread needs of a Ray trial, read when the hook is called (Ray goes on
    changing the trial meanwhile)."""

    trial_id: str
    name: str
    path: str
    config: dict
    last_result: dict

    @classmethod
    def of(cls, trial) -> TrialView:
        return cls(trial.trial_id, str(trial), str(trial.path), dict(trial.config), dict(trial.last_result or {}))


def checkpoint_location(checkpoint) -> str:
    kind = getattr(checkpoint.filesystem, "type_name", "local")
    return checkpoint.path if kind == "local" else f"{kind}://{checkpoint.path}"


def copy_from_checkpoint(checkpoint, name: str, target: Path) -> bool:
    """Copies one file of a checkpoint (on any pyarrow filesystem) to `target`, if it is there."""
    import pyarrow.fs

    source = f"{checkpoint.path.rstrip('/')}/{name}"
    if checkpoint.filesystem.get_file_info(source).type != pyarrow.fs.FileType.File:
        return False
    with checkpoint.filesystem.open_input_stream(source) as stream:
        target.write_bytes(stream.read())
    return True


class TrialLog:
    def __init__(self, store: stores.Store, experiment: str, spec: SweepSpec, sweep: SweepDir,
                 figure_interval: float = 300.0):
        self.store = store
        self.experiment = experiment
        self.spec = spec
        self.sweep = sweep
        # during a sweep the figures are redrawn at most this often: drawing them takes the tracking
        # thread seconds of the driver's CPU, which the trials share (the tables take milliseconds)
        self.figure_interval = figure_interval
        self.runs: SweepRuns | None = None
        self.children: dict[str, Child] = {}
        self.searched: dict[str, str] = {}  # the searched values last tagged on each trial's run
        self.finished: set[str] = set()
        self.parent_step = 0
        self.last_figures = 0.0
        self.warned = False
        self.pending: ThreadPoolExecutor | None = None  # the tracking thread
        self.console = sys.stderr  # as it is now: while Tune runs, sys.stderr is Ray's log

    def settings(self) -> TrialLog:
        """A copy with its settings only, and no password: what Ray may pickle into its experiment
        (a resumed sweep is given this driver's callbacks, never the pickled ones)."""
        import dataclasses

        t = self.spec.tracking
        tracking = t.model_copy(update={"uri": t.uri and stores.redact(t.uri),
                                        "artifact_location": t.artifact_location and stores.redact(t.artifact_location)})
        return TrialLog(dataclasses.replace(self.store, uri=self.store.shown), self.experiment,
                        self.spec.model_copy(update={"tracking": tracking}), self.sweep, self.figure_interval)

    # ------------------------------------------------------------ opening and closing

    @classmethod
    def start(cls, spec: SweepSpec, sweep: SweepDir, uri_option: str | None,
              saved_trials: Callable[[], set[str]]) -> TrialLog:
        """Resolves the store (option > $MLFLOW_TRACKING_URI > spec > default), then opens the
        sweep's parent run, finding it again if the sweep ran before; `saved_trials` gives the ids
        of the trials Ray saved, for a sweep that is resumed."""
        store = stores.resolve(uri_option, spec.tracking.uri, sweep.root.parent, spec.tracking.artifact_location)
        tracking = cls(store, spec.tracking.experiment or sweep.name, spec, sweep)
        tracking.open(saved_trials)
        return tracking

    def open(self, saved_trials: Callable[[], set[str]]) -> None:
        from mlflow.exceptions import MlflowException

        stores.check(self.store)
        try:
            client = stores.client(self.store)
            experiment_id = stores.experiment_id(client, self.experiment, self.store.artifact_root)
            self.runs = SweepRuns(client, experiment_id, self.sweep.name, launch_id(self.sweep))
            created = self.runs.open_parent(self.sweep.name, self.parent_tags(), parent_params(self.spec),
                                            [self.sweep.spec] if self.sweep.spec.is_file() else [])
        except (MlflowException, OSError) as e:
            reason = stores.redact(first_line(str(e))) or type(e).__name__
            raise ConfigError(f"tracking store {self.store.describe()}: {reason}") from None
        if not created:
            history = client.get_metric_history(self.runs.parent_id, "finished_trials")
            self.parent_step = max((m.step for m in history), default=0)
            self.discard_lost_trials(saved_trials)

    def discard_lost_trials(self, saved_trials: Callable[[], set[str]]) -> None:
        """Deletes the runs of trials missing from Ray's saved experiment: their driver was killed
        before Ray saved them, and the resume replaces them with new trials."""
        try:
            saved = saved_trials()
        except Exception as e:  # unreadable now: keep every run rather than guess
            self.warn("reading Ray's saved trials", e)
            return
        for run in self.runs.children():
            if run.data.tags.get("tvae_sweep.trial_id") not in saved:
                self.runs.discard(run, "its driver was killed before Ray saved this trial, "
                                       "so the resumed sweep replaced it with a new trial")

    def parent_tags(self) -> dict[str, str]:
        state = self.sweep.read_state()
        s = self.spec.search
        searched = ", ".join(self.spec.space) or "the base config"
        note = (f"Sweep **{self.sweep.name}**: {num_trials(self.spec)} trials of {searched} by {s.algorithm} "
                f"with {s.scheduler}, optimising {', '.join(f'{m} ({d})' for m, d in zip(s.metrics, s.modes))}. "
                f"Results in `{self.sweep.root}`, Ray experiment `{state.get('experiment_path')}`.")
        return {"tvae_sweep.experiment_path": str(state.get("experiment_path")),
                "tvae_sweep.results": str(self.sweep.root), NOTE: note}

    @property
    def parent_id(self) -> str | None:
        return self.runs.parent_id if self.runs else None

    def close(self, status: str, frame: pd.DataFrame | None = None, error: BaseException | None = None) -> None:
        """Settles every run after the sweep stopped: children by their trial's state (unfinished
        ones KILLED), the final aggregates on the parent, the parent FINISHED, KILLED or FAILED."""
        if self.runs is None:
            return
        if self.pending is not None:  # what the hooks handed over is logged first
            self.pending.shutdown(wait=True)
            self.pending = None
        with self.guard("close"):  # the parent is closed even if the aggregates fail
            if frame is None:
                frame = self.saved_trials()
            self.settle_children(frame)
            if len(frame):
                self.publish(frame, final=True)
        with self.guard("close"):
            if error is not None and not isinstance(error, KeyboardInterrupt):
                self.runs.set_tags(self.parent_id, {ERROR: first_line(f"{type(error).__name__}: {error}")})
                self.runs.set_status(self.parent_id, FAILED)
            else:
                self.runs.set_status(self.parent_id, FINISHED if status == "finished" else KILLED)

    def saved_trials(self) -> pd.DataFrame:
        """Ray's saved trials table; empty when the sweep stopped before Ray saved any."""
        try:
            return trials_frame(self.sweep.read_state()["experiment_path"])
        except Exception:
            return pd.DataFrame(columns=["trial_id", "state"])

    def settle_children(self, frame: pd.DataFrame) -> None:
        """Runs left RUNNING (by a driver that died, say) take their trial's state in Ray."""
        rows = frame.set_index("trial_id") if len(frame) else pd.DataFrame()
        for run in self.runs.children():
            if run.info.status != RUNNING:
                continue
            trial_id = run.data.tags.get("tvae_sweep.trial_id")
            state = rows.loc[trial_id, "state"] if trial_id in rows.index else None
            if state == RAY_ERROR:
                reason = rows.loc[trial_id].get("error") if "error" in rows else None
                self.runs.set_tags(run.info.run_id, {ERROR: reason or "failed"})
            status = FINISHED if state == RAY_FINISHED else FAILED if state == RAY_ERROR else KILLED
            self.runs.set_status(run.info.run_id, status)

    # ------------------------------------------------------------ on the tracking thread

    def later(self, name: str, fn, *args) -> None:
        """Runs fn(*args) on the tracking thread, in the order the hooks were called."""
        if self.pending is None:
            self.pending = ThreadPoolExecutor(1, thread_name_prefix="mlflow-log")
        self.pending.submit(self.run_guarded, name, fn, *args)

    def run_guarded(self, name: str, fn, *args) -> None:
        with self.guard(name):
            fn(*args)

    def log_result(self, trial: TrialView, result: dict, metrics: dict[str, float]) -> None:
        child = self.child(trial)
        self.mark_running(child)
        step = int(result.get("epoch") or result.get("training_iteration") or 0)
        tags = {k: result[r] for k, r in (("ray.node_id", "node_id"), ("ray.hostname", "hostname"),
                                          ("tvae_sweep.device", "device")) if result.get(r)}
        if searched_values(trial) != self.searched.get(trial.trial_id):  # PBT changes a trial's config
            tags["tvae_sweep.searched"] = self.searched[trial.trial_id] = searched_values(trial)
        self.runs.log_step(child, step, metrics, tags)

    def log_checkpoint(self, trial: TrialView, checkpoint) -> None:
        child = self.child(trial)
        self.runs.set_tags(child.run_id, {"tvae_sweep.checkpoint": checkpoint_location(checkpoint)})
        with tempfile.TemporaryDirectory() as tmp:
            for name in PICTURES:
                local = Path(tmp) / name
                if copy_from_checkpoint(checkpoint, name, local):
                    self.runs.put_file(child.run_id, local)
                    cached = publish.cached_picture(self.sweep, trial.trial_id, name)
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    cached.write_bytes(local.read_bytes())

    def log_complete(self, trial: TrialView, frame: pd.DataFrame) -> None:
        child = self.child(trial)
        epochs = trial.last_result.get("training_iteration", 0)
        if epochs < self.spec.run.train.epochs:
            self.runs.set_tags(child.run_id, {"tvae_sweep.stopped_early": f"by the scheduler after {epochs} epochs"})
        self.runs.set_status(child.run_id, FINISHED)
        child.status = FINISHED
        self.publish(frame, final=False)

    def log_error(self, trial: TrialView, text: str) -> None:
        """The failed trial's run: its error's last line as a tag, the whole error as error.txt (once)."""
        child = self.child(trial)
        if child.status == FAILED:
            return
        self.runs.set_tags(child.run_id, {ERROR: last_line(text)})
        if text:
            self.runs.client.log_text(child.run_id, text, "error.txt")
        self.runs.set_status(child.run_id, FAILED)
        child.status = FAILED

    def log_killed(self, states: dict[str, str]) -> None:
        for trial_id, state in states.items():
            child = self.children.get(trial_id)
            if child is not None and child.status == RUNNING and state not in (RAY_FINISHED, RAY_ERROR):
                self.runs.set_status(child.run_id, KILLED)
                child.status = KILLED

    # ------------------------------------------------------------ helpers

    def child(self, trial: TrialView) -> Child:
        """The trial's run: cached, else found by its trial id under the parent, else created."""
        child = self.children.get(trial.trial_id)
        if child is None:
            try:
                config = flatten(trial_run_config(self.spec.base_dict(), trial.config).to_dict())
            except ConfigError:
                config = {k: str(v) for k, v in trial.config.items()}
            tags = {"ray.trial_name": trial.name, "ray.trial_path": trial.path,
                    "tvae_sweep.searched": searched_values(trial)}
            child = self.runs.child(trial.trial_id, f"trial-{trial.trial_id}", tags, config)
            self.searched[trial.trial_id] = searched_values(trial)
            self.children[trial.trial_id] = child
        return child

    def mark_running(self, child: Child) -> None:
        if child.status != RUNNING:
            self.runs.set_status(child.run_id, RUNNING)
            child.status = RUNNING

    @staticmethod
    def error_text(trial) -> str:  # a Ray trial, read on Tune's thread
        """The trial's error as Ray recorded it (traceback included)."""
        try:
            text = trial.get_error()
        except Exception:  # the pickled error may be unreadable
            text = None
        if not text:  # fall back to the error file Ray writes beside the trial's results, or to the
            # driver's copy of it, which reaches the storage path later (at once after a lost node)
            for path in (Path(trial.path) / "error.txt", trial.error_file and Path(trial.error_file)):
                if path and path.is_file():
                    text = path.read_text()
                    break
        return text or ""

    def publish(self, frame: pd.DataFrame, final: bool) -> None:
        """Aggregated tables to the results folder and the parent run after every finished trial;
        figures at the end and during the sweep at most every figure_interval seconds."""
        draw = final or time.monotonic() - self.last_figures >= self.figure_interval
        result = publish.compute(frame, self.spec, self.sweep, figures=draw)
        if draw:
            self.last_figures = time.monotonic()
        step = result.finished if result.finished > self.parent_step else None
        publish.log_on_parent(self.runs, result, step)
        if step is not None:
            self.parent_step = step

    def guard(self, hook: str):
        """Tracking problems are reported, never allowed to stop the sweep."""
        return _Guard(self, hook)

    def warn(self, hook: str, error: BaseException) -> None:
        if notice(error):  # a full disk: the sweep ends with one line about it
            return
        console = self.console or sys.stderr
        print(f"tvae-sweep: tracking: {hook} failed: {type(error).__name__}: {stores.redact(first_line(str(error)))}",
              file=console, flush=True)
        if not self.warned:
            import traceback

            print(stores.redact("".join(traceback.format_exception(error))), end="", file=console, flush=True)
            self.warned = True


class _Guard:
    def __init__(self, tracking: TrialLog, hook: str):
        self.tracking, self.hook = tracking, hook

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if error is not None and isinstance(error, Exception):
            self.tracking.warn(self.hook, error)
            return True
        return False
