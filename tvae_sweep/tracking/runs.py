"""A sweep's MLflow runs: one parent, one nested child per trial, found again by their tags.

A run is looked up before it is made: the parent by the sweep's name and launch, a child by its Ray
trial id under that parent. So a resumed sweep (a new driver) or a retried trial logs into the run it
had. The last logged epoch of a child is kept in a tag, written with the metrics, so an epoch that is
reported again after a resume is not logged twice. A trial that a killed driver started but Ray had
not yet saved is run again under a new id after the resume: its first run is deleted, so each trial
Ray knows has exactly one run.
"""
from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .store import client, experiment_id, sqlite_file

SWEEP = "tvae_sweep.sweep"
LAUNCH = "tvae_sweep.launch"
ROLE = "tvae_sweep.role"  # "sweep" or "trial"
TRIAL = "tvae_sweep.trial_id"
LAST_STEP = "tvae_sweep.last_step"
ERROR = "tvae_sweep.error"
DISCARDED = "tvae_sweep.discarded"
STAGE = "tvae_sweep.stage"  # a later stage's trial runs (the confirmation's), children of the sweep's parent
PARENT = "mlflow.parentRunId"
NOTE = "mlflow.note.content"

RUNNING, FINISHED, FAILED, KILLED = "RUNNING", "FINISHED", "FAILED", "KILLED"
BATCH = 100  # MLflow takes at most 100 params and 1000 metrics in one batch
MAX_TAG, MAX_PARAM = 5000, 6000  # value lengths kept within MLflow's limits


@dataclass
class Child:
    run_id: str
    last_step: int
    status: str


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "\\'") + "'"


def _clip(values: dict[str, Any], limit: int) -> dict[str, str]:
    return {k: str(v)[:limit] for k, v in values.items()}


def _entities():
    """MLflow's entities. MLflow is imported on a thread while Ray starts (store.prepare), so this
    module, which the sweep commands import before that, does not import it at its top."""
    from mlflow import entities  # noqa: PLC0415 MLflow loads on store.prepare's thread, beside Ray's start

    return entities


def _now_ms() -> int:
    return int(time.time() * 1000)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{"model": {"n_caps": 4}} -> {"model.n_caps": "4"}."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return flat


def launch_id(sweep) -> str:
    """Tells launches of the same sweep name apart (a sweep replaced with --overwrite)."""
    return f"{float(sweep.read_state().get('created', 0)):.3f}"


