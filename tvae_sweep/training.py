"""Train and evaluate runs on one device; checkpoint and resume exactly.

One loop serves `tvae-sweep train` (one config, several, or one under --seeds) and every sweep
trial (a single run, a replicated one, a fused group of grid points): `Trainer` trains a list of
member runs of one network shape as one model (model.TopographicVAE with K members), and a single
run is the list of one. Member m is the run of its config alone: its weights start from that run's
initialisation under its seed, it draws its batches and its sampling noise from its own generators,
and it is evaluated, checkpointed and pictured as that run. The members share one optimiser, whose
update is elementwise, so the shared step is each member's own step. A member whose loss stops
being finite fails alone, with the reason a single run gives, and its siblings train on.

`Trainer.epochs()` yields each epoch's result per member; the checkpoint is a folder per member,
each a single run's (state.pt: model, optimiser, epoch, RNG states, history), so a resumed run
gives the numbers of an uninterrupted one, and a single run's folder is its one member's.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from .checkpoints import CHECKPOINT_FILE, CheckpointError, read_checkpoint, write_checkpoint
from .config import SHAPE_KEYS, ConfigError, RunConfig, TrainConfig, run_config_from_dict
from .data import build_data
from .data.sequences import load_sources
from .evaluation import evaluate, evaluated, evaluation_due
from .graphed import GraphedStep
from .metrics import init_metrics
from .model import TopographicVAE, check_fusable
from .model.tvae import from_members, to_member


def steps_per_epoch(cfg: RunConfig) -> int:
    return math.ceil(cfg.data.train_sequences / cfg.train.batch_size)


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda but no CUDA device is visible to this process")
    if name == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("train.device is mps but MPS is not available on this machine")
    return torch.device(name)


def param_groups(model: torch.nn.Module, t: TrainConfig) -> list[dict]:
    """All parameters at train.lr, except the TVAE's mu at train.mu_lr when that is set."""
    mu = getattr(model, "mu", None)
    if t.mu_lr is None or mu is None:
        return [{"params": list(model.parameters()), "lr": t.lr}]
    rest = [p for p in model.parameters() if p is not mu]
    return [{"params": rest, "lr": t.lr}, {"params": [mu], "lr": t.mu_lr, "name": "mu"}]


def group_lr(group: dict, t: TrainConfig) -> float:
    return t.mu_lr if group.get("name") == "mu" else t.lr


def forward_precision(t: TrainConfig, device: torch.device):
    """The training step's forward pass: under bfloat16 autocast for train.precision bf16."""
    if t.precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


@contextlib.contextmanager
def step_precision(t: TrainConfig):
    """The training step's matrix products: TF32 on CUDA for train.precision tf32; evaluation keeps FP32."""
    if t.precision != "tf32":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def check_precision(t: TrainConfig, device: torch.device) -> None:
    if t.precision == "tf32" and device.type != "cuda":
        raise ConfigError(f"train.precision: tf32 is a CUDA matrix-product mode, and this run is on {device}; "
                          "use fp32 or bf16")


def graphed_step(t: TrainConfig, device: torch.device, step: Callable[[torch.Tensor], torch.Tensor],
                 optimizer: torch.optim.Optimizer) -> GraphedStep | None:
    """The training step captured as a CUDA graph when train.cuda_graph asks for it (refused off CUDA)."""
    if not t.cuda_graph:
        return None
    if device.type != "cuda":
        raise ConfigError(f"train.cuda_graph: needs a CUDA device, and this run is on {device}")
    return GraphedStep(step, lambda: optimizer.zero_grad(set_to_none=True))


def restore_optimizer(optimizer: torch.optim.Optimizer, state: dict, t: TrainConfig,
                      graphed: GraphedStep | None) -> None:
    """Loads an optimiser state with the config's hyperparameters (a PBT trial may carry a new lr).
    New state tensors: a captured step is captured again."""
    optimizer.load_state_dict(state)
    if graphed is not None:
        graphed.reset()
    for group in optimizer.param_groups:
        group["lr"] = group_lr(group, t)
        if "momentum" in group:
            group["momentum"] = t.momentum


