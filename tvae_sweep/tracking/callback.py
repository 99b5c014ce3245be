"""The Tune callback that keeps MLflow in step with a sweep: Tune's hooks, adapted to a TrialLog.

Each hook turns the Ray trial it is given into trial records (sweep/records.py: one per point of a
fused trial) and hands the MLflow writes to the log's thread: Tune calls the hooks in its loop, and
a trial waits at each report until the loop is through.
"""
from __future__ import annotations

import functools
from typing import Any

from ray import tune
from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS, DONE, EXPERIMENT_TAG, SHOULD_CHECKPOINT, TRIAL_ID

from ..sweep.records import ERROR, TrialRecord, records_of, saved_records
from ..sweep.results import frame_of
from ..sweep.rungs import asha_rungs
from .trial_log import TrialLog

NOT_METRICS = set(AUTO_RESULT_KEYS) | {DONE, SHOULD_CHECKPOINT, TRIAL_ID, EXPERIMENT_TAG, "node_id", "device"}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def metrics_of(record: TrialRecord) -> dict[str, float]:
    """The numbers of the record's last report that are metrics, not Ray's bookkeeping."""
    return {k: v for k, v in record.last.items() if k not in NOT_METRICS and _number(v)}


def saved_trial_ids(sweep) -> set[str]:
    """The trials in Ray's saved experiment of the sweep (none before its first save)."""
    path = sweep.read_state()["experiment_path"]
    return {r.trial_id for r in saved_records(path)} if tune.Tuner.can_restore(path) else set()


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
        self.finished: set[str] = set()  # Ray trials whose on_trial_complete ran (Ray marks them later)

    @classmethod
    def start(cls, spec, sweep, uri_option: str | None = None) -> MlflowTracking:
        return cls(TrialLog.start(spec, sweep, uri_option, saved_trials=lambda: saved_trial_ids(sweep)))

    # Ray pickles the run config (with its callbacks) into the experiment: the settings only
    def __getstate__(self) -> dict:
        return {"log": self.log.settings(), "finished": set()}

    # ------------------------------------------------------------ Tune's hooks

    @hook
    def on_trial_start(self, iteration, trials, trial, **info):
        for record in records_of([trial]):
            self.log.later("on_trial_start", self.log.children.mark_running, record)

    @hook
    def on_trial_result(self, iteration, trials, trial, result, **info):
        for record in records_of([trial], result):
            if record.state == ERROR:  # a fused trial's point that failed alone
                self.log.later("on_trial_result", self.log.children.log_error, record)
            else:
                self.log.later("on_trial_result", self.log.children.log_result, record, metrics_of(record))

    @hook
    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        for record in records_of([trial], checkpoint=checkpoint):
            self.log.later("on_checkpoint", self.log.children.log_checkpoint, record)

    @hook
    def on_trial_complete(self, iteration, trials, trial, **info):
        self.finished.add(trial.trial_id)
        records = records_of(trials, finished=self.finished, rungs=asha_rungs(self.log.spec))
        for record in records:
            if record.ray_id != trial.trial_id:
                continue
            done = self.log.children.log_error if record.state == ERROR else self.log.children.log_complete
            self.log.later("on_trial_complete", done, record)
        # the aggregates over every trial: only the newest waits for the tracking thread, and its
        # table is made there
        self.log.latest("aggregates", "on_trial_complete", self.publish, records)

    def publish(self, records: list[TrialRecord]) -> None:
        self.log.parent.publish(frame_of(records), False)

    @hook
    def on_trial_recover(self, iteration, trials, trial, **info):
        for record in records_of([trial]):
            self.log.later("on_trial_recover", self.log.children.log_retry, record)

    @hook
    def on_trial_error(self, iteration, trials, trial, **info):
        for record in records_of([trial]):
            self.log.later("on_trial_error", self.log.children.log_error, record)

    @hook
    def on_experiment_end(self, trials, **info):
        self.log.later("on_experiment_end", self.log.children.log_killed, records_of(trials))
