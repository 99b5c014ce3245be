"""A worker node killed in the middle of a sweep: a real two-node Ray cluster on this machine (the
machinery of tests/clusters.py), shared storage, and every process of the second node killed with
SIGKILL while one of its trials runs. The sweep must still finish every trial, the interrupted one
retried from its last checkpoint on the surviving node, with one MLflow run per trial.

The cluster is this module's own, since the test takes one of its nodes away.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from clusters import LocalCluster, alive, descendants, two_node_cluster
from mlflow import MlflowClient
from sweeps import cli_env, reports, running, sweep_spec, trials

pytestmark = pytest.mark.cost(62)  # seconds on 2 cores (measured): costliest files first

EPOCHS = 4
TRAIN_SEQUENCES = 256  # about a second an epoch: time to see the trial mid-run and kill its node
# the head's GCS declares a node dead after 3 missed health checks a second apart (default: 5 of 3 s)
FAST_HEALTH_CHECKS = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "1000",
                      "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "3"}


class FastFailureCluster(LocalCluster):
    def _node_env(self) -> dict:
        return {**super()._node_env(), **FAST_HEALTH_CHECKS}


@pytest.fixture
def two_nodes(tmp_path_factory):
    with two_node_cluster(FastFailureCluster, tmp_path_factory, head_gpus=0, node_cpus=1) as cluster:
        yield cluster  # one trial on each node


def kill_node(cluster: LocalCluster, index: int) -> list[int]:
    """SIGKILL to a node's `ray start` and everything it started (raylet, its agents, the trial workers)."""
    proc = cluster.procs[index]
    pids = [proc.pid, *descendants(proc.pid)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, [pid for pid in pids if alive(pid)]
        time.sleep(0.2)
    return pids


def trial_mid_run_on(node_id: str, experiment: Path, proc, log: Path) -> str:
    """Waits for a trial on the node to report an epoch (so it has a checkpoint) but not its last;
    its folder's name."""
    deadline = time.monotonic() + 300
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        on_node = {name: lines for name, lines in reports(experiment).items()
                   if lines and lines[-1]["node_id"] == node_id}
        if on_node:
            [(trial, lines)] = on_node.items()
            assert lines[-1]["epoch"] < EPOCHS, "the trial on the worker node finished before it could be killed"
            return trial
        time.sleep(0.1)


def epochs_on(history: list[dict], node_id: str) -> list[int]:
    return [r["epoch"] for r in history if r["node_id"] == node_id]


def check_one_run_per_trial(results: Path, frame, victim_id: str, head_id: str) -> None:
    """MLflow: exactly one run per trial, none left RUNNING, the retry recorded, no epoch logged twice."""
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("killed")
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if r.data.tags.get("tvae_sweep.role") == "trial"]
    assert sorted(r.data.tags["tvae_sweep.trial_id"] for r in children) == sorted(frame["trial_id"])
    assert {r.info.status for r in runs} == {"FINISHED"}
    [victim_run] = [r for r in children if r.data.tags["tvae_sweep.trial_id"] == victim_id]
    assert int(victim_run.data.tags["tvae_sweep.retries"]) >= 1
    assert "actor" in victim_run.data.tags["tvae_sweep.last_error"].lower()  # why: its worker was lost
    assert victim_run.data.tags["ray.node_id"] == head_id
    steps = [m.step for m in client.get_metric_history(victim_run.info.run_id, "train_loss")]
    assert steps == list(range(1, EPOCHS + 1))


@pytest.mark.slow
def test_a_killed_worker_node_is_survived_and_its_trial_retried_on_the_other(two_nodes, tmp_path):
    cluster = two_nodes
    worker_id = next(iter(cluster.node_ids - {cluster.head_id}))
    shared = tmp_path / "shared"  # both nodes are this machine: a folder they all read
    spec = sweep_spec(tmp_path, search={"num_trials": 2, "max_concurrent": 2, "scheduler": "fifo"},
                      train={"epochs": EPOCHS}, data={"train_sequences": TRAIN_SEQUENCES},
                      storage={"path": str(shared), "shared": True})
    results = tmp_path / "results"
    log = tmp_path / "launch.log"
    started = time.monotonic()
    args = ["launch", spec, "--address", cluster.address, "--name", "killed", "--results-dir", results]
    with running(args, log, cli_env(**cluster.driver_env())) as proc:
        victim = trial_mid_run_on(worker_id, shared / "killed", proc, log)
        killed = kill_node(cluster, 1)
        killed_at = time.monotonic()
        assert alive(cluster.procs[0].pid)  # the head lives on

        code = proc.wait(timeout=300)
    output = log.read_text()
    assert code == 0, output[-5000:]
    assert killed

    # every planned trial finished; the killed one's last epochs ran on the head
    frame = trials(results, "killed")
    assert len(frame) == 2 and set(frame["state"]) == {"TERMINATED"}, frame[["trial_id", "state", "error"]]
    assert set(frame["node_id"]) == {cluster.head_id}
    assert (frame["epochs"] == EPOCHS).all()
    history = reports(shared / "killed")[victim]
    worker_epochs, head_epochs = epochs_on(history, worker_id), epochs_on(history, cluster.head_id)
    assert worker_epochs and head_epochs, history
    # retried from a checkpoint, not from scratch. Only the worker's last reported epoch may run again:
    # Ray takes a trial's checkpoint just after its report, and the node may die in between (MLflow,
    # below, keeps that epoch's first report). Ray's result.json may miss the worker's last reports.
    assert worker_epochs == list(range(1, worker_epochs[-1] + 1))
    assert head_epochs == list(range(head_epochs[0], EPOCHS + 1)) and head_epochs[0] >= max(2, worker_epochs[-1])
    check_one_run_per_trial(results, frame, history[-1]["trial_id"], cluster.head_id)
    print(f"sweep with a killed node: {time.monotonic() - started:.0f} s, {killed_at - started:.0f} s to the kill; "
          f"worker epochs {worker_epochs}, head epochs {head_epochs}")
