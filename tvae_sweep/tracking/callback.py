"""The Tune callback that keeps MLflow in step with a sweep: Tune's hooks, adapted to a TrialLog.

Tune calls the hooks in its loop, and a trial waits at each report until the loop is through, so
they only read what they need of the trials and hand the MLflow writes to the log's thread.
"""
from __future__ import annotations

import functools
from typing import Any

from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS, DONE, EXPERIMENT_TAG, SHOULD_CHECKPOINT, TRIAL_ID

from ..sweep.fusion import expand, point_checkpoint
from ..sweep.results import frame_of, last_line, trials_frame
from .trial_log import TrialLog, TrialView

NOT_METRICS = set(AUTO_RESULT_KEYS) | {DONE, SHOULD_CHECKPOINT, TRIAL_ID, EXPERIMENT_TAG, "node_id", "device"}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def saved_trial_ids(sweep) -> set[str]:
    """The trials in Ray's saved experiment of the sweep (none before its first save)."""
    from ray import tune

    path = sweep.read_state()["experiment_path"]
    return set(trials_frame(path)["trial_id"]) if tune.Tuner.can_restore(path) else set()


def hook(method):
    """A Tune hook whose problems are reported, never allowed to stop the sweep."""
    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        with self.log.guard(method.__name__):
            method(self, *args, **kwargs)
    return guarded


class MlflowTracking(Callback):
    def __init__(self, log: TrialLog):
        self.log = log

    @classmethod
    def start(cls, spec, sweep, uri_option: str | None = None) -> MlflowTracking:
        return cls(TrialLog.start(spec, sweep, uri_option, saved_trials=lambda: saved_trial_ids(sweep)))

    # Ray pickles the run config (with its callbacks) into the experiment: the settings only
    def __getstate__(self) -> dict:
        return {"log": self.log.settings()}

    # ------------------------------------------------------------ Tune's hooks

    @hook
    def on_trial_start(self, iteration, trials, trial, **info):
        for view in views(trial):
            self.log.later("on_trial_start", lambda v: self.log.mark_running(self.log.child(v)), view)

    @hook
    def on_trial_result(self, iteration, trials, trial, result, **info):
        for point in expand([trial], result):
            view = TrialView.of(point)
            if getattr(point, "error", None):  # a fused trial's point that failed alone
                self.log.later("on_trial_result", self.log.log_error, view, point.error)
                continue
            own = result if point is trial else point.last_result
            metrics = {k: v for k, v in own.items() if k not in NOT_METRICS and _number(v)}
            self.log.later("on_trial_result", self.log.log_result, view, dict(own), metrics)

    @hook
    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        for point in expand([trial]):
            own = checkpoint if point is trial else point_checkpoint(checkpoint, point.index)
            self.log.later("on_checkpoint", self.log.log_checkpoint, TrialView.of(point), own)

    @hook
    def on_trial_complete(self, iteration, trials, trial, **info):
        self.log.finished.add(trial.trial_id)
        frame = frame_of(trials, self.log.finished)
        for point in expand([trial]):
            if getattr(point, "error", None):
                self.log.later("on_trial_complete", self.log.log_error, TrialView.of(point), point.error)
            else:
                self.log.later("on_trial_complete", self.log.log_complete, TrialView.of(point), frame)

    @hook
    def on_trial_recover(self, iteration, trials, trial, **info):
        tags = {"tvae_sweep.retries": trial.num_failures,
                "tvae_sweep.last_error": last_line(self.log.error_text(trial))}
        for view in views(trial):
            self.log.later("on_trial_recover", lambda v: self.log.runs.set_tags(self.log.child(v).run_id, tags), view)

    @hook
    def on_trial_error(self, iteration, trials, trial, **info):
        text = self.log.error_text(trial)
        for view in views(trial):
            self.log.later("on_trial_error", self.log.log_error, view, text)

    @hook
    def on_experiment_end(self, trials, **info):
        states = {point.trial_id: point.status for point in expand(trials)}
        self.log.later("on_experiment_end", self.log.log_killed, states)


def views(trial) -> list[TrialView]:
    """The trial as the tracking sees it: itself, or each point of a fused trial."""
    return [TrialView.of(point) for point in expand([trial])]