def make_optimizer(model: torch.nn.Module, t: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    fused = device.type in ("cpu", "cuda")  # one kernel for all parameters: ~10% of a CPU step
    groups = param_groups(model, t)
    if t.optimizer == "adam":  # a captured step keeps Adam's step count on the device
        return torch.optim.Adam(groups, lr=t.lr, fused=fused, capturable=t.cuda_graph)
    return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, fused=fused)


# optimiser state entries the members share (Adam's step count); every other entry of a parameter's
# state is a buffer of its shape, the member axis first
SHARED_STATE = ("step",)
FAILED_FILE = "failed.json"  # in a checkpoint of member folders: the failed members, why, and their records


def shared_settings(cfg: RunConfig) -> dict:
    """What the members of one trainer share: the data, the training settings but the seed, the network's shapes."""
    d = cfg.to_dict()
    return {"data": d["data"], "train": {k: v for k, v in d["train"].items() if k != "seed"},
            "model": {k: d["model"][k] for k in SHAPE_KEYS}}


def check_members(cfgs: list[RunConfig]) -> None:
    """Refuses runs that cannot share one trainer, naming the first setting they differ in."""
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


def with_seed(cfg: RunConfig, seed: int) -> RunConfig:
    raw = cfg.to_dict()
    raw["train"]["seed"] = seed
    return run_config_from_dict(raw)


def noise_generator(device: torch.device, seed: int, graphed: bool) -> torch.Generator | None:
    """The generator of a member's sampling noise, in the state a run's global RNG has once its model
    is built (call right after building the member's model under `seed`). A CUDA graph replays the
    default generator only, so graphed members share it (None)."""
    if graphed:
        return None
    if device.type == "cpu":
        generator = torch.Generator()
        generator.set_state(torch.get_rng_state())
        return generator
    return torch.Generator(device).manual_seed(seed)  # the CUDA RNG is untouched by the CPU initialisation


