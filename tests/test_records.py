"""Trial records: Ray's trials read in one adapter (a fused trial as its points), and the trials
table made of them."""
import json
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import pandas as pd
import pyarrow.fs
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from pyarrow.fs import FSSpecHandler, PyFileSystem

from tvae_sweep.sweep.fusion import MEMBERS, PARAMS, POINTS
from tvae_sweep.sweep.records import ERROR, RUNNING, TERMINATED, CheckpointRef, records_of
from tvae_sweep.sweep.results import frame_of
from tvae_sweep.sweep.whole_files import whole_files

pytestmark = pytest.mark.cost(18)  # seconds on 2 cores (measured): costliest files first

ROOT = Path(__file__).resolve().parents[1]
FIXED = ["trial_id", "state", "epochs", "time_s", "node_id", "error", "checkpoint"]  # the table's other columns


def ray_trial(trial_id="t", status=RUNNING, config=None, last=None, path="/nowhere", checkpoint=None, failures=0):
    """What the adapter reads of a Ray trial (the slow test below reads Ray's own)."""
    return types.SimpleNamespace(trial_id=trial_id, status=status, config=config or {}, last_result=last or {},
                                 path=str(path), checkpoint=checkpoint, num_failures=failures)


def fused_trial(tmp_path):
    checkpoint = types.SimpleNamespace(path=f"{tmp_path}/checkpoint_000001", filesystem=pyarrow.fs.LocalFileSystem())
    last = {"training_iteration": 2, "time_total_s": 3.5, "node_id": "n1",
            MEMBERS: [{"log_likelihood": -100.0, "best": {"log_likelihood": -99.0}},
                      {"error": "Traceback (most recent call last):\nDivergenceError: non-finite loss at epoch 2"}]}
    return ray_trial("f", config={POINTS: [{"model.shift": s} for s in (0, 1)], PARAMS: [{"shift": s} for s in (0, 1)]},
                     last=last, path=tmp_path, checkpoint=checkpoint)


def test_a_fused_trial_is_a_record_per_point(tmp_path):
    p0, p1 = records_of([fused_trial(tmp_path)], finished={"f"})
    assert (p0.trial_id, p0.ray_id, p0.state, p0.ray_state) == ("f_p0", "f", TERMINATED, TERMINATED)
    assert p0.config == {"shift": 0, "model.shift": 0}
    assert p0.last["log_likelihood"] == -100.0 and MEMBERS not in p0.last and p0.best == {"log_likelihood": -99.0}
    assert (p0.epochs, p0.time_s, p0.node_id, p0.error) == (2, 3.5, "n1", None)
    assert p0.checkpoint.path == f"{tmp_path}/checkpoint_000001/point_0" and p0.checkpoint.local
    assert (p1.trial_id, p1.state, p1.ray_state) == ("f_p1", ERROR, TERMINATED)  # it failed alone
    assert p1.error == "DivergenceError: non-finite loss at epoch 2" and p1.traceback.startswith("Traceback")


def test_a_newer_report_and_an_unfinished_trial(tmp_path):
    newer = {"training_iteration": 3, MEMBERS: [{"log_likelihood": -90.0}, {"log_likelihood": -95.0}]}
    records = records_of([fused_trial(tmp_path)], newer)
    assert [r.last["log_likelihood"] for r in records] == [-90.0, -95.0]
    assert [r.state for r in records] == [RUNNING, RUNNING] and [r.epochs for r in records] == [3, 3]
    assert not any(r.finished for r in records)


def test_a_failed_trial_carries_the_last_line_of_its_error(tmp_path):
    (tmp_path / "error.txt").write_text("Traceback (most recent call last):\n  ...\nValueError: lr too high\n")
    failed, = records_of([ray_trial(status=ERROR, path=tmp_path)])
    assert (failed.state, failed.error) == (ERROR, "ValueError: lr too high") and failed.finished
    retried, = records_of([ray_trial(status=RUNNING, path=tmp_path, failures=1)])
    assert (retried.error, retried.retries) == (None, 1) and retried.traceback.endswith("lr too high\n")


