"""Train and evaluate one configuration on one device; checkpoint and resume exactly.

The same loop serves `tvae-sweep train` and every sweep trial: `Trainer.epochs()` yields one dict
of metrics per epoch, and `save_checkpoint` / `load_checkpoint` carry the whole state (model,
optimiser, epoch, RNG states, history), so a resumed run gives the numbers of an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from .config import ConfigError, RunConfig, TrainConfig
from .data import SequenceData, build_data
from .graphed import GraphedStep
from .metrics import (
    active_units,
    capsule_correlation,
    equivariance_error,
    equivariance_ratio,
    init_metrics,
    learned,
    mean_image_nll,
    preferred_classes,
    roll_gain,
    roll_prediction,
    scopes,
    topographic_agreement,
)
from .model import TopographicVAE, build_model
from .model.tvae import gaussian_kl
from .seeding import fixed_rng

CHECKPOINT_FILE = "state.pt"


def steps_per_epoch(cfg: RunConfig) -> int:
    return math.ceil(cfg.data.train_sequences / cfg.train.batch_size)


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be restored: truncated, corrupt, or not a training state."""


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


def restore_optimizer(optimizer: torch.optim.Optimizer, state: dict, t: TrainConfig, graphed: GraphedStep | None) -> None:
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


@torch.no_grad()
def evaluate(model: TopographicVAE, data: SequenceData, cfg: RunConfig, device: torch.device,
             likelihood: bool = True) -> dict:
    """Metrics on the fixed test sequences, with their own seeded randomness (training RNG untouched).

    likelihood=False leaves out the importance-sampled likelihoods, the bulk of the cost (the
    model at initialisation is measured without them).
    """
    t = cfg.train
    model.eval()
    reported = scopes(cfg)  # the registry's rule: what this run reports
    sequences, draws_map = "sequence" in reported, "map" in reported
    shift = model.metric_shift
    sums: dict[str, float] = {}
    units: dict[str, torch.Tensor] = {}  # per latent: per-unit sums of posterior means and of their squares
    latents, labels, n, images, pixels = [], [], 0, 0, 0.0

    def add(name: str, value) -> None:
        sums[name] = sums.get(name, 0.0) + float(value)

    with fixed_rng(device, t.seed + 2):
        perm_gen = torch.Generator(device).manual_seed(t.seed + 3)
        for batch in data.test_batches(t.eval_batch_size):
            x = batch.x
            b, s = x.shape[:2]
            n, images = n + b, images + b * s
            pixels = pixels + x.sum(dim=(0, 1)).double()
            out = model(x)
            add("loss", out.loss * b)
            q = out.posterior
            for name, mean, logvar in (("z", q.z_mean, q.z_logvar), ("u", q.u_mean, q.u_logvar)):
                if mean is None:
                    continue
                add(f"kl_{name}", gaussian_kl(mean, logvar).sum() / s)  # summed over images / S: per sequence
                flat = mean.reshape(b * s, -1).double()
                sum_sq = torch.stack([flat.sum(0), (flat * flat).sum(0)])
                units[name] = units[name] + sum_sq if name in units else sum_sq
            if likelihood:
                ours, per_frame = model.log_likelihoods(x, t.ll_samples)
                add("log_likelihood", ours.sum())
                add("log_likelihood_per_frame", per_frame.sum())
            if sequences:
                tt = out.t
                latents.append(tt)
                roll_nll, self_nll = roll_prediction(model, x, tt, shift)
                add("equivariance_error", equivariance_error(tt, shift).sum())
                add("roll_nll", roll_nll.sum())
                add("self_nll", self_nll.sum())
                add("roll_gain", roll_gain(model.decode, model.bernoulli_nll, tt, x, shift).sum())
            elif draws_map:
                latents.append(out.t)
                labels.append(batch.label)
    out = {k: v / n for k, v in sums.items()}
    out["mean_image_nll"] = mean_image_nll(pixels / images)
    for name, (mean_sum, square_sum) in units.items():
        out[f"active_units_{name}"] = active_units(mean_sum, square_sum, images)
    if draws_map:
        preferred = preferred_classes(torch.cat(latents), torch.cat(labels))
        out["topographic_agreement"], out["topographic_agreement_chance"] = topographic_agreement(preferred)
    if sequences:
        out["equivariance_ratio"] = float(equivariance_ratio(torch.cat(latents), shift, perm_gen))
        out["roll_nll_gap"] = out["roll_nll"] - out.pop("self_nll")
        test = data.test_set()
        out.update(capsule_correlation(torch.cat(latents), test.factor, test.start,
                                       data.test_factor_periods, data.test_factor_names))
    return out