class SweepRuns:
    """The runs of a sweep, or of one of its later stages (`stage`: its trials' runs are tagged with
    it, and those of the search or another stage are not its own)."""

    def __init__(self, client, experiment_id: str, sweep: str, launch: str, stage: str | None = None):
        self.client = client
        self.experiment_id = experiment_id
        self.sweep = sweep
        self.launch = launch
        self.stage = stage
        self.parent_id: str | None = None

    def _own(self, runs: list) -> list:
        return [r for r in runs if r.data.tags.get(STAGE) == self.stage]

    # ------------------------------------------------------------ lookups

    def _search(self, conditions: list[str], max_results: int | None = None) -> list:
        query = " and ".join(conditions)
        runs, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string=query,
                                           run_view_type=_entities().ViewType.ACTIVE_ONLY,
                                           max_results=max_results or 1000, page_token=token,
                                           order_by=["attributes.start_time ASC"])
            runs.extend(page)
            token = page.token
            if not token or max_results:
                return runs

    def find_parent(self):
        runs = self._search([f"tags.`{SWEEP}` = {_quote(self.sweep)}", f"tags.`{LAUNCH}` = {_quote(self.launch)}",
                             f"tags.`{ROLE}` = 'sweep'"], max_results=1)
        return runs[0] if runs else None

    def find_child(self, trial_id: str):
        runs = self._own(self._search([f"tags.`{PARENT}` = {_quote(self.parent_id)}",
                                       f"tags.`{TRIAL}` = {_quote(trial_id)}"]))
        return runs[0] if runs else None

    def children(self) -> list:
        return self._own(self._search([f"tags.`{PARENT}` = {_quote(self.parent_id)}"]))

    # ------------------------------------------------------------ the parent

    def open_parent(self, run_name: str, tags: dict[str, str], params: dict[str, str],
                    files: Iterable[Path] = ()) -> bool:
        """Finds the sweep's parent run (marking it RUNNING again) or creates it; True if created."""
        found = self.find_parent()
        if found is not None:
            self.parent_id = found.info.run_id
            self.complete(found, params)
            logged = {a.path for a in self.client.list_artifacts(self.parent_id)}
            for path in files:
                if Path(path).name not in logged:
                    self.client.log_artifact(self.parent_id, str(path))
            self.set_status(self.parent_id, RUNNING)
            return False
        tags = {**tags, SWEEP: self.sweep, LAUNCH: self.launch, ROLE: "sweep"}
        run = self.client.create_run(self.experiment_id, tags=_clip(tags, MAX_TAG), run_name=run_name)
        self.parent_id = run.info.run_id
        self.log_params(self.parent_id, params)
        for path in files:
            self.client.log_artifact(self.parent_id, str(path))
        return True

    # ------------------------------------------------------------ children

    def child(self, trial_id: str, run_name: str, tags: dict[str, str], params: dict[str, str]) -> Child:
        """The run of a trial, found by its id under the parent, else created with its config."""
        found = self.find_child(trial_id)
        if found is not None:
            self.complete(found, params)
            last = int(found.data.tags.get(LAST_STEP, 0))
            return Child(found.info.run_id, last, found.info.status)
        tags = {**tags, PARENT: self.parent_id, SWEEP: self.sweep, LAUNCH: self.launch, ROLE: "trial",
                TRIAL: trial_id, **({STAGE: self.stage} if self.stage else {})}
        run_name = f"{self.stage}-{run_name}" if self.stage else run_name
        run = self.client.create_run(self.experiment_id, tags=_clip(tags, MAX_TAG), run_name=run_name)
        self.log_params(run.info.run_id, params)
        return Child(run.info.run_id, 0, RUNNING)

    def log_step(self, child: Child, step: int, metrics: dict[str, float], tags: dict[str, str] | None = None) -> bool:
        """Logs one epoch's metrics at `step`, unless that epoch is already logged."""
        if step <= child.last_step:
            return False
        stamp = _now_ms()
        batch = [_entities().Metric(k, float(v), stamp, step) for k, v in metrics.items()]
        tag_list = [_entities().RunTag(k, v) for k, v in _clip({**(tags or {}), LAST_STEP: step}, MAX_TAG).items()]
        self.client.log_batch(child.run_id, metrics=batch, tags=tag_list)
        child.last_step = step
        return True

    def discard(self, run, reason: str) -> None:
        """Deletes (recoverably) the run of a trial that Ray will never continue."""
        self.set_tags(run.info.run_id, {DISCARDED: reason})
        if run.info.status == RUNNING:
            self.set_status(run.info.run_id, KILLED)
        self.client.delete_run(run.info.run_id)

    # ------------------------------------------------------------ common

    def complete(self, run, params: dict[str, str]) -> None:
        """Logs the params a found run lacks: its driver may have died between creating and filling it."""
        missing = {k: v for k, v in params.items() if k not in run.data.params}
        if missing:
            self.log_params(run.info.run_id, missing)

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        items = [_entities().Param(k, v) for k, v in _clip(params, MAX_PARAM).items()]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(run_id, params=items[i:i + BATCH])

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        if tags:
            self.client.log_batch(run_id, tags=[_entities().RunTag(k, v) for k, v in _clip(tags, MAX_TAG).items()])

    def set_status(self, run_id: str, status: str) -> None:
        if status == RUNNING:
            self.client.update_run(run_id, status=RUNNING)
        else:
            self.client.set_terminated(run_id, status=status, end_time=_now_ms())

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        stamp = _now_ms()
        if metrics:
            batch = [_entities().Metric(k, float(v), stamp, step) for k, v in metrics.items()]
            self.client.log_batch(run_id, metrics=batch)

    def put_table(self, run_id: str, frame: pd.DataFrame, artifact_file: str) -> None:
        """Logs `frame` as an MLflow table, replacing an earlier version of it (log_table appends)."""
        folder, _, name = artifact_file.rpartition("/")
        existing = {a.path for a in self.client.list_artifacts(run_id, folder or None)}
        if artifact_file not in existing:
            self.client.log_table(run_id, data=frame, artifact_file=artifact_file)
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            frame.to_json(path, orient="split", index=False, date_format="iso")  # log_table's format
            self.client.log_artifact(run_id, str(path), folder or None)

    def put_file(self, run_id: str, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), folder)


def locate(store, experiment: str, sweep) -> tuple[str | None, str | None]:
    """(experiment id, parent run id) of a sweep in `store`, without creating anything."""
    db = sqlite_file(store.uri)
    if db is not None and not db.is_file():
        return None, None
    mlflow_client = client(store)
    found = experiment_id(mlflow_client, experiment, store.artifact_root, create=False)
    if found is None:
        return None, None
    parent = SweepRuns(mlflow_client, found, sweep.name, launch_id(sweep)).find_parent()
    return found, parent.info.run_id if parent is not None else None
