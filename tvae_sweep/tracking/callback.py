"""The Tune callback that keeps MLflow in step with a sweep: Tune's hooks, adapted to a TrialLog.

Tune calls the hooks in its loop, and a trial waits at each report until the loop is through, so
they only read what they need of the trials and hand the MLflow writes to the log's thread.
"""
from __future__ import annotations

import functools
from typing import Any

from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS, DONE, EXPERIMENT_TAG, SHOULD_CHECKPOINT, TRIAL_ID

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
    def start(cls, spec, sweep, uri_option: str | None = None) -> "MlflowTracking":
        return cls(TrialLog.start(spec, sweep, uri_option, saved_trials=lambda: saved_trial_ids(sweep)))

    # Ray pickles the run config (with its callbacks) into the experiment: the settings only
    def __getstate__(self) -> dict:
        return {"log": self.log.settings()}

    # ------------------------------------------------------------ Tune's hooks

    @hook
    def on_trial_start(self, iteration, trials, trial, **info):
        self.log.later("on_trial_start", lambda view: self.log.mark_running(self.log.child(view)), TrialView.of(trial))

    @hook
    def on_trial_result(self, iteration, trials, trial, result, **info):
        metrics = {k: v for k, v in result.items() if k not in NOT_METRICS and _number(v)}
        self.log.later("on_trial_result", self.log.log_result, TrialView.of(trial), dict(result), metrics)

    @hook
    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self.log.later("on_checkpoint", self.log.log_checkpoint, TrialView.of(trial), checkpoint)

    @hook
    def on_trial_complete(self, iteration, trials, trial, **info):
        self.log.finished.add(trial.trial_id)
        self.log.later("on_trial_complete", self.log.log_complete, TrialView.of(trial),
                       frame_of(trials, self.log.finished))

    @hook
    def on_trial_recover(self, iteration, trials, trial, **info):
        tags = {"tvae_sweep.retries": trial.num_failures,
                "tvae_sweep.last_error": last_line(self.log.error_text(trial))}
        self.log.later("on_trial_recover", lambda view: self.log.runs.set_tags(self.log.child(view).run_id, tags),
                       TrialView.of(trial))

    @hook
    def on_trial_error(self, iteration, trials, trial, **info):
        self.log.later("on_trial_error", self.log.log_error, TrialView.of(trial), self.log.error_text(trial))

    @hook
    def on_experiment_end(self, trials, **info):
        states = {trial.trial_id: trial.status for trial in trials}
        self.log.later("on_experiment_end", self.log.log_killed, states)
