"""Several runs of one network shape trained as one fused model (see model/fused.py).

Member m is the run of `cfgs[m]` alone: its weights start from the single model's initialisation
under its seed, it draws its batches and its sampling noise from its own generators, and it is
evaluated, checkpointed and pictured as a single run is (a member's checkpoint is a single run's,
and either trainer resumes it). The members share one optimiser, whose update is elementwise, so
the shared step is each member's own step. A member whose loss stops being finite fails alone:
it is recorded with the reason a single run gives and its siblings train on.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from .config import SHAPE_KEYS, ConfigError, RunConfig, run_config_from_dict
from .data import build_data
from .data.sequences import load_sources
from .metrics import init_metrics, over_seeds
from .model import TopographicVAE, build_model
from .model.tvae import check_fusable, from_members, to_member
from .training import (
    CHECKPOINT_FILE,
    CheckpointError,
    DivergenceError,
    check_precision,
    evaluate,
    evaluated,
    evaluation_due,
    forward_precision,
    graphed_step,
    make_optimizer,
    read_checkpoint,
    resolve_device,
    restore_optimizer,
    step_precision,
    steps_per_epoch,
    write_checkpoint,
)

# optimiser state entries the members share (Adam's step count); every other entry of a parameter's
# state is a buffer of its shape, the member axis first
SHARED_STATE = ("step",)


def shared_settings(cfg: RunConfig) -> dict:
    """What fused members must share: the data, the training settings but the seed, the network's shapes."""
    d = cfg.to_dict()
    return {"data": d["data"], "train": {k: v for k, v in d["train"].items() if k != "seed"},
            "model": {k: d["model"][k] for k in SHAPE_KEYS}}


def check_members(cfgs: list[RunConfig]) -> None:
    """Refuses runs that cannot share a fused model, naming the first setting they differ in."""
    if not cfgs:
        raise ConfigError("fused members: none given")
    check_fusable([c.model for c in cfgs])
    settings = [shared_settings(c) for c in cfgs]
    for section in ("data", "train"):
        for key, value in settings[0][section].items():
            values = [s[section][key] for s in settings]
            if any(v != value for v in values):
                raise ConfigError(f"{section}.{key}: fused members share it, got "
                                  f"{', '.join(dict.fromkeys(map(str, values)))}")


def noise_generator(device: torch.device, seed: int, graphed: bool) -> torch.Generator | None:
    """The generator of a member's sampling noise, in the state a single run's global RNG has once
    its model is built (call right after building the member's model under `seed`). A CUDA graph
    replays the default generator only, so graphed members share it (None)."""
    if graphed:
        return None
    if device.type == "cpu":
        generator = torch.Generator()
        generator.set_state(torch.get_rng_state())
        return generator
    return torch.Generator(device).manual_seed(seed)  # a single run's CUDA RNG is untouched by its CPU init


