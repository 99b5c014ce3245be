"""Multi-objective ASHA (Schmucker et al. 2021, "Multi-objective asynchronous successive halving"):
ASHA's asynchronous rule, with the trials at a rung ranked by non-dominated sorting.

At each rung (rungs.py) a trial's objective vector is recorded once. It goes on iff, among all the
vectors recorded at that rung so far, its own included, it ranks in the top ceil(k / reduction_factor)
(k: how many are recorded); else ASHA stops it. The ranking: Pareto fronts first (non-dominated
sorting), within a front the larger NSGA-II crowding distance first (the front's extreme points,
then those in its emptier stretches), then the earlier arrival. A vector with a non-finite value (a
diverging trial) ranks after every finite one. One objective: the ranking is a sort.

Ray keeps no scheduler state with its experiment: a resumed sweep gets the scheduler as it was
pickled at the launch, before any trial reported. So the rungs are written to the sweep's folder
after each decision and read back by the resumed scheduler: later trials meet the vectors recorded
before the interruption, and a trial stopped before it (which Ray's older saved state may still
hold as running) is stopped again when it reaches that rung.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import moocore
import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from ..metrics import as_losses
from .layout import write_whole_json
from .rungs import Rungs


def crowding_distance(front: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance of each point of a front (rows): over the objectives, the gap
    between its two neighbours along that objective, as a fraction of the front's range on it;
    the extreme points of an objective get infinity. Equal points get equal distances, and an
    objective on which the whole front is equal adds nothing."""
    unique, index = np.unique(front, axis=0, return_inverse=True)
    index = index.reshape(-1)
    distance = np.zeros(len(unique))
    for values in unique.T:
        span = values.max() - values.min()
        if span == 0:
            continue
        order = np.argsort(values, kind="stable")
        distance[order[[0, -1]]] = np.inf
        gaps = (values[order[2:]] - values[order[:-2]]) / span
        distance[order[1:-1]] += gaps
    return distance[index]


def ranking(vectors: Sequence[Sequence[float]], modes: Sequence[str]) -> list[int]:
    """The indices of `vectors` (in arrival order), best first: by Pareto front, then by crowding
    distance within the front, then by arrival; vectors with a non-finite value last, by arrival."""
    losses = as_losses(vectors, modes)
    is_finite = np.isfinite(losses).all(axis=1)
    finite, rest = np.flatnonzero(is_finite), np.flatnonzero(~is_finite).tolist()
    if not len(finite):
        return rest
    fronts = moocore.pareto_rank(losses[finite])
    crowding = np.zeros(len(finite))
    for front in np.unique(fronts):
        members = fronts == front
        crowding[members] = crowding_distance(losses[finite][members])
    order = np.lexsort((finite, -crowding, fronts))  # the last key sorts first
    return [int(finite[i]) for i in order] + rest


def promoted(vectors: Sequence[Sequence[float]], modes: Sequence[str], reduction_factor: float) -> list[bool]:
    """For each vector recorded at a rung: whether it ranks in the top ceil(k / reduction_factor)
    of the k vectors (the trial that brought it goes on; the newest arrival is the one decided)."""
    keep = math.ceil(len(vectors) / reduction_factor)
    top = set(ranking(vectors, modes)[:keep])
    return [i in top for i in range(len(vectors))]


class MultiObjectiveAsha(FIFOScheduler):
    """ASHA on several objectives, for Ray Tune (time_attr training_iteration, one bracket, trials
    stopped at max_t like Ray's ASHAScheduler)."""

    def __init__(self, metrics: list[str], modes: list[str], rungs: Rungs, state: Path | None = None):
        """state: the file the rungs are kept in (the sweep's folder), for a resumed sweep; None: in
        memory only."""
        super().__init__()
        self.metrics, self.modes, self.rungs, self.state = list(metrics), list(modes), rungs, state
        self.recorded: list[dict[str, tuple[float, ...]]] = [{} for _ in rungs.milestones]  # in arrival order
        self.last_rung: dict[str, int] = {}  # trial id -> the highest rung it was recorded at
        self.stopped: dict[str, int] = {}  # trial id -> the rung it was stopped at
        self.num_stopped = 0
        self.loaded = False

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True  # the objectives are the spec's, given above; Tune has none for several

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        epochs = result.get("training_iteration")
        if epochs is None:
            return TrialScheduler.CONTINUE
        if epochs >= self.rungs.max_t:
            return TrialScheduler.STOP
        decision = self.decide(trial.trial_id, epochs, [result.get(m) for m in self.metrics])
        self.num_stopped += decision == TrialScheduler.STOP
        return decision

    def decide(self, trial_id: str, epochs: int, values: list) -> str:
        """Records a report of `trial_id` after `epochs` epochs at the highest rung it reached and has
        not been recorded at, and says whether it goes on. A report without every objective (before
        the trial's first evaluation) is not recorded: the trial goes on to its next report."""
        self.load()
        rung = self.rungs.reached(epochs)
        if any(v is None for v in values) or rung is None:
            return TrialScheduler.CONTINUE
        if rung <= self.last_rung.get(trial_id, -1):  # recorded there before (a trial resumed from a checkpoint)
            return TrialScheduler.STOP if rung >= self.stopped.get(trial_id, math.inf) else TrialScheduler.CONTINUE
        self.last_rung[trial_id] = rung
        recorded = self.recorded[rung]
        recorded[trial_id] = tuple(float(v) for v in values)
        goes_on = dict(zip(recorded, promoted(list(recorded.values()), self.modes, self.rungs.reduction_factor),
                           strict=True))[trial_id]
        if not goes_on:
            self.stopped[trial_id] = rung
        self.save()
        return TrialScheduler.CONTINUE if goes_on else TrialScheduler.STOP

    def save(self) -> None:
        """The rungs, written whole (beside the file, then renamed over it)."""
        if self.state is None:
            return
        write_whole_json(self.state, {"recorded": self.recorded, "last_rung": self.last_rung, "stopped": self.stopped})

    def load(self) -> None:
        """The rungs saved before this scheduler was unpickled for a resumed sweep, once."""
        if self.loaded:
            return
        self.loaded = True
        if self.state is None or not self.state.is_file():
            return
        saved = json.loads(self.state.read_text())
        self.recorded = [{t: tuple(v) for t, v in rung.items()} for rung in saved["recorded"]]
        self.last_rung.update(saved["last_rung"])
        self.stopped.update(saved["stopped"])

    def on_trial_complete(self, tune_controller, trial, result) -> None:
        self.last_rung.pop(trial.trial_id, None)  # its vectors stay at their rungs, for later trials

    def on_trial_remove(self, tune_controller, trial) -> None:
        self.last_rung.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        counts = ", ".join(f"{m:g} epochs: {len(r)}" for m, r in zip(self.rungs.milestones, self.recorded, strict=True))
        return f"Using multi-objective ASHA: num_stopped={self.num_stopped}; recorded at {counts}"
