"""A sweep's trials written into MLflow: the parent run (parent.py), a child run per trial record
(children.py), written on the tracking thread (writer.py).

`TrialLog.start` opens the store and the sweep's parent run before the first trial (so a store that
cannot be used is a one-line error); the hooks hand each write to the tracking thread (`later`);
`close` waits for that thread, then settles every status once the sweep has returned: FINISHED,
FAILED (with the reason), KILLED. It knows trials only as records and imports no Ray:
tracking/callback.py adapts Tune's hooks to it.

Trials never talk to MLflow: they report to the driver, and their pictures are read from the
checkpoints they write to the sweep's storage path (a local folder, NFS, or an object store).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pandas as pd

from ..sweep.layout import SweepDir, origin_of
from ..sweep.results import trials_frame
from ..sweep.rungs import asha_rungs
from ..sweep.spec import SweepSpec
from . import store as stores
from .children import ChildRuns
from .curves import Histories
from .parent import ConfirmationParent, ParentRun
from .writer import Writer


class TrialLog:
    def __init__(self, store: stores.Store, experiment: str, spec: SweepSpec, sweep: SweepDir,
                 figure_interval: float = 300.0):
        self.store, self.experiment, self.spec, self.sweep = store, experiment, spec, sweep
        self.figure_interval = figure_interval
        self.writer = Writer()
        self.parent: ParentRun | None = None
        self.children = ChildRuns(None, spec, sweep)

    def settings(self) -> TrialLog:
        """A copy with its settings only, and no password: what Ray may pickle into its experiment
        (a resumed sweep is given this driver's callbacks, never the pickled ones)."""
        t = self.spec.tracking
        hidden = {"uri": t.uri and stores.redact(t.uri),
                  "artifact_location": t.artifact_location and stores.redact(t.artifact_location)}
        tracking = t.model_copy(update=hidden)
        return TrialLog(dataclasses.replace(self.store, uri=self.store.shown), self.experiment,
                        self.spec.model_copy(update={"tracking": tracking}), self.sweep, self.figure_interval)

    @classmethod
    def start(cls, spec: SweepSpec, sweep: SweepDir, uri_option: str | None,
              saved_trials: Callable[[], set[str]]) -> TrialLog:
        """Resolves the store (option > $MLFLOW_TRACKING_URI > spec > default), then opens the
        sweep's parent run, finding it again if the sweep ran before; `saved_trials` gives the ids
        of the trials Ray saved, for a sweep that is resumed."""
        origin, stage = origin_of(sweep)  # a confirmation's runs are under its sweep's parent run
        store = stores.resolve(uri_option, spec.tracking.uri, origin.root.parent, spec.tracking.artifact_location)
        log = cls(store, spec.tracking.experiment or origin.name, spec, sweep)
        opener = ConfirmationParent.open if stage else ParentRun.open
        log.parent = opener(store, log.experiment, spec, sweep, saved_trials, log.writer, log.figure_interval)
        log.children.runs = log.parent.runs
        return log

    @property
    def parent_id(self) -> str | None:
        return self.parent.run_id if self.parent else None

    def later(self, name: str, fn, *args) -> None:
        self.writer.later(name, fn, *args)

    def latest(self, kind: str, name: str, fn, *args) -> None:
        self.writer.latest(kind, name, fn, *args)

    def guard(self, name: str):
        return self.writer.guard(name)

    def close(self, status: str, frame: pd.DataFrame | None = None, error: BaseException | None = None,
              histories: Histories | None = None) -> None:
        """Settles every run after the sweep stopped: children by their trial's state (unfinished
        ones KILLED), the final aggregates on the parent (the learning curves where the trials'
        `histories` are given), the parent FINISHED, KILLED or FAILED."""
        if self.parent is None:
            return
        self.writer.drain()  # what the hooks handed over is logged first
        with self.guard("close"):  # the parent is closed even if the aggregates fail
            if frame is None:
                frame = self.saved_trials()
            self.children.settle(frame)
            if len(frame):
                self.parent.publish(frame, final=True, histories=histories)
        with self.guard("close"):
            self.parent.close(status, error)

    def saved_trials(self) -> pd.DataFrame:
        """Ray's saved trials table; empty when the sweep stopped before Ray saved any."""
        try:
            return trials_frame(self.sweep.read_state()["experiment_path"], asha_rungs(self.spec))
        except Exception:
            return pd.DataFrame(columns=["trial_id", "state"])