class FusedTrainer:
    def __init__(self, cfgs: list[RunConfig], device: torch.device | None = None, sources=None):
        check_members(cfgs)
        self.cfgs = list(cfgs)
        t = self.train_cfg = cfgs[0].train
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        self.device = device or resolve_device(t.device)
        check_precision(t, self.device)
        sources = sources or load_sources(cfgs[0].data)
        states, self.noise, self.data = [], [], []
        for cfg in cfgs:
            torch.manual_seed(cfg.train.seed)
            states.append(build_model(cfg.model).member_state(0))  # the single run's initialisation
            self.noise.append(noise_generator(self.device, cfg.train.seed, t.cuda_graph))
            self.data.append(build_data(cfg.data, cfg.model.seq_len, self.device, cfg.train.seed, sources=sources))
        self.model = TopographicVAE([c.model for c in cfgs]).to(self.device)
        self.model.load_member_states(states)
        self.optimizer = make_optimizer(self.model, t, self.device)
        self.batches = [torch.Generator(self.device).manual_seed(c.train.seed + 1) for c in cfgs]
        self.graphed = graphed_step(t, self.device, self._step, self.optimizer)
        self.epoch = 0
        self.histories: list[list[dict]] = [[] for _ in cfgs]
        self.init_metrics: list[dict | None] = [None] * len(cfgs)
        self.errors: list[str | None] = [None] * len(cfgs)  # why a member failed
        self.living = torch.ones(len(cfgs), device=self.device)  # 0 for a failed member

    @property
    def k(self) -> int:
        return len(self.cfgs)

    @property
    def alive(self) -> list[int]:
        return [m for m in range(self.k) if self.errors[m] is None]

    @property
    def finished(self) -> bool:
        return self.epoch >= self.train_cfg.epochs or not self.alive

    # ------------------------------------------------------------ training

    def train_epoch(self, on_step: Callable[[int, float], None] | None = None) -> list[float]:
        """One epoch of every member; returns each member's mean training loss."""
        t, steps = self.train_cfg, steps_per_epoch(self.cfgs[0])
        self.model.train()
        total = torch.zeros(self.k, device=self.device)
        for step in range(steps):
            x = torch.stack([d.sample_train(t.batch_size, g).x for d, g in zip(self.data, self.batches)])
            if self.graphed is not None:
                losses = self.graphed(x)
            else:
                self.optimizer.zero_grad(set_to_none=True)
                losses = self._step(x)
            total += losses
            if on_step is not None:
                on_step(step, float(losses[self.alive].mean()))
        return (total / steps).tolist()

    def _step(self, x: torch.Tensor) -> torch.Tensor:
        """Forward, backward and the optimiser step of every member; returns the members' losses.

        The summed loss gives each member the gradient of its own loss (the members share no weight);
        a failed member's loss is weighted 0 (a mask on the device, which a captured step reads too)."""
        t = self.train_cfg
        with step_precision(t):
            with forward_precision(t, self.device):
                losses = self.model.member_losses(x, self.noise)
            (losses * self.living).sum().backward()
            if t.grad_clip:
                clip_per_member(list(self.model.parameters()), t.grad_clip)
            self.optimizer.step()
        return losses.detach()

    def epochs(self, on_step: Callable[[int, float], None] | None = None) -> Iterator[int]:
        """Trains the remaining epochs; yields each epoch's number once every living member's metrics
        are in `histories` (a member that fails has its reason in `errors` instead)."""
        self.measure_init()
        while not self.finished:
            started = time.perf_counter()
            losses = self.train_epoch(on_step)
            for m in self.alive:
                if not math.isfinite(losses[m]):
                    self.fail(m, f"non-finite loss at epoch {self.epoch + 1}")
            self.epoch += 1
            elapsed = time.perf_counter() - started  # the fused epoch's time, shared by the members
            due = evaluation_due(self.epoch, self.train_cfg)
            for m in self.alive:
                metrics = {"train_loss": losses[m], "train_time_s": elapsed}
                if due:
                    metrics.update(evaluated(lambda: self.evaluate(m), self.init_metrics[m]))
                self.histories[m].append({"epoch": self.epoch, **metrics})
            yield self.epoch

    def fail(self, m: int, reason: str) -> None:
        self.errors[m] = reason
        self.living[m] = 0.0

    def member_model(self, m: int) -> TopographicVAE:
        return self.model.member(m)

    def evaluate(self, m: int, likelihood: bool = True) -> dict:
        return evaluate(self.member_model(m), self.data[m], self.cfgs[m], self.device, likelihood)

    def measure_init(self) -> None:
        """Each member's metrics at initialisation, as Trainer.measure_init."""
        for m in range(self.k):
            if self.init_metrics[m] is None:
                self.init_metrics[m] = init_metrics(self.evaluate(m, likelihood=False)) if self.epoch == 0 else {}

    # ------------------------------------------------------------ checkpoints: one single run's per member

    def member_state_dict(self, m: int) -> dict:
        opt = self.optimizer.state_dict()
        names = [name for name, _ in self.model.named_parameters()]  # the optimiser's parameter order
        noise = self.noise[m]
        rng = {"data": self.batches[m].get_state()}
        if self.device.type == "cuda":
            rng["torch"] = torch.get_rng_state()
            rng["cuda"] = noise.get_state() if noise is not None else torch.cuda.get_rng_state(self.device)
        else:
            rng["torch"] = noise.get_state() if noise is not None else torch.get_rng_state()
        return {
            "model": self.model.member_state(m),
            "optimizer": {"state": {i: {k: v if k in SHARED_STATE else to_member(names[i], v[m]) for k, v in slot.items()}
                                    for i, slot in opt["state"].items()},
                          "param_groups": opt["param_groups"]},
            "epoch": self.epoch,
            "rng": rng,
            "history": json.dumps(self.histories[m]),
            "init_metrics": json.dumps(self.init_metrics[m]),
            "config": json.dumps(self.cfgs[m].to_dict()),
        }

    def save_checkpoints(self, directories: list[str | Path]) -> None:
        """Member m's checkpoint into directories[m], each written atomically; failed members are not saved."""
        for m in self.alive:
            write_checkpoint(self.member_state_dict(m), directories[m])

    def load_checkpoints(self, directories: list[str | Path | None]) -> None:
        """Resumes every member from its single-run checkpoint; they must be at one epoch. A member
        without one (None) must have been marked failed in `errors` and keeps its history."""
        given = [m for m, d in enumerate(directories) if d is not None]
        if any(self.errors[m] is None for m, d in enumerate(directories) if d is None):
            raise CheckpointError("fused checkpoints: a member that has not failed has no checkpoint")
        if not given:
            return
        histories = list(self.histories)
        directories = [directories[m] for m in given]
        states = [read_checkpoint(d, self.device, self.train_cfg.epochs) for d in directories]
        epochs = [int(s["epoch"]) for s in states]
        if len(set(epochs)) > 1:
            where = ", ".join(f"{Path(d).parent.name}: {e}" for d, e in zip(directories, epochs))
            raise CheckpointError(f"fused members' checkpoints are at different epochs ({where}); "
                                  "resume them one by one, or start again with --overwrite")
        states = [states[given.index(m)] if m in given else states[0] for m in range(self.k)]  # failed: any weights
        try:
            self.model.load_member_states([s["model"] for s in states])
            if all("optimizer" in s for s in states):
                self._load_optimizer([s["optimizer"] for s in states])
                for m, s in ((m, states[m]) for m in given):
                    self.batches[m].set_state(s["rng"]["data"])
                    key = "cuda" if self.device.type == "cuda" else "torch"
                    if self.noise[m] is not None:
                        self.noise[m].set_state(s["rng"][key])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            raise CheckpointError(f"fused checkpoints in {', '.join(map(str, directories))}: hold no training "
                                  f"state of these configs ({type(e).__name__})") from None
        self.epoch = epochs[0]
        for m in given:
            self.histories[m] = json.loads(states[m]["history"])
            self.init_metrics[m] = json.loads(states[m].get("init_metrics", "{}")) or {}
        for m in set(range(self.k)) - set(given):
            self.histories[m], self.init_metrics[m] = histories[m], {}

    def _load_optimizer(self, states: list[dict]) -> None:
        names = [name for name, _ in self.model.named_parameters()]
        stacked = {i: {k: v if k in SHARED_STATE else from_members(names[i], [s["state"][i][k] for s in states])
                       for k, v in slot.items()}
                   for i, slot in states[0]["state"].items()}
        restore_optimizer(self.optimizer, {"state": stacked, "param_groups": states[0]["param_groups"]},
                          self.train_cfg, self.graphed)


