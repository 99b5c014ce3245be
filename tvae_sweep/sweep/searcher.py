"""Ray's OptunaSearch, made safe for a resumed sweep and told about failed trials; and the searcher
of a fused grid."""
from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch as RayOptunaSearch

from ..compat import optuna_metrics, optuna_study, optuna_trials
from .fusion import MEMBERS, Point, group_config
from .rungs import Rungs


class OptunaSearch(RayOptunaSearch):
    rungs: Rungs | None = None  # also for a searcher pickled by an earlier version, resumed

    def __init__(self, *args, rungs: Rungs | None = None, **kwargs):
        """rungs: the ASHA rungs of a search of several objectives, whose scheduler stops trials
        early (a trial of one objective reaches Optuna with its last value, as Ray tells it)."""
        super().__init__(*args, **kwargs)
        self.rungs = rungs

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
        the sampler steers away from it; Optuna would otherwise drop it as FAIL and learn nothing.
        A trial ASHA stopped early reaches the study PRUNED (see prune_stopped)."""
        if error and not result and trial_id in optuna_trials(self):
            worst = self._worst_values()
            if worst is not None:
                result = worst
        if not error and result and self.prune_stopped(trial_id, result):
            result = None  # no values: Ray's OptunaSearch tells PRUNED
        super().on_trial_complete(trial_id, result=result, error=error)

    def prune_stopped(self, trial_id: str, result: dict) -> bool:
        """Whether ASHA stopped the trial early (its last report `result` ends it before its last
        epoch). Optuna takes no values with PRUNED: the trial keeps them as its user attributes
        last_values (objective -> value) and stopped_at_rung."""
        rung = self.rungs.stopped_at(result) if self.rungs is not None else None
        trial = optuna_trials(self).get(trial_id)
        if rung is None or trial is None:
            return False
        try:
            trial.set_user_attr("last_values", {metric: result.get(metric) for metric in optuna_metrics(self)})
            trial.set_user_attr("stopped_at_rung", rung)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False  # settled before a SIGKILL (see on_trial_result): the study keeps its outcome
        return True

    def _worst_values(self) -> dict | None:
        study = optuna_study(self)
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not done:
            return None
        worst = {}
        for i, (metric, direction) in enumerate(zip(optuna_metrics(self), study.directions, strict=True)):
            values = [t.values[i] for t in done]
            worst[metric] = min(values) if direction == optuna.study.StudyDirection.MAXIMIZE else max(values)
        return worst


class FusedGridSearch(Searcher):
    """search.fuse: each group of grid points one trial (sweep/fusion.py), and each point an Optuna
    trial of the sweep's study once its trial ends, with its own objective values (failed: FAIL)."""

    def __init__(self, groups: list[list[Point]], metrics: list[str], modes: list[str], study_name: str, storage: str):
        super().__init__(metric=None, mode=None)
        self.groups, self.metrics, self.modes = groups, metrics, modes
        self.study_name, self.storage = study_name, storage
        self.next = 0
        self.live: dict[str, int] = {}  # Ray trial id -> its group

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the objectives are the spec's, per point

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.next >= len(self.groups):
            return Searcher.FINISHED
        self.live[trial_id] = self.next
        self.next += 1
        return group_config(self.groups[self.live[trial_id]])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        group = self.live.pop(trial_id, None)
        if group is None:
            return
        reports = (result or {}).get(MEMBERS) or []
        study = optuna.create_study(study_name=self.study_name, storage=self.storage, load_if_exists=True,
                                    directions=["maximize" if m == "max" else "minimize" for m in self.modes])
        for i, point in enumerate(self.groups[group]):
            report = reports[i] if i < len(reports) else {}
            values = [report.get(m) for m in self.metrics]
            done = not report.get("error") and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
            study.add_trial(optuna.trial.create_trial(
                params=point.params, distributions=self.distributions(),
                values=values if done else None, state=TrialState.COMPLETE if done else TrialState.FAIL,
                user_attrs={"ray_trial_id": f"{trial_id}_p{i}"}))

    def distributions(self) -> dict:
        choices: dict[str, list] = {}
        for point in (p for group in self.groups for p in group):
            for key, value in point.params.items():
                choices.setdefault(key, [])
                if value not in choices[key]:
                    choices[key].append(value)
        return {key: optuna.distributions.CategoricalDistribution(values) for key, values in choices.items()}

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(json.dumps({"next": self.next, "live": self.live}))

    def restore(self, checkpoint_path: str) -> None:
        state = json.loads(Path(checkpoint_path).read_text())
        self.next, self.live = state["next"], state["live"]
