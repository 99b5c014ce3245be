"""Ray's OptunaSearch, made safe for a resumed sweep, told about failed trials and never asking for
a config twice; and the searcher of a fused grid."""
from __future__ import annotations

import json
import math
import random
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch as RayOptunaSearch

from ..compat import live_trial, optuna_metrics, optuna_study, optuna_trials
from .fusion import MEMBERS, Point, group_config
from .rungs import Rungs, asha_rungs
from .space import define_by_run, make_sampler
from .spec import SweepSpec

SAMPLER_ASKS = 10  # repeated samples in a row from the sweep's sampler before random ones
RANDOM_ASKS = 100  # random samples that all repeat a config: the space holds no new one
DUPLICATE_OF = "duplicate_of"  # user attr of a FAIL trial that repeated a config: the trial it repeats
LOST = "lost_in_interruption"  # user attr of a FAIL trial asked for after the sweep's state was last saved
EXHAUSTED = "space_exhausted"  # user attr of a study whose space ran out: the distinct configs asked for
# the trials whose configs count as asked for: run, running, or failed for real (not as duplicates)
ASKED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.FAIL)


def optuna_search(spec: SweepSpec, study_name: str, storage: optuna.storages.BaseStorage | None = None) -> OptunaSearch:
    """The searcher of a sweep that Optuna samples (not PBT, not a fused grid); its study in
    `storage` (None: in memory)."""
    s = spec.search
    metric = s.metrics if s.multi_objective else s.metrics[0]
    mode = s.modes if s.multi_objective else s.modes[0]
    return OptunaSearch(space=define_by_run(spec), metric=metric, mode=mode,
                        points_to_evaluate=[dict(p) for p in s.warm_start] or None,
                        sampler=make_sampler(spec), study_name=study_name, storage=storage, retry_seed=s.seed,
                        rungs=asha_rungs(spec) if s.multi_objective else None)


def space_exhausted(study_name: str, db: Path) -> int | None:
    """The number of distinct configs of a sweep whose space ran out of new ones; None when it did
    not (or the sweep keeps no study)."""
    if not db.is_file():
        return None
    try:
        study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{db}")
    except KeyError:
        return None
    return study.user_attrs.get(EXHAUSTED)


def config_key(params: dict[str, Any]) -> tuple:
    """A trial's config as a set key: its sampled keys and values (a conditional key is there when it
    was sampled; floats compared exactly). The rest of the config follows from them."""
    return tuple(sorted(params.items()))


def name_objectives(study: optuna.Study, metrics: list[str]) -> None:
    """Names the study's objectives after the sweep's metrics (optuna-dashboard shows them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # set_metric_names
        study.set_metric_names(list(metrics))


class OptunaSearch(RayOptunaSearch):
    # class defaults, for a searcher pickled before these attributes existed
    retry_seed, warm_starts, asked = 0, 0, None
    rungs: Rungs | None = None

    def __init__(self, *args, retry_seed: int = 0, rungs: Rungs | None = None, **kwargs):
        """rungs: the ASHA rungs of a search of several objectives, whose scheduler stops trials
        early (a trial of one objective reaches Optuna with its last value, as Ray tells it)."""
        super().__init__(*args, **kwargs)
        self.rungs = rungs
        self.retry_seed = retry_seed  # with a trial's number, the seed of the random asks after it
        self.warm_starts = len(kwargs.get("points_to_evaluate") or [])  # the study's first trials
        self.asked: dict[tuple, int] | None = None  # config -> the Optuna trial that asked for it

    def suggest(self, trial_id: str) -> dict | str | None:
        """A config no trial of the study asked for before: a sample that repeats one is told FAIL
        (user attr duplicate_of) and the sampler is asked again, SAMPLER_ASKS times, then a seeded
        random sampler RANDOM_ASKS times; when every one repeats, the space is exhausted (FINISHED).
        A warm-start point is taken as given; a grid's points are distinct by construction."""
        study = optuna_study(self)
        if isinstance(study.sampler, optuna.samplers.GridSampler) or trial_id in optuna_trials(self):
            return super().suggest(trial_id)
        asked = self.asked_configs()
        sampler = study.sampler
        try:
            for attempt in range(SAMPLER_ASKS + RANDOM_ASKS):
                config = super().suggest(trial_id)
                trial = optuna_trials(self)[trial_id]
                first = asked.setdefault(config_key(trial.params), trial.number)
                if first == trial.number or trial.number < self.warm_starts:
                    return config
                self.tell_duplicate(trial_id, first)
                if attempt + 1 == SAMPLER_ASKS:
                    study.sampler = optuna.samplers.RandomSampler(seed=self.random_seed(trial.number))
        finally:
            study.sampler = sampler
        study.set_user_attr(EXHAUSTED, len(asked))
        return Searcher.FINISHED

    def asked_configs(self) -> dict[tuple, int]:
        """The configs the study asked for: read from the study once (also after a restore, whose
        saved state can be older than the study), then kept up to date here."""
        if self.asked is None:
            self.asked = {}
            for trial in optuna_study(self).get_trials(deepcopy=False, states=ASKED):
                if DUPLICATE_OF not in trial.user_attrs and LOST not in trial.user_attrs:
                    self.asked.setdefault(config_key(trial.params), trial.number)
        return self.asked

    def tell_duplicate(self, trial_id: str, original: int) -> None:
        """The Optuna trial of `trial_id` repeats trial `original`: FAIL, and forgotten, so that the
        next ask makes a new one."""
        trial = optuna_trials(self).pop(trial_id)
        trial.set_user_attr(DUPLICATE_OF, original)
        optuna_study(self).tell(trial, state=TrialState.FAIL)

    def random_seed(self, number: int) -> int:
        """The seed of the random asks after trial `number`'s: the sweep's seed and that trial, so a
        seeded sweep stays reproducible and each run of random asks draws anew."""
        return random.Random(f"{self.retry_seed}/{number}").getrandbits(32)

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self.asked = None  # read again from the study, which may hold trials the saved state lacks
        self.fail_lost_trials()

    def fail_lost_trials(self) -> None:
        """The study's RUNNING trials that the restored state does not know were asked for after Ray
        last saved the sweep: their Ray trials died with the driver and never come back. A grid runs
        a point left running again once the others are done (Optuna's GridSampler), so a grid keeps
        them; any other sampler would count them running for ever (constant_liar) and their configs
        as asked for: they are told FAIL, marked LOST, and their configs are free again."""
        study = optuna_study(self)
        if isinstance(study.sampler, optuna.samplers.GridSampler):
            return
        known = {trial.number for trial in optuna_trials(self).values()}
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen.number not in known:
                trial = live_trial(study, frozen)
                trial.set_user_attr(LOST, True)
                study.tell(trial, state=TrialState.FAIL)

    def _setup_study(self, mode) -> None:
        """Ray's OptunaSearch._setup_study creates (or loads) the study; its objectives are then named
        after the sweep's metrics, which optuna-dashboard and trials_dataframe show. An override of a
        private method: tests/test_compat.py fails if Ray stops calling it."""
        super()._setup_study(mode)
        name_objectives(optuna_study(self), optuna_metrics(self))

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
        name_objectives(study, self.metrics)
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