def clip_per_member(params: list[torch.Tensor], max_norm: float) -> None:
    """clip_grad_norm_ of each member alone: every member's gradients scaled to at most max_norm."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch.stack([g.reshape(g.shape[0], -1).pow(2).sum(1) for g in grads]).sum(0).sqrt()  # (K,)
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *[1] * (g.dim() - 1)))


FAILED_FILE = "failed.json"  # in a checkpoint of members: the failed ones, why, and their records


def save_members(fused: FusedTrainer, directory: str | Path, folders: list[str]) -> None:
    """Each living member's checkpoint into directory/folders[m]/, and the failed members' reasons
    and records into failed.json (a failed member's weights are not kept)."""
    directory = Path(directory)
    fused.save_checkpoints([directory / f for f in folders])
    failed = {f: {"error": e, "history": h} for f, e, h in zip(folders, fused.errors, fused.histories) if e}
    (directory / FAILED_FILE).write_text(json.dumps(failed))


def load_members(fused: FusedTrainer, directory: str | Path, folders: list[str]) -> None:
    """Resumes what save_members wrote: failed members stay failed, with their records."""
    directory = Path(directory)
    failed = json.loads((directory / FAILED_FILE).read_text()) if (directory / FAILED_FILE).is_file() else {}
    for m, folder in enumerate(folders):
        if folder in failed:
            fused.fail(m, failed[folder]["error"])
            fused.histories[m] = failed[folder]["history"]
    fused.load_checkpoints([None if f in failed else directory / f for f in folders])


class Replicates:
    """One config trained under `k` seeds (train.seed, train.seed + 1, ...) as one fused model, seen
    as one run: its history reports each metric's mean over the seeds that have not failed, with
    `<m>_std` and `<m>_seed<s>` beside it (metrics.over_seeds). It fails only when every seed has.

    The checkpoint is one folder per seed (seed_<s>/, a single run's checkpoint each) and
    failed.json; the pictures are those of the first seed that has not failed."""

    def __init__(self, cfg: RunConfig, k: int, device: torch.device | None = None, sources=None):
        self.seeds = [cfg.train.seed + i for i in range(k)]
        self.folders = [f"seed_{s}" for s in self.seeds]
        self.fused = FusedTrainer([with_seed(cfg, s) for s in self.seeds], device, sources)
        self.cfg = cfg

    @property
    def finished(self) -> bool:
        return self.fused.finished

    @property
    def model(self) -> TopographicVAE:
        return self.fused.member_model(self.fused.alive[0])

    @property
    def data(self):
        return self.fused.data[self.fused.alive[0]]

    @property
    def history(self) -> list[dict]:
        h = self.fused.histories
        return [over_seeds({s: h[m][i] for m, s in enumerate(self.seeds) if i < len(h[m])})
                for i in range(max(map(len, h)))]

    def epochs(self, on_step: Callable[[int, float], None] | None = None) -> Iterator[dict]:
        for _ in self.fused.epochs(on_step):
            if not self.fused.alive:
                raise DivergenceError(next(e for e in self.fused.errors if e))
            yield self.history[-1]

    def save_checkpoint(self, directory: str | Path) -> None:
        save_members(self.fused, directory, self.folders)

    def load_checkpoint(self, directory: str | Path) -> None:
        load_members(self.fused, directory, self.folders)


def with_seed(cfg: RunConfig, seed: int) -> RunConfig:
    raw = cfg.to_dict()
    raw["train"]["seed"] = seed
    return run_config_from_dict(raw)


def state_files(folder: str | Path) -> list[Path]:
    """The training states in a checkpoint folder: a single run's, or each member's (seed_<s>/ of a
    replicated trial, point_<i>/ of a fused one)."""
    folder = Path(folder)
    if (folder / CHECKPOINT_FILE).is_file():
        return [folder / CHECKPOINT_FILE]
    return sorted(p for p in folder.glob(f"*/{CHECKPOINT_FILE}"))
