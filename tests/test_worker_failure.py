"""A trial's worker process killed with SIGKILL in the middle of an epoch, on a local Ray: the trial
is retried from its last checkpoint and completes, in the same MLflow run, with every epoch logged
exactly once and counted in the trial's best metrics."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from clusters import alive, descendants
from mlflow import MlflowClient
from sweeps import reports, running, sweep_spec, trials

pytestmark = pytest.mark.cost(51)  # seconds on 2 cores (measured): costliest files first

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


def checkpoint_index(path: Path) -> int:
    """0 for checkpoint_000000, the trial's first checkpoint."""
    return int(path.name.rpartition("_")[2])


def logged_epochs(client, name: str) -> list[int]:
    """The epochs the sweep's one trial has logged to MLflow so far (the driver logs each once)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return []
    children = [r for r in client.search_runs([experiment.experiment_id])
                if r.data.tags.get("tvae_sweep.role") == "trial"]
    return [m.step for r in children for m in client.get_metric_history(r.info.run_id, "train_loss")]


@pytest.mark.slow
def test_a_killed_trial_worker_is_retried_from_its_checkpoint_in_the_same_run(tmp_path):
    spec = sweep_spec(tmp_path, search={"num_trials": 1, "max_concurrent": 1, "scheduler": "fifo"},
                      train={"epochs": EPOCHS}, data={"train_sequences": TRAIN_SEQUENCES})
    results = tmp_path / "results"
    log = tmp_path / "launch.log"
    experiment = results / "worker" / "tune"
    with running(["launch", spec, "--name", "worker", "--results-dir", results], log) as proc:
        # the worker writes a checkpoint into the storage with each report, and goes on from a report
        # only once the driver has registered its checkpoint: with a second checkpoint written, the
        # first is registered. Freeze the worker then, let the driver take what it already sent,
        # note the last epoch it logged, and kill the worker mid-epoch.
        deadline = time.monotonic() + 300
        while not any(checkpoint_index(path) >= 1 for path in experiment.glob("*/checkpoint_*")):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        [victim] = trial_workers(proc.pid)
        os.kill(victim, signal.SIGSTOP)
        time.sleep(1.0)
        victim_last = max(logged_epochs(MlflowClient(f"sqlite:///{results / 'mlflow.db'}"), "worker"))
        assert victim_last < EPOCHS, "the trial finished before its worker could be killed"
        os.kill(victim, signal.SIGKILL)
        code = proc.wait(timeout=300)
    output = log.read_text()
    assert code == 0, output[-5000:]
    assert not alive(victim)

    frame = trials(results, "worker")
    assert len(frame) == 1 and frame["state"].iloc[0] == "TERMINATED" and frame["epochs"].iloc[0] == EPOCHS
    # Ray's result.json of a restarted trial is taken back from the storage, which the driver syncs
    # every few seconds, so the victim's rows may be gone from it; the new worker's are all there
    [history] = reports(experiment).values()
    resumed = [r for r in history if r["pid"] != victim]
    assert resumed and {r["pid"] for r in resumed} == {resumed[0]["pid"]}  # the rest ran in one new worker
    first = resumed[0]["epoch"]
    assert 1 < first <= victim_last + 1  # from the victim's last checkpoint, not from scratch
    assert [r["epoch"] for r in resumed] == list(range(first, EPOCHS + 1))
    print(f"killed after epoch {victim_last} was logged; the new worker began at epoch {first}")

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("worker").experiment_id
    runs = client.search_runs([experiment_id])
    [child] = [r for r in runs if r.data.tags.get("tvae_sweep.role") == "trial"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert int(child.data.tags["tvae_sweep.retries"]) == 1
    losses = client.get_metric_history(child.info.run_id, "train_loss")
    assert [m.step for m in losses] == list(range(1, EPOCHS + 1))  # no epoch missing or logged twice
    # the table's best counts every epoch, the victim's too, whatever Ray's result.json kept
    assert frame["best/train_loss"].iloc[0] == pytest.approx(min(m.value for m in losses))
