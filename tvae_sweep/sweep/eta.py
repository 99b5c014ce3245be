"""The sweep's time left, from what its trials' epochs cost.

An epoch's cost differs several-fold between configs (18 capsules of 18 against 6 of 6), so a rate
of epochs per second over the whole sweep misleads whenever the expensive trials run first (the
warm starts, a grid's costliest points) or last. Instead:

- a Ray trial that has reported two epochs costs its own seconds per epoch (Ray's time_total_s over
  its epochs), the cost model's rate beside them as PRIOR_EPOCHS more epochs;
- a trial whose config is known but which has not reported that much (a trial just started, a
  grid's point not yet created) costs what its epoch's cost (space.epoch_cost: latent units x
  sequences) predicts: seconds per epoch = k * cost^p, p fitted (log-log least squares) over the
  trials past their first epoch, or PRIOR_EXPONENT while their costs are all one, and k the median
  of the latest trials' rate / cost^p;
- a trial a sampler has yet to draw costs the median rate per point of the latest trials, two per
  slot (a sampler's next configs resemble its latest ones more than its first), not counting the
  warm starts (configs the spec gave) once a drawn trial has reported.
That work is then laid on the sweep's slots (the most trials seen running at once), each waiting
trial on the slot that frees first; the sweep ends when the last slot frees.
"""
from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Callable
from statistics import median
from typing import Any, NamedTuple

from .records import RUNNING, TrialRecord

RECENT_PER_SLOT = 2  # the trials whose rates price the ones not started yet, per slot
# a trial's first epochs say little of its rate: the first starts its data, model and threads (up to
# three times a later epoch) and an evaluation epoch costs about two. Its own rate counts from its
# SETTLED-th epoch on, and the cost model's beside it as PRIOR_EPOCHS more epochs
SETTLED = 2
PRIOR_EPOCHS = 2
# seconds per epoch grow as the epoch's cost to this power until the sweep's trials tell. It prices a
# grid's smaller trials while its costliest, which run first, are all that reported: the
# confirmation's 3-seed bundles scaled as cost^0.9 to cost^1.1 on 2 cores (an 18x18 epoch 14.2 s, a
# 12x6 one 2.6 s, a 6x6 one 1.9 s), single-seed trials as cost^0.8 (5.4 s and 1.0 s)
PRIOR_EXPONENT = 1.0
SPAN = 1.2  # the fit needs costs at least this far apart
MAX_EXPONENT = 1.5  # and keeps within [0, this]: a costlier epoch takes no less time, nor far more

Config = dict[str, Any]


class Queued(NamedTuple):
    """A Ray trial the sweep will create, priced once: its points' epoch costs summed, its longest
    point's epochs (how long it runs) and its points' epochs summed (what it adds to the plan)."""

    cost: float
    epochs: int
    point_epochs: int


def done_epochs(records: list[TrialRecord]) -> int:
    return sum(r.epochs for r in records)


class Eta:
    def __init__(self, total: int, epochs: int, given: int = 0, cost: Callable[[Config], float] | None = None,
                 queue: list[list[Config]] | None = None):
        """total: the sweep's trials (a fused trial's points one by one); epochs: train.epochs;
        given: the sweep's first trials whose configs the spec gave (search.warm_start);
        cost: a trial's config -> its epoch's relative cost (None: all alike);
        queue: where the sweep knows them (a grid), its Ray trials' configs (a point's each) in the
        order it creates them."""
        self.total, self.epochs, self.given = total, epochs, given
        self.cost = cost or (lambda config: 1.0)
        self.queue = None if queue is None else [Queued(sum(map(self.cost, points)), max(map(self.epochs_of, points)),
                                                        sum(map(self.epochs_of, points))) for points in queue]
        self.slots = 1  # the most Ray trials seen running at once
        self.costs: dict[str, float] = {}  # each Ray trial's epoch cost (trial_costs)

    def planned_of(self, record: TrialRecord) -> int:
        """A trial's epochs: those it trained if it has ended, else its own train.epochs."""
        return record.epochs if record.finished else max(record.epochs, self.epochs_of(record.config))

    def epochs_of(self, config: Config) -> int:
        return config.get("train.epochs", self.epochs)

    def planned(self, records: list[TrialRecord]) -> int:
        """Every epoch the sweep will have trained: the trials seen, and the ones not yet created."""
        seen = sum(map(self.planned_of, records))
        if self.queue is not None:
            return seen + sum(q.point_epochs for q in self.unseen(records))
        return seen + max(self.total - len(records), 0) * self.epochs

    def unseen(self, records: list[TrialRecord]) -> list[Queued]:
        """The queue's Ray trials not yet created."""
        return self.queue[len(by_trial(records)):]

    def observe(self, running: int) -> None:
        """`running` Ray trials at once: at least as many slots (told as each trial starts)."""
        self.slots = max(self.slots, running)

    def trial_costs(self, trials: dict[str, list[TrialRecord]]) -> dict[str, float]:
        """Each Ray trial's epoch cost, its points' summed, priced when first seen: fixed for the
        trial's life, as PBT mutates no shape or data key (pbt.check_pbt)."""
        for ray_id, points in trials.items():
            if ray_id not in self.costs:
                self.costs[ray_id] = sum(self.cost(p.config) for p in points)
        return self.costs

    def seconds_left(self, records: list[TrialRecord]) -> float | None:
        """None until a trial has reported an epoch."""
        trials = by_trial(records)
        running = running_trials(trials)
        self.observe(len(running))
        costs = self.trial_costs(trials)
        own = {ray_id: (points[0].time_s, points[0].epochs) for ray_id, points in trials.items()
               if points[0].epochs > 0 and math.isfinite(points[0].time_s)}
        if not own:
            return None
        given = list(trials)[:self.given]  # Ray lists its trials as it creates them
        rates, rate_of, recent = prices(own, costs, given, RECENT_PER_SLOT * self.slots)
        point_rate = median(rates[ray_id] / len(trials[ray_id]) for ray_id in recent)  # a fused trial's points share it

        def left(points: list[TrialRecord]) -> float:
            rate = rates.get(points[0].ray_id) or rate_of(costs[points[0].ray_id])
            return max(max(map(self.planned_of, points)) - points[0].epochs, 0) * rate

        busy = [left(trials[ray_id]) for ray_id in running]
        waiting = [left(points) for ray_id, points in trials.items()
                   if ray_id not in running and not all(p.finished for p in points)]
        if self.queue is not None:
            waiting += [q.epochs * rate_of(q.cost) for q in self.unseen(records)]
        else:
            waiting += [self.epochs * point_rate] * max(self.total - len(records), 0)
        return finish_time(busy, waiting, self.slots)


