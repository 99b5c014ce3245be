"""A trial's worker process killed with SIGKILL in the middle of an epoch, on a local Ray: the trial
is retried from its last checkpoint and completes, in the same MLflow run, with every epoch logged
exactly once."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from sweeps import running, sweep_spec, trials
from test_cluster import alive, descendants
from test_node_failure import reports

pytestmark = pytest.mark.slow

EPOCHS = 4
TRAIN_SEQUENCES = 256  # about a second an epoch: time to see the trial mid-run and kill its worker


def trial_workers(root: int) -> list[int]:
    """The Ray worker processes running a trial, among the descendants of process `root`."""
    found = []
    for pid in descendants(root):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
        if title.startswith("ray::ImplicitFunc"):
            found.append(pid)
    return found


def test_a_killed_trial_worker_is_retried_from_its_checkpoint_in_the_same_run(tmp_path):
    from mlflow import MlflowClient

    spec = sweep_spec(tmp_path, search={"num_trials": 1, "max_concurrent": 1, "scheduler": "fifo"},
                      train={"epochs": EPOCHS}, data={"train_sequences": TRAIN_SEQUENCES})
    results = tmp_path / "results"
    log = tmp_path / "launch.log"
    experiment = results / "worker" / "tune"
    with running(["launch", spec, "--name", "worker", "--results-dir", results], log) as proc:
        # wait for the first epoch's report (so a checkpoint exists), then kill the worker mid-epoch
        deadline = time.monotonic() + 300
        while not any(lines and lines[-1]["epoch"] >= 1 for lines in reports(experiment).values()):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        [victim] = trial_workers(proc.pid)
        [reported] = reports(experiment).values()
        assert reported[-1]["epoch"] < EPOCHS, "the trial finished before its worker could be killed"
        os.kill(victim, signal.SIGKILL)
        code = proc.wait(timeout=300)
    output = log.read_text()
    assert code == 0, output[-5000:]
    assert not alive(victim)

    frame = trials(results, "worker")
    assert len(frame) == 1 and frame["state"].iloc[0] == "TERMINATED" and frame["epochs"].iloc[0] == EPOCHS
    [history] = reports(experiment).values()
    pids = [r["pid"] for r in history]
    assert pids[0] == victim and pids[-1] != victim  # the later epochs ran in a new worker
    epochs = [r["epoch"] for r in history]
    resumed_at = pids.index(pids[-1])
    assert 1 < epochs[resumed_at] <= epochs[resumed_at - 1] + 1  # from the last checkpoint, not from scratch
    assert sorted(set(epochs)) == list(range(1, EPOCHS + 1))

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("worker").experiment_id
    runs = client.search_runs([experiment_id])
    [child] = [r for r in runs if r.data.tags.get("tvae_sweep.role") == "trial"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert int(child.data.tags["tvae_sweep.retries"]) == 1
    steps = [m.step for m in client.get_metric_history(child.info.run_id, "train_loss")]
    assert steps == list(range(1, EPOCHS + 1))  # no epoch missing or logged twice