def clip_per_member(params: list[torch.Tensor], max_norm: float) -> None:
    """clip_grad_norm_ of each member alone: every member's gradients scaled to at most max_norm
    (K = 1: clip_grad_norm_ of the model)."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch.stack([g.reshape(g.shape[0], -1).pow(2).sum(1) for g in grads]).sum(0).sqrt()  # (K,)
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *[1] * (g.dim() - 1)))


class Trainer:
    """Trains `members` (one RunConfig, or a list of them sharing shared_settings) as one model."""

    def __init__(self, members: RunConfig | list[RunConfig], device: torch.device | None = None, sources=None):
        cfgs = [members] if isinstance(members, RunConfig) else list(members)
        check_members(cfgs)
        self.cfgs = cfgs
        t = self.train_cfg = cfgs[0].train
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        self.device = device or resolve_device(t.device)
        check_precision(t, self.device)
        sources = sources or load_sources(cfgs[0].data)
        models, self.noise, self.data = [], [], []
        for cfg in cfgs:
            torch.manual_seed(cfg.train.seed)
            models.append(TopographicVAE(cfg.model))  # the run's own initialisation
            self.noise.append(noise_generator(self.device, cfg.train.seed, t.cuda_graph))
            self.data.append(build_data(cfg.data, cfg.model.seq_len, self.device, sources=sources))
        self.model = models[0] if len(models) == 1 else self._stacked(models)
        self.model.to(self.device)
        self.optimizer = make_optimizer(self.model, t, self.device)
        self.batches = [torch.Generator(self.device).manual_seed(c.train.seed + 1) for c in cfgs]
        self.graphed = graphed_step(t, self.device, self._step, self.optimizer)
        self.epoch = 0
        self.histories: list[list[dict]] = [[] for _ in cfgs]
        self.init_metrics: list[dict | None] = [None] * len(cfgs)  # see measure_init
        self.errors: list[str | None] = [None] * len(cfgs)  # why a member failed
        self.living = torch.ones(len(cfgs), device=self.device)  # 0 for a failed member

    def _stacked(self, models: list[TopographicVAE]) -> TopographicVAE:
        with torch.random.fork_rng(devices=[]):  # its own initialisation is replaced: leave the RNG alone
            model = TopographicVAE([c.model for c in self.cfgs])
        model.load_member_states([m.member_state(0) for m in models])
        return model

    @property
    def k(self) -> int:
        return len(self.cfgs)

    @property
    def cfg(self) -> RunConfig:
        """The first member's config (a single run's)."""
        return self.cfgs[0]

    @property
    def history(self) -> list[dict]:
        """The first member's history (a single run's)."""
        return self.histories[0]

    @property
    def alive(self) -> list[int]:
        return [m for m in range(self.k) if self.errors[m] is None]

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.cfg)

    @property
    def finished(self) -> bool:
        return self.epoch >= self.train_cfg.epochs or not self.alive

    # ------------------------------------------------------------ training

    def train_epoch(self, on_step: Callable[[int, float], None] | None = None) -> list[float]:
        """One epoch of every member; returns each member's mean training loss."""
        t, steps = self.train_cfg, self.steps_per_epoch
        self.model.train()
        total = torch.zeros(self.k, device=self.device)
        for step in range(steps):
            batches = [d.sample_train(t.batch_size, g).x for d, g in zip(self.data, self.batches, strict=True)]
            x = batches[0].unsqueeze(0) if self.k == 1 else torch.stack(batches)  # (K, B, S, C, H, W)
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

    def epochs(self, on_step: Callable[[int, float], None] | None = None) -> Iterator[list[dict]]:
        """Trains the remaining epochs, yielding each epoch's result per member: the metrics appended
        to its history (evaluated ones included), or {"epoch", "error"} for a member that has failed.
        Once every member has failed, raises DivergenceError with the first one's reason instead."""
        self.measure_init()
        while not self.finished:
            started = time.perf_counter()
            losses = self.train_epoch(on_step)
            for m in self.alive:
                if not math.isfinite(losses[m]):
                    self.fail(m, f"non-finite loss at epoch {self.epoch + 1}")
            self.epoch += 1
            if not self.alive:
                break
            elapsed = time.perf_counter() - started  # the epoch's time, shared by the members
            due = evaluation_due(self.epoch, self.train_cfg)
            for m in self.alive:
                metrics = {"train_loss": losses[m], "train_time_s": elapsed}
                if due:
                    metrics.update(evaluated(functools.partial(self.evaluate, m), self.init_metrics[m]))
                self.histories[m].append({"epoch": self.epoch, **metrics})
            yield [self.result(m) for m in range(self.k)]
        if not self.alive:
            raise DivergenceError(next(e for e in self.errors if e))

    def result(self, m: int) -> dict:
        """Member m's result of the epoch just trained."""
        if self.errors[m] is not None:
            return {"epoch": self.epoch, "error": self.errors[m]}
        return self.histories[m][-1]

    def fail(self, m: int, reason: str) -> None:
        self.errors[m] = reason
        self.living[m] = 0.0

    # ------------------------------------------------------------ evaluation

    def evaluate(self, m: int = 0, likelihood: bool = True) -> dict:
        return evaluate(self.model.member(m), self.data[m], self.cfgs[m], self.device, likelihood)

    def measure_init(self) -> None:
        """The built-in part of every equivariance metric: measured once per member, on its model
        before any training (same seed and test set), and kept with the checkpoint (TVAE-SPEC 3.1)."""
        for m in range(self.k):
            if self.init_metrics[m] is None:
                self.init_metrics[m] = init_metrics(self.evaluate(m, likelihood=False)) if self.epoch == 0 else {}

    # ------------------------------------------------------------ checkpoints: a single run's per member

    def member_state_dict(self, m: int) -> dict:
        """Member m's training state, as a single run of its config saves it."""
        opt = self.optimizer.state_dict()
        names = [name for name, _ in self.model.named_parameters()]  # the optimiser's parameter order
        noise = self.noise[m]
        rng = {"data": self.batches[m].get_state()}
        if self.device.type == "cuda":
            rng["torch"] = torch.get_rng_state()
            rng["cuda"] = noise.get_state() if noise is not None else torch.cuda.get_rng_state(self.device)
        else:
            rng["torch"] = noise.get_state() if noise is not None else torch.get_rng_state()
        state = {i: {k: v if k in SHARED_STATE else to_member(names[i], v[m]) for k, v in slot.items()}
                 for i, slot in opt["state"].items()}
        return {
            "model": self.model.member_state(m),
            "optimizer": {"state": state, "param_groups": opt["param_groups"]},
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
        without one (None) must have been marked failed (see fail) and keeps its history.

        A pruned checkpoint (weights and record only, see prune_checkpoint) restores a finished run,
        which trains no further; it cannot continue an unfinished one."""
        if any(d is None and self.errors[m] is None for m, d in enumerate(directories)):
            raise CheckpointError("fused checkpoints: a member that has not failed has no checkpoint")
        given = {m: Path(d) for m, d in enumerate(directories) if d is not None}
        if not given:
            return
        states = {m: read_checkpoint(d, self.device, self.train_cfg.epochs) for m, d in given.items()}
        epochs = {int(s["epoch"]) for s in states.values()}
        if len(epochs) > 1:
            where = ", ".join(f"{d.parent.name}: {int(states[m]['epoch'])}" for m, d in given.items())
            raise CheckpointError(f"fused members' checkpoints are at different epochs ({where}); "
                                  "resume them one by one, or start again with --overwrite")
        try:
            self._restore(states)
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            where = ", ".join(str(d / CHECKPOINT_FILE) for d in given.values())
            what = "holds no training state of this config" if len(given) == 1 else \
                "hold no training state of these configs"
            raise CheckpointError(f"{where}: {what} ({type(e).__name__})") from None
        self.epoch = epochs.pop()

    def _restore(self, states: dict[int, dict]) -> None:
        """The members' states read from their checkpoints (a failed member's weights: any member's)."""
        any_state = next(iter(states.values()))
        full = [states.get(m, any_state) for m in range(self.k)]
        self.model.load_member_states([s["model"] for s in full])
        if all("optimizer" in s for s in states.values()):
            self._load_optimizer([s["optimizer"] for s in full])
            for m, s in states.items():
                self._restore_rng(m, s["rng"])
        for m, s in states.items():
            self.histories[m] = json.loads(s["history"])
            self.init_metrics[m] = json.loads(s.get("init_metrics", "{}")) or {}  # {}: a run older than them
        for m in set(range(self.k)) - set(states):
            self.init_metrics[m] = {}

    def _restore_rng(self, m: int, rng: dict) -> None:
        self.batches[m].set_state(rng["data"])
        key = "cuda" if self.device.type == "cuda" else "torch"
        if self.noise[m] is not None:
            self.noise[m].set_state(rng[key])
        elif key in rng:  # graphed: the members share the default generator
            torch.cuda.set_rng_state(rng[key], self.device)

    def _load_optimizer(self, states: list[dict]) -> None:
        names = [name for name, _ in self.model.named_parameters()]
        stacked = {i: {k: v if k in SHARED_STATE else from_members(names[i], [s["state"][i][k] for s in states])
                       for k, v in slot.items()}
                   for i, slot in states[0]["state"].items()}
        restore_optimizer(self.optimizer, {"state": stacked, "param_groups": states[0]["param_groups"]},
                          self.train_cfg, self.graphed)

    # ------------------------------------------------------------ one checkpoint folder

    def save_checkpoint(self, directory: str | Path, folders: list[str] | None = None) -> None:
        """The checkpoint in `directory`: a single run's state.pt there (folders None, one member),
        or member m's in directory/folders[m]/ and the failed members' reasons and records in
        failed.json (a failed member's weights are not kept)."""
        directory = Path(directory)
        if folders is None:
            self._single_member("save_checkpoint")
            self.save_checkpoints([directory])
            return
        self.save_checkpoints([directory / f for f in folders])
        failed = {f: {"error": e, "history": h}
                  for f, e, h in zip(folders, self.errors, self.histories, strict=True) if e}
        (directory / FAILED_FILE).write_text(json.dumps(failed))

    def load_checkpoint(self, directory: str | Path, folders: list[str] | None = None) -> None:
        """Resumes what save_checkpoint wrote: failed members stay failed, with their records."""
        directory = Path(directory)
        if folders is None:
            self._single_member("load_checkpoint")
            self.load_checkpoints([directory])
            return
        path = directory / FAILED_FILE
        failed = json.loads(path.read_text()) if path.is_file() else {}
        for m, folder in enumerate(folders):
            if folder in failed:
                self.fail(m, failed[folder]["error"])
                self.histories[m] = failed[folder]["history"]
        self.load_checkpoints([None if f in failed else directory / f for f in folders])

    def _single_member(self, what: str) -> None:
        if self.k != 1:
            raise ValueError(f"{what}: {self.k} members need a folder each")


