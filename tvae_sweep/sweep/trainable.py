"""The Ray Tune function trainable: a small wrapper around the core training loop.

It reports every epoch with a checkpoint, resumes from the checkpoint Tune hands back when a trial
is retried or the sweep resumed, uses exactly the CPUs and GPUs Ray gives the trial, and gets the
source images from Ray's object store (put there once by the driver) instead of its closure.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from ..data import build_data
from ..images import save_pictures
from ..fused_training import Replicates
from ..training import DivergenceError, Trainer
from ..metrics import best_of, is_metric
from .space import trial_run_config

DIVERGED_FILE = "diverged.txt"  # in the trial folder: why the trial failed, so a retry fails fast


def trial_device(gpus: float) -> torch.device:
    """The device Ray assigned: a GPU when the trial asked for one, and a clear error if none is visible."""
    if gpus <= 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(f"the trial asked for {gpus:g} GPU but this worker sees none "
                           f"(CUDA_VISIBLE_DEVICES={ray.get_gpu_ids()}); refusing to run on the CPU")
    return torch.device("cuda", 0)  # Ray sets CUDA_VISIBLE_DEVICES to the assigned GPU


def carried_metrics(history: list[dict]) -> dict:
    """The latest value of every metric so far: evaluated metrics stay in every report."""
    merged: dict = {}
    for epoch in history:
        merged.update(epoch)
    return merged


def best_metrics(history: list[dict]) -> dict:
    """The best value of every metric over the history, in the metric's direction.

    The history comes with the checkpoint, so a retried trial's best counts the epochs it resumed
    from, whatever Ray's own record of its earlier reports kept."""
    names = dict.fromkeys(name for epoch in history for name in epoch if is_metric(name))
    return {name: best_of([epoch[name] for epoch in history if name in epoch], name) for name in names}


def train_trial(config: dict[str, Any], base: dict[str, Any], sources: Any = None, replicates: int = 1) -> None:
    """Trains one trial's config (under `replicates` seeds, fused, reporting their means)."""
    ctx = tune.get_context()
    need = ctx.get_trial_resources().required_resources
    cpus, gpus = need.get("CPU", 1.0), need.get("GPU", 0.0)
    run = trial_run_config(base, config)
    run.train.num_threads = max(1, int(cpus))
    torch.set_num_threads(run.train.num_threads)
    device = trial_device(gpus)

    diverged = Path(ctx.get_trial_dir()) / DIVERGED_FILE
    if diverged.is_file():  # a retry would diverge again at the same epoch: fail at once
        raise DivergenceError(diverged.read_text())

    if replicates > 1:
        trainer = Replicates(run, replicates, device, sources)
    else:
        trainer = Trainer(run, data=build_data(run.data, run.model.seq_len, device, run.train.seed, sources=sources),
                          device=device)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            trainer.load_checkpoint(directory)
    where = {"node_id": ray.get_runtime_context().get_node_id(), "device": str(device),
             "gpu_ids": ",".join(map(str, ray.get_gpu_ids()))}

    try:
        for _ in trainer.epochs():
            report_epoch(trainer, where)
    except DivergenceError as e:
        diverged.write_text(str(e))
        raise


def report_epoch(trainer: Trainer | Replicates, where: dict) -> None:
    """Reports the epoch's metrics with a checkpoint (and, after the last epoch, its pictures)."""
    with tempfile.TemporaryDirectory() as directory:
        trainer.save_checkpoint(directory)
        if trainer.finished:
            save_pictures(trainer.model, trainer.data.test_set(), directory)
        report = {**carried_metrics(trainer.history), "best": best_metrics(trainer.history), **where}
        tune.report(report, checkpoint=tune.Checkpoint.from_directory(directory))
