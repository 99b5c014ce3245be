"""A test seam: a trial that asked for a GPU, run on the CPU of a machine that has none.

With TVAE_SWEEP_FAKE_GPU set to a folder in the environment of Ray's nodes (the tests' two-node
cluster sets it), a trial that asked for a GPU runs on the CPU instead of refusing, and writes where
it ran to a JSON file in that folder: its trial id, the GPUs it asked for, the GPU ids Ray assigned
it, CUDA_VISIBLE_DEVICES, its node and when it started. The GPU-placement tests read these records;
nothing else sets the variable.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import ray
import torch
from ray import tune

ENV = "TVAE_SWEEP_FAKE_GPU"


def fake_gpu(gpus: float) -> torch.device | None:
    """The CPU, with a record of the placement, when the seam is on; None otherwise."""
    folder = os.environ.get(ENV)
    if not folder:
        return None
    record = {"trial_id": tune.get_context().get_trial_id(), "gpus": gpus,
              "gpu_ids": [str(i) for i in ray.get_gpu_ids()],
              "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
              "node_id": ray.get_runtime_context().get_node_id(), "start": time.time()}
    (Path(folder) / f"{uuid.uuid4().hex}.json").write_text(json.dumps(record))
    return torch.device("cpu")
