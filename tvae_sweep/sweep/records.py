"""A trial as tvae-sweep knows it: one `TrialRecord` per trial, one per point of a fused trial.

Ray's Trial is read here and nowhere else: `records_of` turns Ray's trials (live in a Tune hook, or
as Ray saved them) into records, and the console, the tracking, the trials table, the pruner and
`collect` read records only. Ray's state names are spelled here once. Importing this module loads
no Ray: the trials are read by their attributes.
"""
from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..metrics import is_metric
from .fusion import MEMBERS, PARAMS, POINTS, Point, point_folder
from .rungs import Rungs
from .whole_files import on_this_machine

# Ray's trial states
PENDING, RUNNING, PAUSED, TERMINATED, ERROR = "PENDING", "RUNNING", "PAUSED", "TERMINATED", "ERROR"
FINISHED = (TERMINATED, ERROR)


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint folder (or a point's folder inside one) on its filesystem (None: this machine's)."""

    path: str
    filesystem: Any = None

    @property
    def local(self) -> bool:
        return on_this_machine(self.filesystem)

    def location(self) -> str:
        """The folder as a path or a URI, for people to read."""
        return self.path if self.local else f"{self.filesystem.type_name}://{self.path}"

    def folder(self, name: str) -> CheckpointRef:
        return CheckpointRef(f"{self.path.rstrip('/')}/{name}", self.filesystem)


@dataclass(frozen=True)
class TrialRecord:
    trial_id: str  # Ray's trial id; <ray id>_p<i> for the i-th point of a fused trial
    ray_id: str  # the Ray trial it belongs to
    state: str  # one of Ray's states; a point that failed alone is ERROR in a trial that ran on
    config: dict[str, Any]  # the searched values (a point's trial config)
    last: dict[str, Any]  # the last report: the metrics and Ray's bookkeeping keys
    best: dict[str, Any] = field(default_factory=dict)  # each metric's best over the trial's history
    epochs: int = 0
    time_s: float = float("nan")
    node_id: str | None = None
    error: str | None = None  # the last line of the error of a failed trial
    checkpoint: CheckpointRef | None = None  # the latest checkpoint (a point's folder of it)
    ray_state: str = ""  # the Ray trial's own state (a fused trial's, for its points)
    name: str = ""  # Ray's name of the trial
    path: str = ""  # the Ray trial's folder
    retries: int = 0  # failures Ray recovered from
    traceback: str | None = None  # the whole text of its error (or of the last one Ray recovered from)
    stopped_at_rung: int | None = None  # the ASHA rung at which the scheduler stopped it (rungs.py)
    # every report it made, oldest first, as {"epoch": e, <metric>: value, ...} (a point's: its own);
    # read from the trial's saved results (saved_records), empty in a live hook's record
    history: tuple[dict[str, Any], ...] = ()

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


def last_line(text: str) -> str:
    """The last line of a traceback: the exception and its message."""
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "failed"


def records_of(trials: Iterable, result: dict | None = None, checkpoint=None,
               finished: Collection[str] = (), rungs: Rungs | None = None,
               histories: Mapping[str, Any] | None = None) -> list[TrialRecord]:
    """Ray's trials as records, a fused trial as its points. `result` and `checkpoint`: a report or
    checkpoint newer than the trial's own (for a single trial, in the hook that receives them);
    `finished`: ids of trials that have ended though Ray has not marked them yet (a callback's
    on_trial_complete runs before it does); `rungs`: the sweep's ASHA rungs, to say at which one a
    trial ended early was stopped; `histories`: each trial's reports as Ray saved them (a table
    per trial id, one row a report: ExperimentAnalysis.trial_dataframes)."""
    out = []
    for trial in trials:
        report = result if result is not None else (trial.last_result or {})
        saved = checkpoint if checkpoint is not None else trial.checkpoint
        ref = CheckpointRef(saved.path, saved.filesystem) if saved is not None else None
        ray_state = TERMINATED if trial.trial_id in finished and trial.status != ERROR else trial.status
        retries = getattr(trial, "num_failures", 0)
        text = _error_text(trial) if ray_state == ERROR or retries else None
        common = dict(ray_id=trial.trial_id, ray_state=ray_state, path=str(trial.path), retries=retries)
        reports = saved_reports((histories or {}).get(trial.trial_id))
        if POINTS in (trial.config or {}):
            out += _points(trial, report, ref, text, reports, common)
        else:
            stopped = rungs.stopped_at(report) if rungs is not None and ray_state == TERMINATED else None
            out.append(_record(trial.trial_id, ray_state, dict(trial.config), report, ref, text,
                               name=str(trial), stopped_at_rung=stopped, history=_history(reports), **common))
    return out


def _points(trial, report: dict, ref: CheckpointRef | None, text: str | None, reports: list[dict],
            common: dict) -> list[TrialRecord]:
    """A fused trial's points: each with its config, its own report, its folder of the checkpoint."""
    params = trial.config.get(PARAMS) or [{} for _ in trial.config[POINTS]]
    out = []
    for i, (point_params, point_config) in enumerate(zip(params, trial.config[POINTS], strict=True)):
        own = point_report(report, i)
        alone = own.get("error")  # a point that failed while the others went on
        out.append(_record(f"{trial.trial_id}_p{i}", ERROR if alone else common["ray_state"],
                           Point(point_params, point_config).trial_config, own,
                           ref and ref.folder(point_folder(i)), alone or text, name=f"{trial}_p{i}",
                           history=_history(point_report(r, i) for r in reports), **common))
    return out


