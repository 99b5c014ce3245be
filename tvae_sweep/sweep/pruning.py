"""What a finished trial keeps on disk: one checkpoint with its model weights (and the pictures
drawn beside it), no optimiser state and no older checkpoints.

A running trial keeps `storage.keep_checkpoints` full checkpoints, which resuming it needs. When a
trial finishes (run to its end, stopped early by the scheduler, or failed for good because it
diverged), `CheckpointPruner` drops its older checkpoints and rewrites the newest as weights only,
a third of its size with Adam. PBT never exploits a finished trial, so this holds for PBT sweeps
too. A trial that failed otherwise (its worker lost after its retries, or interrupted by Ctrl-C,
which reaches the workers too) keeps its checkpoints whole: `resume` continues it from them.
`tvae-sweep prune` goes further on a stopped sweep: it removes the weights of all but the best K
finished trials.

Only checkpoints on a local (or mounted) filesystem are pruned; an object store keeps them whole.
"""
from __future__ import annotations

import shutil
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from ray.tune import Callback

from ..checkpoints import prune_checkpoint, state_files
from .layout import disk_usage
from .records import ERROR, TERMINATED, TrialRecord, records_of
from .results import ranked
from .trainable import DIVERGED_FILE

CHECKPOINT_PREFIX = "checkpoint_"  # Ray's checkpoint folders: checkpoint_000000, checkpoint_000001, ...


def checkpoints(trial_folder: Path) -> list[Path]:
    """The trial's checkpoint folders, oldest first."""
    return sorted(p for p in trial_folder.glob(CHECKPOINT_PREFIX + "*") if p.is_dir())


def prune_trial(trial_folder: Path) -> int:
    """Keeps the newest checkpoint as weights only and removes the older ones; returns bytes freed.

    Safe to run again, and safe to kill: the newest checkpoint is rewritten atomically before any
    older one is removed."""
    found = checkpoints(trial_folder)
    if not found:
        return 0
    newest, older = found[-1], found[:-1]
    freed = sum(prune_checkpoint(state.parent) for state in state_files(newest))
    for folder in older:
        freed += disk_usage(folder)
        shutil.rmtree(folder, ignore_errors=True)
    return freed


class CheckpointPruner(Callback):
    """Prunes each trial's checkpoints once it has finished and Ray's saved experiment state says so,
    so a long sweep holds its running trials' full state and little more.

    A driver killed between a trial's end and Ray's next save of the experiment would be resumed
    from a state in which the trial still runs, and continue it from a checkpoint Ray remembers. So
    a finished trial waits. Ray saves the experiment state every 10 s or more (calling `get_state`
    of its callbacks as it does), then copies it to the storage path in the background, and starts
    a save's copy only once the previous one is done. A trial that ended before one save is pruned
    two saves later: by then the next save has started its copy, so that save's copy, which shows
    the trial finished, is in place.
    """

    SAVES = 2  # the saves a finished trial waits for

    def __init__(self):
        self.pending: dict[str, TrialRecord] = {}  # ended since the last save
        self.waiting: deque[dict[str, TrialRecord]] = deque()  # ended before each of the last saves

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.hold(records_of([trial], finished={trial.trial_id}))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.hold(records_of([trial]))

    def hold(self, records: list[TrialRecord]) -> None:
        """A Ray trial's records (one, or a fused trial's points), kept for pruning if it ended for good."""
        if records and trial_finished(records[0]):
            self.pending[records[0].ray_id] = records[0]

    def get_state(self) -> None:
        """Called by Ray as it saves the experiment state: prunes the trials that ended SAVES saves
        ago. Keeps no state of its own (None)."""
        self.waiting.append(self.pending)
        self.pending = {}
        if len(self.waiting) > self.SAVES:
            for record in self.waiting.popleft().values():
                prune(record)
        return None


def prune(record: TrialRecord) -> None:
    """Prunes the record's Ray trial, if its checkpoints are on a local (or mounted) filesystem."""
    folder = Path(record.path)
    if record.checkpoint is not None and record.checkpoint.local and folder.is_dir():
        prune_trial(folder)


def diverged(trial_folder: Path) -> bool:
    """A trial that failed for good: its loss became non-finite (a retry would fail at once)."""
    return (trial_folder / DIVERGED_FILE).is_file()


def trial_finished(record: TrialRecord) -> bool:
    """Whether the record's Ray trial (a fused one, for a point) has ended for good."""
    return finished_for_good(record.ray_state, Path(record.path))


def finished_for_good(state: str, trial_folder: Path) -> bool:
    """Run to its end or stopped early (TERMINATED), or failed for good (it diverged); a trial that
    failed otherwise is continued by `resume`, from the checkpoints it keeps."""
    return state == TERMINATED or (state == ERROR and diverged(trial_folder))


def prune_finished(records: list[TrialRecord]) -> None:
    """Prunes every finished trial of a finished sweep: those that finished while no driver watched
    (a driver killed between a trial's end and its prune, then resumed) included."""
    trials = {record.ray_id: record for record in records}  # a fused trial's points share its folder
    for record in trials.values():
        if trial_finished(record):
            prune(record)


# ---------------------------------------------------------------- `tvae-sweep prune`


@dataclass(frozen=True)
class PrunePlan:
    metric: str
    kept: list[str]  # the best finished trials, whose weights stay
    removed: dict[str, Path]  # <trial>/<checkpoint>[/seed_<s>] -> a weights file to remove
    freed: int  # bytes

    def describe(self, name: str) -> str:
        kept = ", ".join(self.kept) or "none"
        trials = len({key.split("/")[0] for key in self.removed})
        return (f"prune {name}: removes the weights of {trials} finished trials "
                f"({self.freed / 1e6:.1f} MB); keeps the best {len(self.kept)} by {self.metric}: {kept}")


def trial_location(checkpoint: str) -> tuple[Path, str]:
    """A row's checkpoint as (its Ray trial's folder, the point's folder inside each checkpoint:
    '' for a trial of its own, point_<i> for a point of a fused trial)."""
    path = Path(checkpoint)
    if path.parent.name.startswith(CHECKPOINT_PREFIX):
        return path.parent.parent, path.name
    return path.parent, ""


def plan_prune(frame: pd.DataFrame, metric: str, keep_best: int) -> PrunePlan:
    """The weights to remove: every finished trial's but those of the best `keep_best` by `metric`."""
    kept = list(ranked(frame, metric, keep_best)["trial_id"]) if keep_best else []
    removed = {}
    for _, row in frame.iterrows():
        checkpoint = row.get("checkpoint")
        if row["trial_id"] in kept or not isinstance(checkpoint, str):
            continue
        trial, point = trial_location(checkpoint)
        if not finished_for_good(row["state"], trial):
            continue  # a trial that `resume` would continue keeps what it needs
        for folder in checkpoints(trial):
            for weights in state_files(folder / point):
                removed[f"{row['trial_id']}/{weights.parent.relative_to(trial)}"] = weights
    return PrunePlan(metric, kept, removed, sum(p.stat().st_size for p in removed.values()))


def apply_prune(plan: PrunePlan, frame: pd.DataFrame) -> int:
    """Removes the planned weights, and prunes the kept trials' checkpoints to weights only (a sweep
    from before pruning keeps them whole); returns the bytes freed."""
    freed = 0
    for checkpoint in frame.loc[frame["trial_id"].isin(plan.kept), "checkpoint"]:
        freed += prune_trial(trial_location(checkpoint)[0])
    for path in plan.removed.values():
        if path.is_file():
            freed += path.stat().st_size
            path.unlink()
    return freed
