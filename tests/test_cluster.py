"""Sweeps on a real two-node Ray cluster started with `ray start` on this machine (tests/clusters.py):
trials spread over both nodes with shared storage, node-local storage refused, a driver without the
cluster's token told how to join."""
from __future__ import annotations

import json
import time

import pytest
from clusters import error_lines, launch
from sweeps import sweep_spec, trials

pytestmark = pytest.mark.cost(75)  # seconds on 2 cores (measured): costliest files first


@pytest.mark.slow
def test_sweep_spreads_trials_over_both_nodes_with_shared_storage(ray_cluster, tmp_path):
    shared = tmp_path / "shared"  # both nodes are this machine: a folder they all read
    spec = sweep_spec(tmp_path, search={"num_trials": 3, "max_concurrent": 3, "scheduler": "fifo"},
                      train={"epochs": 2}, tracking={"enabled": False},
                      storage={"path": str(shared), "shared": True},
                      resources={"reuse_actors": False})  # placed by Ray's scheduler, not a reused worker
    results = tmp_path / "results"
    proc = launch(ray_cluster, spec, results, "spread")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    frame = trials(results, "spread")
    assert len(frame) == 3 and set(frame["state"]) == {"TERMINATED"}
    assert set(frame["node_id"]) == ray_cluster.node_ids  # trials on the head and on the second node
    assert all(str(c).startswith(str(shared / "spread")) for c in frame["checkpoint"])
    state = json.loads((results / "spread" / "sweep.json").read_text())
    assert state["experiment_path"] == str(shared / "spread") and state["status"] == "finished"


@pytest.mark.slow
def test_node_local_storage_is_refused_on_two_nodes_before_any_trial(ray_cluster, tmp_path):
    spec = sweep_spec(tmp_path, search={"num_trials": 2}, tracking={"enabled": False})
    results = tmp_path / "results"
    started = time.time()
    proc = launch(ray_cluster, spec, results, "local")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    [line] = error_lines(proc)
    assert f"storage.path: the default {results / 'local'}" in line
    assert "this Ray cluster has 2 nodes" in line
    assert "every node and the driver can read them" in line
    assert "s3://" in line and "storage.shared: true" in line
    assert not (results / "local").exists()  # refused before anything was written or started
    assert time.time() - started < 120

    plain = sweep_spec(tmp_path, name="plain.yaml", storage={"path": str(tmp_path / "mine")},
                       tracking={"enabled": False})
    proc = launch(ray_cluster, plain, results, "plain")
    assert proc.returncode == 2 and f"storage.path: {tmp_path / 'mine'} is a folder" in error_lines(proc)[0]


@pytest.mark.slow
def test_a_driver_without_the_clusters_token_is_told_how_to_join(ray_cluster, tmp_path):
    spec = sweep_spec(tmp_path, tracking={"enabled": False})
    proc = launch(ray_cluster, spec, tmp_path / "results", "token", RAY_AUTH_TOKEN="0" * 64)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    [line] = error_lines(proc)
    assert f"--address {ray_cluster.address}: the cluster refused this driver's token" in line
    assert "RAY_AUTH_MODE=token" in line and "RAY_AUTH_TOKEN_PATH" in line
