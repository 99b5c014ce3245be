"""Ray's OptunaSearch, made safe for a sweep resumed after its driver was killed."""
from __future__ import annotations

import optuna
from ray.tune.search.optuna import OptunaSearch as RayOptunaSearch


class OptunaSearch(RayOptunaSearch):
    """The study lives in SQLite and is written at once; Ray's experiment state is saved now and
    then. After a SIGKILL the study can already hold a trial as finished that Ray's older state
    still runs; the resumed trial then reports again. The study knows its outcome: keep it."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
