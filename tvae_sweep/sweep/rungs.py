"""ASHA's rungs: the epochs at which it compares trials, and the rung at which it stopped one.

Ray's ASHAScheduler (one objective) and mo_asha.MultiObjectiveAsha (several) share these milestones:
grace_period * reduction_factor**k epochs, k = 0, 1, ..., below max_t (train.epochs, where every
trial ends anyway). Rung k is the k-th milestone, rung 0 the first. A trial is compared at most once
per rung, at its first report at or after the milestone that holds its objectives; a report past
several milestones at once (train.eval_every > 1) counts at the highest of them. So a trial ASHA
stopped after e epochs was stopped at the highest milestone at or below e.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .spec import SweepSpec


def milestones(grace_period: int, reduction_factor: float, max_t: int) -> list[float]:
    """The epochs of the rungs below max_t, lowest first."""
    out, milestone = [], float(grace_period)
    while milestone < max_t:
        out.append(milestone)
        milestone *= reduction_factor
    return out


def rung_of(epochs: int, grace_period: int, reduction_factor: float, max_t: int) -> int | None:
    """The rung at which ASHA stopped a trial that ended after `epochs` epochs (None: it did not
    end early, or ended before the first rung, so not by ASHA)."""
    return Rungs(grace_period, reduction_factor, max_t).reached(epochs) if epochs < max_t else None


@dataclass(frozen=True)
class Rungs:
    """An ASHA schedule: the rungs of a sweep whose scheduler is asha."""

    grace_period: int
    reduction_factor: float
    max_t: int  # train.epochs

    @property
    def milestones(self) -> list[float]:
        return milestones(self.grace_period, self.reduction_factor, self.max_t)

    def reached(self, epochs: int) -> int | None:
        """The highest rung at or below `epochs` epochs (None: below the first)."""
        passed = [k for k, m in enumerate(self.milestones) if m <= epochs]
        return passed[-1] if passed else None

    def stopped_at(self, last: dict[str, Any]) -> int | None:
        """The rung at which ASHA stopped the ended trial whose last report is `last` (Ray marks the
        report that ends a trial done; one stopped early has fewer epochs than max_t). None for a
        trial that ran its epochs or that Ray has not ended (an interrupted sweep's)."""
        if not last.get("done"):
            return None
        return rung_of(int(last.get("training_iteration") or 0), self.grace_period, self.reduction_factor, self.max_t)


def asha_rungs(spec: SweepSpec) -> Rungs | None:
    """The sweep's ASHA rungs; None unless its scheduler is asha."""
    s = spec.search
    if s.scheduler != "asha":
        return None
    return Rungs(s.grace_period, s.reduction_factor, spec.run.train.epochs)
