"""Ray's OptunaSearch, made safe for a resumed sweep and told about failed trials."""
from __future__ import annotations

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch as RayOptunaSearch

from ..compat import optuna_metrics, optuna_study, optuna_trials


class OptunaSearch(RayOptunaSearch):
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """The study lives in SQLite and is written at once; Ray's experiment state is saved now
        and then. After a SIGKILL the study can hold a trial as finished that Ray's older state
        still runs; the resumed trial then reports again. The study knows its outcome: keep it.
        A report from before the trial's first evaluation holds no objective: nothing to tell."""
        if isinstance(self.metric, str) and self.metric not in result:
            return
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """A failed trial (a diverging one, say) counts as the worst value the study has seen, so
        the sampler steers away from it; Optuna would otherwise drop it as FAIL and learn nothing."""
        if error and not result and trial_id in optuna_trials(self):
            worst = self._worst_values()
            if worst is not None:
                result = worst
        super().on_trial_complete(trial_id, result=result, error=error)

    def _worst_values(self) -> dict | None:
        study = optuna_study(self)
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not done:
            return None
        worst = {}
        for i, (metric, direction) in enumerate(zip(optuna_metrics(self), study.directions)):
            values = [t.values[i] for t in done]
            worst[metric] = min(values) if direction == optuna.study.StudyDirection.MAXIMIZE else max(values)
        return worst