def test_the_trials_table_keeps_the_columns_of_the_committed_results(tmp_path):
    reference = pd.read_parquet(ROOT / "results" / "reference" / "paper_table1" / "trials.parquet")
    assert [c for c in reference if not c.startswith(("config/", "final/", "best/"))] == FIXED
    frame = frame_of(records_of([fused_trial(tmp_path)], finished={"f"}))
    assert [c for c in frame if not c.startswith(("config/", "final/", "best/"))] == FIXED
    assert list(frame.columns[2:6]) == ["config/model.shift", "config/shift", "final/log_likelihood",
                                        "best/log_likelihood"]
    assert list(frame["state"]) == [TERMINATED, ERROR]
    assert frame["checkpoint"].iloc[0].endswith("checkpoint_000001/point_0")


SCRIPT = """
import json, os, sys, tempfile
import ray
from ray import tune
from tvae_sweep.sweep.fusion import MEMBERS, PARAMS, POINTS
from tvae_sweep.sweep.records import records_of, saved_records

def trainable(config):
    for epoch in (1, 2):
        with tempfile.TemporaryDirectory() as folder:
            os.makedirs(f"{folder}/point_0")
            if POINTS in config:
                report = {MEMBERS: [{"log_likelihood": -10.0 + epoch}, {"error": "boom"} if epoch == 2 else {}]}
            else:
                report = {"log_likelihood": -1.0 - epoch}
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(folder))
    if config.get("fail"):
        raise ValueError("failed on purpose")

def shown(records):
    return [[r.trial_id, r.state, r.epochs, r.error, r.checkpoint.path, r.checkpoint.local] for r in records]

class Seen(tune.Callback):
    def __init__(self):
        self.seen = []
    def on_trial_complete(self, iteration, trials, trial, **info):
        self.seen += shown(records_of([trial], finished={trial.trial_id}))
    def on_trial_error(self, iteration, trials, trial, **info):
        self.seen += shown(records_of([trial]))

ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=sys.argv[2])
out = {}
for name, space in (("single", {"fail": tune.grid_search([False, True])}),
                    ("fused", {POINTS: [{"x": 0}, {"x": 1}], PARAMS: [{"x": 0}, {"x": 1}]})):
    seen = Seen()
    tuner = tune.Tuner(trainable, param_space=space, run_config=tune.RunConfig(
        name=name, storage_path=sys.argv[1], callbacks=[seen], verbose=0))
    tuner.fit()
    out[name] = {"live": seen.seen, "saved": shown(saved_records(f"{sys.argv[1]}/{name}"))}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_rays_own_trials_become_records_live_and_saved(tmp_path):
    """The attributes the adapter reads, on Ray's Trial as a callback gets it and as Ray saves it:
    an upgrade that changes them fails here."""
    ray_temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    try:
        proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), ray_temp], capture_output=True,
                              text=True, timeout=300, cwd=ROOT)
    finally:
        shutil.rmtree(ray_temp, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for kind in ("live", "saved"):
        single = sorted(out["single"][kind], key=lambda r: r[1])
        assert [r[1:4] for r in single] == [[ERROR, 2, "ValueError: failed on purpose"], [TERMINATED, 2, None]]
        for *_, checkpoint, local in single:
            assert checkpoint.endswith("checkpoint_000001") and Path(checkpoint).is_dir() and local
        p0, p1 = out["fused"][kind]
        assert p0[0].endswith("_p0") and p1[0] == p0[0][:-1] + "1"
        assert (p0[1:4], p1[1:4]) == ([TERMINATED, 2, None], [ERROR, 2, "boom"])
        assert p0[4].endswith("checkpoint_000001/point_0") and Path(p0[4]).is_dir()


def test_a_checkpoint_on_the_whole_files_storage_is_on_this_machine(tmp_path):
    """The sweep gives Ray its whole-files filesystem for a local folder: its checkpoints are this
    machine's (pruned, shown as paths); an object store's are not."""
    here = CheckpointRef(str(tmp_path), whole_files())
    assert here.local and here.location() == str(tmp_path)
    assert CheckpointRef(str(tmp_path)).local
    elsewhere = CheckpointRef("bucket/trial", PyFileSystem(FSSpecHandler(MemoryFileSystem())))
    assert not elsewhere.local and elsewhere.location().endswith("://bucket/trial")
