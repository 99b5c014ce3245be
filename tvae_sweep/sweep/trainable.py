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

from ..images import save_member_pictures
from ..metrics import best_of, is_metric, over_seeds
from ..training import DivergenceError, Trainer, with_seed
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

    trial = make_trial(config, base, sources, replicates, threads, device)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            trial.load_checkpoint(directory)
    where = {"node_id": ray.get_runtime_context().get_node_id(), "device": str(device),
             "gpu_ids": ",".join(map(str, ray.get_gpu_ids()))}

    try:
        for _ in trial.trainer.epochs():
            report_epoch(trial, where)
    except DivergenceError as e:
        error = trial.failed(e, where)
        diverged.write_text(str(error))
        raise error from None


def make_trial(config: dict[str, Any], base: dict[str, Any], sources: Any, replicates: int, threads: int,
               device: torch.device) -> TrialMembers:
    """The trial's members on one trainer: a fused trial's points, a config under `replicates` seeds, or one run."""
    def run_of(point: dict[str, Any]):
        run = trial_run_config(base, point)
        run.train.num_threads = threads
        return run

    if POINTS in config:
        return FusedPoints(Trainer([run_of(p) for p in config[POINTS]], device, sources))
    run = run_of(config)
    if replicates > 1:
        return Replicates(run, replicates, device, sources)
    return TrialMembers(Trainer(run, device, sources))


class TrialMembers:
    """A trial's members on the one trainer, seen as Ray sees the trial: its checkpoint (a single
    run's here; a folder per member in the views below) and its report."""

    folders: list[str] | None = None

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def save_checkpoint(self, directory: str | Path) -> None:
        self.trainer.save_checkpoint(directory, self.folders)

    def load_checkpoint(self, directory: str | Path) -> None:
        self.trainer.load_checkpoint(directory, self.folders)

    def report(self, directory: str | Path) -> dict:
        """The run's metrics and best metrics, its pictures after the last epoch."""
        if self.trainer.finished:
            save_member_pictures(self.trainer, 0, directory)
        return report_of(self.trainer.history)

    def failed(self, error: DivergenceError, where: dict) -> DivergenceError:
        """The error the trial fails with once every member has."""
        return error


class Replicates(TrialMembers):
    """One config trained under `k` seeds (train.seed, train.seed + 1, ...) as one model, seen as
    one run: its history reports each metric's mean over the seeds that have not failed, with
    `<m>_std` and `<m>_seed<s>` beside it (metrics.over_seeds). It fails only when every seed has.

    The checkpoint is one folder per seed (seed_<s>/, a single run's checkpoint each) and
    failed.json; the pictures are those of the first seed that has not failed."""

    def __init__(self, cfg, k: int, device: torch.device | None = None, sources: Any = None):
        self.seeds = [cfg.train.seed + i for i in range(k)]
        self.folders = [f"seed_{s}" for s in self.seeds]
        super().__init__(Trainer([with_seed(cfg, s) for s in self.seeds], device, sources))

    @property
    def history(self) -> list[dict]:
        h = self.trainer.histories
        return [over_seeds({s: h[m][i] for m, s in enumerate(self.seeds) if i < len(h[m])})
                for i in range(max(map(len, h)))]

    def report(self, directory: str | Path) -> dict:
        if self.trainer.finished:
            save_member_pictures(self.trainer, self.trainer.alive[0], directory)
        return report_of(self.history)


class FusedPoints(TrialMembers):
    """A fused trial's points, trained as one: each point's checkpoint, pictures and report its own."""

    def __init__(self, trainer: Trainer):
        super().__init__(trainer)
        self.folders = [point_folder(i) for i in range(trainer.k)]

    def report(self, directory: str | Path) -> dict:
        """Each point's report under MEMBERS (a failed point's with its error), its pictures after the last epoch."""
        t, members = self.trainer, []
        for m, (history, error) in enumerate(zip(t.histories, t.errors, strict=True)):
            if error is None and t.finished:
                save_member_pictures(t, m, Path(directory) / self.folders[m])
            members.append({**report_of(history), **({"error": error} if error else {})})
        return {"epoch": t.epoch, MEMBERS: members}

    def failed(self, error: DivergenceError, where: dict) -> DivergenceError:
        """Every point failed: their last epoch is reported still (each point's error), then the trial fails."""
        report_epoch(self, where)
        return DivergenceError(f"every point failed: {error}")


def report_of(history: list[dict]) -> dict:
    return {**carried_metrics(history), "best": best_metrics(history)}


def report_epoch(trial: TrialMembers, where: dict) -> None:
    """Reports the epoch's metrics with a checkpoint (and, after the last epoch, its pictures)."""
    with tempfile.TemporaryDirectory() as directory:
        trial.save_checkpoint(directory)
        tune.report({**trial.report(directory), **where}, checkpoint=tune.Checkpoint.from_directory(directory))
