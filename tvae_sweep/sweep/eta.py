"""The sweep's time left, from what its trials' epochs cost.

An epoch's cost differs several-fold between configs (18 capsules of 18 against 6 of 6), so a rate
of epochs per second over the whole sweep misleads whenever the expensive trials run first (the
warm starts) or last. Instead each Ray trial's seconds per epoch are its own (Ray's time_total_s
over the epochs it reported): a running trial's remaining epochs cost its own rate, a trial not
started yet the median rate of the latest trials, two per slot (per point, for fused trials): a
sampler's next configs resemble its latest ones more than its first (startup trials), and the warm
starts, configs the spec gave rather than the sampler drew, price them only until another trial has
reported.
That work is then laid on the sweep's slots (the most trials seen running at once), each waiting
trial on the slot that frees first; the sweep ends when the last slot frees.
"""
from __future__ import annotations

import heapq
import math
from collections import defaultdict
from statistics import median

from .records import RUNNING, TrialRecord

RECENT_PER_SLOT = 2  # the trials whose rates price the ones not started yet, per slot


def done_epochs(records: list[TrialRecord]) -> int:
    return sum(r.epochs for r in records)


class Eta:
    def __init__(self, total: int, epochs: int, given: int = 0):
        """total: the sweep's trials (a fused trial's points one by one); epochs: train.epochs;
        given: the sweep's first trials whose configs the spec gave (search.warm_start)."""
        self.total, self.epochs, self.given = total, epochs, given
        self.slots = 1  # the most Ray trials seen running at once

    def planned_of(self, record: TrialRecord) -> int:
        """A trial's epochs: those it trained if it has ended, else its own train.epochs."""
        return record.epochs if record.finished else max(record.epochs, record.config.get("train.epochs", self.epochs))

    def planned(self, records: list[TrialRecord]) -> int:
        """Every epoch the sweep will have trained: the trials seen, and the ones not yet created."""
        return sum(map(self.planned_of, records)) + max(self.total - len(records), 0) * self.epochs

    def observe(self, running: int) -> None:
        """`running` Ray trials at once: at least as many slots (told as each trial starts)."""
        self.slots = max(self.slots, running)

    def seconds_left(self, records: list[TrialRecord]) -> float | None:
        """None until a trial has reported an epoch."""
        trials = by_trial(records)
        running = running_trials(trials)
        self.observe(len(running))
        rates = {ray_id: points[0].time_s / points[0].epochs for ray_id, points in trials.items()
                 if points[0].epochs > 0 and math.isfinite(points[0].time_s)}
        if not rates:
            return None
        given = set(list(trials)[:self.given])  # Ray lists its trials as it creates them
        drawn = [ray_id for ray_id in rates if ray_id not in given] or list(rates)
        recent = drawn[-RECENT_PER_SLOT * self.slots:]
        point_rate = median(rates[ray_id] / len(trials[ray_id]) for ray_id in recent)

        def left(points: list[TrialRecord]) -> float:
            rate = rates.get(points[0].ray_id, point_rate * len(points))
            return max(max(map(self.planned_of, points)) - points[0].epochs, 0) * rate

        busy = [left(trials[ray_id]) for ray_id in running]
        waiting = [left(points) for ray_id, points in trials.items()
                   if ray_id not in running and not all(p.finished for p in points)]
        waiting += [self.epochs * point_rate] * max(self.total - len(records), 0)
        return finish_time(busy, waiting, self.slots)


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
