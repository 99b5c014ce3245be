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
from ..fused_training import FusedTrainer, Replicates, load_members, save_members
from ..images import save_pictures
from ..metrics import best_of, is_metric
from ..training import DivergenceError, Trainer
from .fake_gpu import fake_gpu
from .fusion import MEMBERS, POINTS, point_folder
from .space import trial_run_config

DIVERGED_FILE = "diverged.txt"  # in the trial folder: why the trial failed, so a retry fails fast


def trial_device(gpus: float) -> torch.device:
    """The device Ray assigned: a GPU when the trial asked for one, and a clear error if none is visible."""
    if gpus <= 0:
        return torch.device("cpu")
    if (fake := fake_gpu(gpus)) is not None:  # a test seam: $TVAE_SWEEP_FAKE_GPU (sweep/fake_gpu.py)
        return fake
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
    """Trains one trial: its config (under `replicates` seeds, fused, reporting their means), or the
    points of a fused trial (sweep/fusion.py)."""
    ctx = tune.get_context()
    need = ctx.get_trial_resources().required_resources
    cpus, gpus = need.get("CPU", 1.0), need.get("GPU", 0.0)
    threads = max(1, int(cpus))
    torch.set_num_threads(threads)
    device = trial_device(gpus)

    diverged = Path(ctx.get_trial_dir()) / DIVERGED_FILE
    if diverged.is_file():  # a retry would diverge again at the same epoch: fail at once
        raise DivergenceError(diverged.read_text())

    trainer = make_trainer(config, base, sources, replicates, threads, device)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            trainer.load_checkpoint(directory)
    where = {"node_id": ray.get_runtime_context().get_node_id(), "device": str(device),
             "gpu_ids": ",".join(map(str, ray.get_gpu_ids()))}

    try:
        for _ in trainer.epochs():
            report_epoch(trainer, where)
        if isinstance(trainer, FusedPoints) and not trainer.fused.alive:
            raise DivergenceError(f"every point failed: {trainer.fused.errors[0]}")
    except DivergenceError as e:
        diverged.write_text(str(e))
        raise


def make_trainer(config: dict[str, Any], base: dict[str, Any], sources: Any, replicates: int, threads: int,
                 device: torch.device):
    def run_of(point: dict[str, Any]):
        run = trial_run_config(base, point)
        run.train.num_threads = threads
        return run

    if POINTS in config:
        return FusedPoints(FusedTrainer([run_of(p) for p in config[POINTS]], device, sources))
    run = run_of(config)
    if replicates > 1:
        return Replicates(run, replicates, device, sources)
    return Trainer(run, data=build_data(run.data, run.model.seq_len, device, run.train.seed, sources=sources),
                   device=device)


class FusedPoints:
    """A fused trial's points, trained as one: each point's checkpoint, pictures and report its own."""

    def __init__(self, fused: FusedTrainer):
        self.fused = fused
        self.folders = [point_folder(i) for i in range(fused.k)]

    def epochs(self):
        return self.fused.epochs()

    def save_checkpoint(self, directory: str) -> None:
        save_members(self.fused, directory, self.folders)

    def load_checkpoint(self, directory: str) -> None:
        load_members(self.fused, directory, self.folders)

    def report(self, directory: str) -> dict:
        """Each point's report under MEMBERS (a failed point's with its error), its pictures after the last epoch."""
        members = []
        for m, (history, error) in enumerate(zip(self.fused.histories, self.fused.errors)):
            if error is None and self.fused.finished:
                save_pictures(self.fused.member_model(m), self.fused.data[m].test_set(), Path(directory) / self.folders[m])
            members.append({**report_of(history), **({"error": error} if error else {})})
        return {"epoch": self.fused.epoch, MEMBERS: members}


def report_of(history: list[dict]) -> dict:
    return {**carried_metrics(history), "best": best_metrics(history)}


def report_epoch(trainer: Trainer | Replicates | FusedPoints, where: dict) -> None:
    """Reports the epoch's metrics with a checkpoint (and, after the last epoch, its pictures)."""
    with tempfile.TemporaryDirectory() as directory:
        trainer.save_checkpoint(directory)
        if isinstance(trainer, FusedPoints):
            report = trainer.report(directory)
        else:
            if trainer.finished:
                save_pictures(trainer.model, trainer.data.test_set(), directory)
            report = report_of(trainer.history)
        tune.report({**report, **where}, checkpoint=tune.Checkpoint.from_directory(directory))