def evaluation_due(epoch: int, t: TrainConfig) -> bool:
    """Whether the epoch just trained is evaluated: every eval_every epochs, and the last."""
    return epoch % t.eval_every == 0 or epoch >= t.epochs


def evaluated(evaluate_model: Callable[[], dict], init: dict) -> dict:
    """An evaluation's metrics, with what training added to the ones at initialisation and its time."""
    started = time.perf_counter()
    measured = evaluate_model()
    return {**measured, **learned(measured, init), "eval_time_s": time.perf_counter() - started}


class Trainer:
    def __init__(self, cfg: RunConfig, data: SequenceData | None = None, device: torch.device | None = None):
        self.cfg = cfg
        t = cfg.train
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        self.device = device or resolve_device(t.device)
        check_precision(t, self.device)
        torch.manual_seed(t.seed)
        self.model = build_model(cfg.model).to(self.device)
        self.optimizer = make_optimizer(self.model, t, self.device)
        self.data = data or build_data(cfg.data, cfg.model.seq_len, self.device, t.seed)
        self.generator = torch.Generator(self.device).manual_seed(t.seed + 1)
        self.graphed = graphed_step(t, self.device, self._step, self.optimizer)
        self.epoch = 0
        self.history: list[dict] = []
        self.init_metrics: dict[str, float] | None = None  # see measure_init

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.cfg)

    @property
    def finished(self) -> bool:
        return self.epoch >= self.cfg.train.epochs

    # ------------------------------------------------------------ training

    def train_epoch(self, on_step: Callable[[int, float], None] | None = None) -> dict:
        t = self.cfg.train
        self.model.train()
        total = torch.zeros((), device=self.device)
        for step in range(self.steps_per_epoch):
            batch = self.data.sample_train(t.batch_size, self.generator)
            if self.graphed is not None:
                loss = self.graphed(batch.x)
            else:
                self.optimizer.zero_grad(set_to_none=True)
                loss = self._step(batch.x)
            total += loss
            if on_step is not None:
                on_step(step, float(loss))
        train_loss = float(total) / self.steps_per_epoch
        if not math.isfinite(train_loss):
            raise DivergenceError(f"non-finite loss at epoch {self.epoch + 1}")
        return {"train_loss": train_loss}

    def _step(self, x: torch.Tensor) -> torch.Tensor:
        """Forward, backward and the optimiser step on zeroed gradients; returns the detached loss."""
        t = self.cfg.train
        with step_precision(t):
            with forward_precision(t, self.device):
                loss = self.model(x).loss
            loss.backward()
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
            self.optimizer.step()
        return loss.detach()

    def epochs(self, on_step: Callable[[int, float], None] | None = None) -> Iterator[dict]:
        """Trains the remaining epochs, yielding each epoch's metrics (evaluated ones included)."""
        self.measure_init()
        while not self.finished:
            started = time.perf_counter()
            metrics = self.train_epoch(on_step)
            self.epoch += 1
            metrics["train_time_s"] = time.perf_counter() - started
            if evaluation_due(self.epoch, self.cfg.train):
                metrics.update(evaluated(self.evaluate, self.init_metrics))
            metrics = {"epoch": self.epoch, **metrics}
            self.history.append(metrics)
            yield metrics

    # ------------------------------------------------------------ evaluation

    def evaluate(self, likelihood: bool = True) -> dict:
        return evaluate(self.model, self.data, self.cfg, self.device, likelihood)

    def measure_init(self) -> None:
        """The built-in part of every equivariance metric: measured once, on the model before any
        training (same seed and test set), and kept with the checkpoint (TVAE-SPEC 3.1)."""
        if self.init_metrics is None:
            self.init_metrics = init_metrics(self.evaluate(likelihood=False)) if self.epoch == 0 else {}

    # ------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state(), "data": self.generator.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "rng": rng,
            "history": json.dumps(self.history),
            "init_metrics": json.dumps(self.init_metrics),
            "config": json.dumps(self.cfg.to_dict()),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restores the state; hyperparameters stay the config's (a PBT trial may carry a new lr).

        A pruned state (model weights only, see prune_checkpoint) restores a finished run, which
        trains no further; it cannot continue an unfinished one."""
        if "optimizer" not in state:
            self.model.load_state_dict(state["model"])
            self.epoch, self.history = int(state["epoch"]), json.loads(state["history"])
            self.init_metrics = json.loads(state.get("init_metrics", "{}")) or {}
            return
        self.model.load_state_dict(state["model"])
        restore_optimizer(self.optimizer, state["optimizer"], self.cfg.train, self.graphed)
        self.epoch = int(state["epoch"])
        self.history = json.loads(state["history"])
        self.init_metrics = json.loads(state.get("init_metrics", "{}")) or {}  # {}: a run older than them
        torch.set_rng_state(state["rng"]["torch"])
        self.generator.set_state(state["rng"]["data"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)

    def save_checkpoint(self, directory: str | Path) -> Path:
        return write_checkpoint(self.state_dict(), directory)

    def load_checkpoint(self, directory: str | Path) -> None:
        state = read_checkpoint(directory, self.device, self.cfg.train.epochs)
        try:
            self.load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            raise CheckpointError(f"{Path(directory) / CHECKPOINT_FILE}: holds no training state of this config "
                                  f"({type(e).__name__})") from None


def write_checkpoint(state: dict, directory: str | Path) -> Path:
    """Writes a training state atomically (a temporary file renamed into place)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (CHECKPOINT_FILE + ".tmp")
    torch.save(state, tmp)
    tmp.replace(directory / CHECKPOINT_FILE)
    return directory


