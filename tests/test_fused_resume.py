"""A fused sweep killed with SIGKILL mid-trial, resumed on a real local Ray."""
from __future__ import annotations

import json
import os
import signal
import time

import pandas as pd
import pytest
import yaml
from helpers import tiny_raw
from sweeps import cli_env, run_cli, running

pytestmark = pytest.mark.cost(106)  # seconds on 2 cores (measured): costliest files first


@pytest.mark.slow
def test_a_fused_sweep_killed_mid_trial_resumes_to_the_numbers_of_its_points_alone(tmp_path, ray_temp):
    """SIGKILL once a fused trial has saved a checkpoint; the resume continues every point from it,
    and each point ends where its config trained alone ends."""
    raw = tiny_raw(train={"epochs": 3}, data={"train_sequences": 800})
    raw.update(name="killed", resources={"cpus_per_trial": 1},
               space={"model.shift": {"type": "categorical", "values": [0, 1]},
                      "train.seed": {"type": "categorical", "values": [0, 1]}},
               search={"algorithm": "grid", "metric": "log_likelihood", "mode": "max", "seed": 0,
                       "scheduler": "fifo", "max_concurrent": 1, "fuse": True})
    spec, results = tmp_path / "killed.yaml", tmp_path / "results"
    spec.write_text(yaml.safe_dump(raw))
    with running(["launch", spec, "--results-dir", results], tmp_path / "launch.log",
                 cli_env(RAY_TMPDIR=ray_temp)) as proc:
        deadline = time.monotonic() + 300
        while not list((results / "killed" / "tune").glob("fused_*/checkpoint_000000/point_3/state.pt")):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "launch.log").read_text()[-3000:]
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
    proc = run_cli("resume", "killed", "--results-dir", results, RAY_TMPDIR=ray_temp)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    frame = pd.read_parquet(results / "killed" / "trials.parquet")
    assert len(frame) == 4 and set(frame["state"]) == {"TERMINATED"} and set(frame["epochs"]) == {3}
    row = frame[(frame["config/model.shift"] == 1) & (frame["config/train.seed"] == 1)].iloc[0]
    alone = tmp_path / "alone.yaml"
    alone.write_text(yaml.safe_dump(tiny_raw(train={"epochs": 3, "seed": 1}, data={"train_sequences": 800},
                                             model={"shift": 1})))
    assert run_cli("train", alone, "--output", tmp_path / "alone").returncode == 0
    final = json.loads((tmp_path / "alone" / "metrics.json").read_text())["final"]
    assert final["log_likelihood"] == pytest.approx(row["final/log_likelihood"], rel=1e-4, abs=2e-3)
