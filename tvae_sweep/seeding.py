"""Randomness that leaves the training RNG untouched: evaluations and pictures draw from their own seed."""
from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def fixed_rng(device: torch.device, seed: int):
    """Inside: torch's global RNGs (CPU and this CUDA device) seeded with `seed`; after: as before."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
