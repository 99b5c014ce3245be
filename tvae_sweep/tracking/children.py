"""The trials' child runs: one per trial record, found again by its trial id, fed its epochs,
checkpoint and pictures, and settled (FINISHED, FAILED with the reason, KILLED) as its trial ends."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.fs

from ..config import ConfigError
from ..images import PICTURES
from ..sweep.layout import SweepDir
from ..sweep.records import ERROR as RAY_ERROR
from ..sweep.records import TERMINATED, CheckpointRef, TrialRecord, last_line
from ..sweep.space import trial_run_config
from ..sweep.spec import SweepSpec
from . import publish
from .runs import ERROR, FAILED, FINISHED, KILLED, RUNNING, Child, SweepRuns, flatten


def searched_values(record: TrialRecord) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(record.config.items()))


def copy_from_checkpoint(checkpoint: CheckpointRef, name: str, target: Path) -> bool:
    """Copies one file of a checkpoint (on any pyarrow filesystem) to `target`, if it is there."""
    source = f"{checkpoint.path.rstrip('/')}/{name}"
    if checkpoint.filesystem.get_file_info(source).type != pyarrow.fs.FileType.File:
        return False
    with checkpoint.filesystem.open_input_stream(source) as stream:
        target.write_bytes(stream.read())
    return True


class ChildRuns:
    def __init__(self, runs: SweepRuns | None, spec: SweepSpec, sweep: SweepDir):
        self.runs, self.spec, self.sweep = runs, spec, sweep
        self.cached: dict[str, Child] = {}
        self.searched: dict[str, str] = {}  # the searched values last tagged on each trial's run

    def child(self, record: TrialRecord) -> Child:
        """The trial's run: cached, else found by its trial id under the parent, else created."""
        child = self.cached.get(record.trial_id)
        if child is None:
            try:
                config = flatten(trial_run_config(self.spec.base_dict(), record.config).to_dict())
            except ConfigError:
                config = {k: str(v) for k, v in record.config.items()}
            tags = {"ray.trial_name": record.name, "ray.trial_path": record.path,
                    "tvae_sweep.searched": searched_values(record)}
            child = self.runs.child(record.trial_id, f"trial-{record.trial_id}", tags, config)
            self.searched[record.trial_id] = searched_values(record)
            self.cached[record.trial_id] = child
        return child

    def mark_running(self, record: TrialRecord) -> None:
        child = self.child(record)
        if child.status != RUNNING:
            self.runs.set_status(child.run_id, RUNNING)
            child.status = RUNNING

    def log_result(self, record: TrialRecord, metrics: dict[str, float]) -> None:
        """One epoch's metrics (with the node and device it ran on) at the record's last report."""
        self.mark_running(record)
        last = record.last
        step = int(last.get("epoch") or last.get("training_iteration") or 0)
        tags: dict[str, Any] = {k: last[r] for k, r in (("ray.node_id", "node_id"), ("ray.hostname", "hostname"),
                                                        ("tvae_sweep.device", "device")) if last.get(r)}
        if searched_values(record) != self.searched.get(record.trial_id):  # PBT changes a trial's config
            tags["tvae_sweep.searched"] = self.searched[record.trial_id] = searched_values(record)
        self.runs.log_step(self.child(record), step, metrics, tags)

    def log_checkpoint(self, record: TrialRecord) -> None:
        """The record's checkpoint as a tag, and its pictures as artifacts (and cached for the report)."""
        child, checkpoint = self.child(record), record.checkpoint
        self.runs.set_tags(child.run_id, {"tvae_sweep.checkpoint": checkpoint.location()})
        with tempfile.TemporaryDirectory() as tmp:
            for name in PICTURES:
                local = Path(tmp) / name
                if copy_from_checkpoint(checkpoint, name, local):
                    self.runs.put_file(child.run_id, local)
                    cached = publish.cached_picture(self.sweep, record.trial_id, name)
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    cached.write_bytes(local.read_bytes())

    def log_retry(self, record: TrialRecord) -> None:
        tags = {"tvae_sweep.retries": record.retries, "tvae_sweep.last_error": last_line(record.traceback or "")}
        self.runs.set_tags(self.child(record).run_id, tags)

    def log_complete(self, record: TrialRecord) -> None:
        child = self.child(record)
        if record.epochs < self.spec.run.train.epochs:
            stopped = f"by the scheduler after {record.epochs} epochs"
            self.runs.set_tags(child.run_id, {"tvae_sweep.stopped_early": stopped})
        if record.stopped_at_rung is not None:
            self.runs.set_tags(child.run_id, {"tvae_sweep.stopped_at_rung": record.stopped_at_rung})
        self.runs.set_status(child.run_id, FINISHED)
        child.status = FINISHED

    def log_error(self, record: TrialRecord) -> None:
        """The failed trial's run: its error's last line as a tag, the whole error as error.txt (once)."""
        child = self.child(record)
        if child.status == FAILED:
            return
        self.runs.set_tags(child.run_id, {ERROR: record.error or "failed"})
        if record.traceback:
            self.runs.client.log_text(child.run_id, record.traceback, "error.txt")
        self.runs.set_status(child.run_id, FAILED)
        child.status = FAILED

    def log_killed(self, records: list[TrialRecord]) -> None:
        """The runs of trials that had not ended when the sweep stopped."""
        for record in records:
            child = self.cached.get(record.trial_id)
            if child is not None and child.status == RUNNING and not record.finished:
                self.runs.set_status(child.run_id, KILLED)
                child.status = KILLED

    def settle(self, frame: pd.DataFrame) -> None:
        """Runs left RUNNING (by a driver that died, say) take their trial's state in Ray's table."""
        rows = frame.set_index("trial_id") if len(frame) else pd.DataFrame()
        for run in self.runs.children():
            if run.info.status != RUNNING:
                continue
            trial_id = run.data.tags.get("tvae_sweep.trial_id")
            state = rows.loc[trial_id, "state"] if trial_id in rows.index else None
            if state == RAY_ERROR:
                reason = rows.loc[trial_id].get("error") if "error" in rows else None
                self.runs.set_tags(run.info.run_id, {ERROR: reason or "failed"})
            status = FINISHED if state == TERMINATED else FAILED if state == RAY_ERROR else KILLED
            self.runs.set_status(run.info.run_id, status)