def prices(own: dict[str, tuple[float, int]], costs: dict[str, float], given: list[str],
           recent_n: int) -> tuple[dict[str, float], CostModel, list[str]]:
    """(seconds per epoch of each Ray trial that reported, the cost model, the latest trials, which
    price those not yet drawn) from each one's (seconds, epochs) so far and its epoch's cost;
    `given`: the warm starts; `recent_n`: how many latest trials."""
    settled = {ray_id: (s, e) for ray_id, (s, e) in own.items() if e >= SETTLED} or own
    drawn = [ray_id for ray_id in settled if ray_id not in given] or list(settled)
    recent = drawn[-recent_n:]
    rate_of = CostModel({ray_id: (costs[ray_id], s / e) for ray_id, (s, e) in settled.items()}, recent)
    # a trial's own seconds per epoch, with the model's as PRIOR_EPOCHS more epochs; the model's
    # alone until it has settled
    rates = {ray_id: (s + PRIOR_EPOCHS * rate_of(costs[ray_id])) / (e + PRIOR_EPOCHS)
             if ray_id in settled else rate_of(costs[ray_id]) for ray_id, (s, e) in own.items()}
    return rates, rate_of, recent


class CostModel:
    """Seconds per epoch of a Ray trial from its epoch's cost: k * cost^p (see the module's text)."""

    def __init__(self, seen: dict[str, tuple[float, float]], recent: list[str]):
        """seen: (cost, seconds per epoch) of each Ray trial that reported; recent: the latest of them."""
        logs = [(math.log(c), math.log(r)) for c, r in seen.values() if c > 0 and r > 0]
        self.exponent = fitted_exponent(logs)
        self.scale = median(seen[i][1] / seen[i][0] ** self.exponent for i in recent)

    def __call__(self, cost: float) -> float:
        return self.scale * cost ** self.exponent


def fitted_exponent(logs: list[tuple[float, float]]) -> float:
    """The least-squares slope of log rate on log cost; PRIOR_EXPONENT while the costs are about one."""
    if not logs or max(x for x, _ in logs) - min(x for x, _ in logs) < math.log(SPAN):
        return PRIOR_EXPONENT
    mean_x = sum(x for x, _ in logs) / len(logs)
    spread = sum((x - mean_x) ** 2 for x, _ in logs)
    mean_y = sum(y for _, y in logs) / len(logs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in logs) / spread
    return min(max(slope, 0.0), MAX_EXPONENT)


def by_trial(records: list[TrialRecord]) -> dict[str, list[TrialRecord]]:
    """The records (points) of each Ray trial, in Ray's order."""
    trials = defaultdict(list)
    for r in records:
        trials[r.ray_id].append(r)
    return trials


def running_trials(trials: dict[str, list[TrialRecord]]) -> set[str]:
    return {ray_id for ray_id, points in trials.items()
            if points[0].ray_state == RUNNING or any(p.state == RUNNING for p in points)}


def finish_time(busy: list[float], waiting: list[float], slots: int) -> float:
    """When the last of `slots` frees: each busy for its time, then each waiting job, in order, on
    the slot that frees first."""
    free = sorted(busy) + [0.0] * max(slots - len(busy), 0)
    heapq.heapify(free)
    for job in waiting:
        heapq.heappush(free, heapq.heappop(free) + job)
    return max(free, default=0.0)
