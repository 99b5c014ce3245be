"""GPU placement on a real two-node Ray cluster whose head has one logical GPU (tests/clusters.py):
fractions of it shared by two trials at a time on the head only, and a trial that asked for a GPU
refusing to run where it sees none. No GPU exists here: the nodes run with the test seam
TVAE_SWEEP_FAKE_GPU (tvae_sweep/sweep/fake_gpu.py), under which such a trial runs on the CPU and
records what Ray assigned it."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from clusters import launch, max_overlap
from sweeps import cli_env, sweep_spec, trials

pytestmark = pytest.mark.cost(23)  # seconds on 2 cores (measured): costliest files first

NO_GPU_SCRIPT = '''
import json, os, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")

@ray.remote(num_gpus=0.5, num_cpus=0)
def attempt():
    from tvae_sweep.sweep.fake_gpu import ENV
    from tvae_sweep.sweep.trainable import trial_device

    os.environ.pop(ENV)  # this worker as on a real cluster: without the test seam
    try:
        return {"device": str(trial_device(0.5))}
    except RuntimeError as e:
        return {"error": str(e), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}

print(json.dumps(ray.get(attempt.remote(), timeout=120)))
'''



@pytest.mark.slow
def test_gpu_fractions_share_the_logical_gpu_two_trials_at_a_time(ray_cluster, tmp_path):
    spec = sweep_spec(tmp_path, search={"num_trials": 4, "max_concurrent": 4, "scheduler": "fifo"},
                      train={"epochs": 2}, tracking={"enabled": False},
                      resources={"cpus_per_trial": 0.25, "gpus_per_trial": 0.5},
                      storage={"path": str(tmp_path / "shared"), "shared": True})
    results = tmp_path / "results"
    proc = launch(ray_cluster, spec, results, "fractions")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    frame = trials(results, "fractions")
    assert len(frame) == 4 and set(frame["state"]) == {"TERMINATED"}
    assert set(frame["node_id"]) == {ray_cluster.head_id}  # the only node with a GPU
    records = ray_cluster.records()
    assert sorted(r["trial_id"] for r in records) == sorted(frame["trial_id"])
    for r in records:  # what Ray assigned: GPU 0 of the head, half of it
        assert r["gpus"] == 0.5 and r["gpu_ids"] == ["0"] and r["cuda_visible_devices"] == "0"
        assert r["node_id"] == ray_cluster.head_id
    # 1 GPU / 0.5 per trial: never more than two at once (CPUs would allow four), and two did share it;
    # a trial ran from its record's start for the time Ray measured
    took = dict(zip(frame["trial_id"], frame["time_s"], strict=True))
    assert max_overlap([(r["start"], r["start"] + took[r["trial_id"]]) for r in records]) == 2


@pytest.mark.slow
def test_a_trial_that_asked_for_a_gpu_and_sees_none_refuses_to_run(ray_cluster):
    proc = subprocess.run([sys.executable, "-c", NO_GPU_SCRIPT, ray_cluster.address], capture_output=True,
                          text=True, timeout=180, env=cli_env(**ray_cluster.driver_env()))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "device" not in result, "ran on the CPU instead of refusing"
    assert result["cuda_visible_devices"] == "0"  # Ray gave it GPU 0; torch here has no CUDA
    assert "asked for 0.5 GPU but this worker sees none" in result["error"]
    assert "refusing to run on the CPU" in result["error"]