def read_checkpoint(directory: str | Path, device: torch.device, epochs: int) -> dict:
    """The training state saved in `directory`, refused with a CheckpointError when it is unreadable
    or pruned before its run's `epochs`."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint there")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise CheckpointError(f"{path}: not a readable tvae-sweep checkpoint ({type(e).__name__})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: holds no training state of this config (no model)")
    if "optimizer" not in state and int(state.get("epoch", 0)) < epochs:
        raise CheckpointError(f"{path}: holds model weights only (pruned when its run finished), "
                              "which cannot continue training")
    if "rng" in state:
        state["rng"] = {k: v.cpu() for k, v in state["rng"].items()}  # RNG states are CPU byte tensors
    return state


# what a finished run's checkpoint keeps once pruned: its weights and its record, no optimiser or RNG state
PRUNED_KEYS = ("model", "epoch", "history", "init_metrics", "config")


def prune_checkpoint(directory: str | Path) -> int:
    """Rewrites a finished run's checkpoint with its model weights and record only (the optimiser's
    moment buffers are twice the weights again); returns the bytes freed. Atomic: a process killed
    during it leaves the full checkpoint or the pruned one, never a broken file."""
    path = Path(directory) / CHECKPOINT_FILE
    before = path.stat().st_size
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "optimizer" not in state:
        return 0
    tmp = path.with_name(CHECKPOINT_FILE + ".pruning")
    torch.save({k: state[k] for k in PRUNED_KEYS if k in state}, tmp)
    tmp.replace(path)
    return before - path.stat().st_size