def point_report(report: dict, i: int) -> dict:
    """Point i's report within a fused trial's: the trial's keys, then the point's own."""
    members = report.get(MEMBERS) or []
    whole = {k: v for k, v in report.items() if k != MEMBERS}
    return {**whole, **(members[i] if i < len(members) else {})}


def saved_reports(table: Any) -> list[dict]:
    """The rows of a trial's saved results table (None: none saved) as reports, empty cells left out."""
    if table is None or len(table) == 0:
        return []
    return [{k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
            for row in table.to_dict("records")]


def _history(reports: Iterable[dict]) -> tuple[dict[str, Any], ...]:
    """Each report's epoch and metrics (not Ray's bookkeeping, not its best-so-far)."""
    return tuple({k: v for k, v in r.items() if k == "epoch" or is_metric(k)} for r in reports if "epoch" in r)


def _record(trial_id: str, state: str, config: dict, report: dict, checkpoint: CheckpointRef | None,
            error: str | None, **common) -> TrialRecord:
    last = dict(report)
    return TrialRecord(trial_id=trial_id, state=state, config=config, last=last,
                       best=dict(last.get("best") or {}),  # over the trial's history (trainable.best_metrics)
                       epochs=last.get("training_iteration", 0), time_s=last.get("time_total_s", float("nan")),
                       node_id=last.get("node_id"), error=last_line(error or "") if state == ERROR else None,
                       checkpoint=checkpoint, traceback=error or None, **common)


def _error_text(trial) -> str:
    """A failed trial's error (traceback included): the error file Ray writes beside the trial's
    results, else Ray's own record of it, else the driver's copy of the file (which reaches the
    storage path later, at once after a lost node)."""
    path = Path(trial.path) / "error.txt"
    if path.is_file():
        return path.read_text()
    try:
        text = trial.get_error()
    except Exception:  # the pickled error may be unreadable
        text = None
    copy = getattr(trial, "error_file", None)
    if not text and copy and Path(copy).is_file():
        text = Path(copy).read_text()
    return text or ""


def histories_of(records: Iterable[TrialRecord]) -> dict[str, tuple[dict[str, Any], ...]]:
    """Each record's history by its trial id."""
    return {record.trial_id: record.history for record in records}


def saved_records(experiment_path: str, rungs: Rungs | None = None, histories: bool = False) -> list[TrialRecord]:
    """The records of the trials of the Ray experiment saved at `experiment_path` (`rungs`: the
    sweep's ASHA rungs, see records_of), each with its history where `histories` (for the learning
    curves at a sweep's end: converting every report is left out of the readers that need states only)."""
    from ray.tune import ExperimentAnalysis  # noqa: PLC0415 records and their readers (MLflow) load no Ray

    analysis = ExperimentAnalysis(experiment_path)  # reads every trial's reports (result.json) too
    return records_of(analysis.trials, rungs=rungs, histories=analysis.trial_dataframes if histories else None)
