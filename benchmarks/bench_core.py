"""Training-step and data-rate benchmark of the core model.

    python -m benchmarks.bench_core [--quick]

Times, side by side and in alternating rounds: a training step of the dense model, of the same
network written as image-sized convolutions (the original's form), and of the step's matrix products
alone (the floor); then the rate at which the data generator makes sequences against the rate the
model trains on them. Prints a table and writes it into benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from tvae_sweep import DataConfig, ModelConfig, TrainConfig, build_model
from tvae_sweep.data import build_data
from tvae_sweep.metrics import equivariance_error, permute_frames, roll_prediction
from tvae_sweep.model import FusedLinear, w_by_rolls
from tvae_sweep.training import make_optimizer

from .common import QUIET, Timings, interleaved, machine_line, publish

LR, MOMENTUM = 1e-4, 0.9
SPEEDUP_GOAL = 2.0       # dense step at least this many times faster than the conv step
FLOOR_GOAL = 1.15        # dense step at most this many times the GEMM floor
GENERATION_GOAL = 5.0    # sequences generated per second at least this many times those trained

MNIST = ModelConfig()
MNIST_2D = ModelConfig(variant="tvae2d", n_caps=1, cap_dim=324, seq_len=1, torus_window=5,
                       mu_init=10.0, image_shape=(1, 28, 28))


# ---------------------------------------------------------------- the original's form


class ConvEncoder(nn.Module):
    """C*H*W -> 3D -> 2D -> 2D as a Conv2d with an image-sized kernel and 1x1 convolutions."""

    def __init__(self, image_shape: tuple[int, int, int], d: int):
        super().__init__()
        c, h, w = image_shape
        self.image_shape = image_shape
        self.net = nn.Sequential(
            nn.Conv2d(c, 3 * d, (h, w)), nn.ReLU(),
            nn.Conv2d(3 * d, 2 * d, 1), nn.ReLU(),
            nn.Conv2d(2 * d, 2 * d, 1),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x: (K, N, C*H*W), as the model's encoders take it
        out = self.net(x.reshape(-1, *self.image_shape))  # (K*N, 2D, 1, 1)
        return out.reshape(*x.shape[:-1], -1).chunk(2, dim=-1)


class ConvDecoder(nn.Module):
    """D -> 2D -> 3D -> C*H*W as 1x1 transposed convolutions and an image-sized one (bias per channel)."""

    def __init__(self, image_shape: tuple[int, int, int], d: int):
        super().__init__()
        c, h, w = image_shape
        self.net = nn.Sequential(
            nn.ConvTranspose2d(d, 2 * d, 1), nn.ReLU(),
            nn.ConvTranspose2d(2 * d, 3 * d, 1), nn.ReLU(),
            nn.ConvTranspose2d(3 * d, c, (h, w)),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        # t: (K, N, D), as the model's decoder takes it
        return self.net(t.reshape(-1, t.shape[-1], 1, 1)).reshape(*t.shape[:-1], -1)


def conv_model(cfg: ModelConfig) -> nn.Module:
    """The model with its encoders and decoder swapped for the convolutional form."""
    model = build_model(cfg)
    d = cfg.latent_dim
    model.z_encoder = ConvEncoder(cfg.image_shape, d)
    if model.u_encoder is not None:
        model.u_encoder = ConvEncoder(cfg.image_shape, d)
    model.decoder = ConvDecoder(cfg.image_shape, d)
    return model


def linears(module: nn.Module) -> list[FusedLinear]:
    return [m for m in module.modules() if isinstance(m, FusedLinear)]


def convs(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


@torch.no_grad()
def copy_dense_into_conv(dense: nn.Module, conv: nn.Module, cfg: ModelConfig) -> None:
    """Gives the conv model the dense model's weights (decoder output bias: per channel, so made equal)."""
    c, h, w = cfg.image_shape
    if dense.mu is not None:
        conv.mu.copy_(dense.mu)
    pairs = [(dense.z_encoder, conv.z_encoder), (dense.decoder, conv.decoder)]
    if dense.u_encoder is not None:
        pairs.append((dense.u_encoder, conv.u_encoder))
    for dense_part, conv_part in pairs:
        for lin, cv in zip(linears(dense_part), convs(conv_part), strict=True):
            weight, bias = lin.weight[0], lin.bias[0]  # the one member's (in, out) and (out,)
            if isinstance(cv, nn.ConvTranspose2d):
                cv.weight.copy_(weight.reshape(cv.weight.shape))
                if cv.weight.shape[2:] == (1, 1):
                    cv.bias.copy_(bias)
                else:
                    per_channel = bias.reshape(c, h * w).mean(1)
                    cv.bias.copy_(per_channel)
                    bias.copy_(per_channel.repeat_interleave(h * w))
            else:
                cv.weight.copy_(weight.t().reshape(cv.weight.shape))
                cv.bias.copy_(bias)


def same_function_error(cfg: ModelConfig, x: torch.Tensor) -> float:
    """Largest difference of the logits between the dense and conv forms with shared weights and
    noise, relative to the largest logit."""
    torch.manual_seed(1)
    dense, conv = build_model(cfg), conv_model(cfg)
    copy_dense_into_conv(dense, conv, cfg)
    with torch.no_grad():
        torch.manual_seed(2)
        a = dense(x).logits
        torch.manual_seed(2)
        b = conv(x).logits
    return float((a - b).abs().max() / a.abs().max())


# ---------------------------------------------------------------- the steps


def train_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """One step as the trainer takes it: forward, zero_grad, backward, the trainer's SGD with momentum."""
    optimizer = make_optimizer(model, TrainConfig(lr=LR, momentum=MOMENTUM), x.device)

    def step() -> None:
        loss = model(x).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


@dataclass(frozen=True)
class Product:
    """One matrix product of the model, y = x @ w.T with x (rows, d_in), and which gradients it has."""

    rows: int
    d_in: int
    d_out: int
    grad_input: bool = True   # False for the first encoder layers: the images need no gradient
    grad_weight: bool = True  # False for W of the energy: a constant

    @property
    def flops(self) -> float:
        return 2.0 * self.rows * self.d_in * self.d_out * (1 + self.grad_input + self.grad_weight)


def products(cfg: ModelConfig, n_images: int) -> list[Product]:
    """Every matrix product of a training step, in forward order: the encoders' and decoder's
    Linear layers and, for the topographic models, v = W(u^2) on each capsule's units."""
    d, pixels, n = cfg.latent_dim, math.prod(cfg.image_shape), n_images
    encoder = [Product(n, pixels, 3 * d, grad_input=False), Product(n, 3 * d, 2 * d), Product(n, 2 * d, 2 * d)]
    decoder = [Product(n, d, 2 * d), Product(n, 2 * d, 3 * d), Product(n, 3 * d, pixels)]
    if cfg.variant == "vae":
        return encoder + decoder
    units = cfg.seq_len * cfg.cap_dim if cfg.variant == "tvae" else cfg.cap_dim
    energy = Product(n * cfg.latent_dim // units, units, units, grad_weight=False)
    return encoder * 2 + [energy] + decoder


@dataclass
class Gemm:
    """The matrix products of one Product, forward and backward, on preallocated tensors."""

    x: torch.Tensor       # (N, in)
    w: torch.Tensor       # (out, in)
    y: torch.Tensor       # (N, out)
    grad_y: torch.Tensor  # (N, out)
    grad_x: torch.Tensor | None  # (N, in)
    grad_w: torch.Tensor | None  # (out, in)

    @classmethod
    def make(cls, p: Product) -> Gemm:
        r = torch.rand
        return cls(r(p.rows, p.d_in), r(p.d_out, p.d_in), torch.empty(p.rows, p.d_out), r(p.rows, p.d_out),
                   torch.empty(p.rows, p.d_in) if p.grad_input else None,
                   torch.empty(p.d_out, p.d_in) if p.grad_weight else None)

    def forward(self) -> None:
        torch.mm(self.x, self.w.t(), out=self.y)

    def backward(self) -> None:
        if self.grad_x is not None:
            torch.mm(self.grad_y, self.w, out=self.grad_x)
        if self.grad_w is not None:
            torch.mm(self.grad_y.t(), self.x, out=self.grad_w)


def products_step(gemms: list) -> Callable[[], None]:
    """Each product's forward in order, then each one's backward in reverse: a step's products alone."""

    def step() -> None:
        for g in gemms:
            g.forward()
        for g in reversed(gemms):
            g.backward()

    return step


def gemm_floor(cfg: ModelConfig, n_images: int) -> Callable[[], None]:
    """The step's matrix products alone, forward then backward in reverse: the floor."""
    return products_step([Gemm.make(p) for p in products(cfg, n_images)])


def forward_backward(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(x).loss.backward()

    return step


def optimizer_alone(cfg: ModelConfig, x: torch.Tensor) -> Callable[[], None]:
    """The trainer's SGD step of the model's parameters, gradients in place, nothing else."""
    model = build_model(cfg)
    optimizer = make_optimizer(model, TrainConfig(lr=LR, momentum=MOMENTUM), x.device)
    model(x).loss.backward()
    optimizer.step()
    return optimizer.step


def energy_steps(cfg: ModelConfig, batch: int) -> dict[str, Callable[[], None]]:
    """v = W(u^2) forward and backward on a (B, S, n_caps, cap_dim) u: as the model computes it
    (one product with the (S*D, S*D) matrix of W) and as the sum of rolls it replaced."""
    u = torch.rand(batch, cfg.seq_len, cfg.n_caps, cfg.cap_dim, requires_grad=True)
    model = build_model(cfg)

    def by_rolls(u_sq: torch.Tensor) -> torch.Tensor:
        return w_by_rolls(cfg, u_sq)

    def run(energy: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], None]:
        def step() -> None:
            energy(u * u).sum().backward()
            u.grad = None
        return step

    with torch.no_grad():
        torch.testing.assert_close(model.energy(u * u), by_rolls(u * u))
    return {"energy_matrix": run(model.energy), "energy_rolls": run(by_rolls)}


def step_flops(cfg: ModelConfig, n_images: int) -> float:
    return sum(p.flops for p in products(cfg, n_images))


# ---------------------------------------------------------------- the runs


@dataclass
class StepCase:
    name: str
    cfg: ModelConfig
    x: torch.Tensor

    @property
    def n_images(self) -> int:
        return self.x.shape[0] * self.x.shape[1]


def step_functions(case: StepCase) -> dict[str, Callable[[], None]]:
    torch.manual_seed(0)
    fns = {"dense": train_step(build_model(case.cfg), case.x),
           "floor": gemm_floor(case.cfg, case.n_images),
           "conv": train_step(conv_model(case.cfg), case.x)}
    if case.cfg.variant == "tvae":
        fns["fwd_bwd"] = forward_backward(build_model(case.cfg), case.x)
        fns["sgd"] = optimizer_alone(case.cfg, case.x)
        fns.update(energy_steps(case.cfg, case.x.shape[0]))
    return fns


def evaluation_functions(x: torch.Tensor) -> dict[str, Callable[[], object]]:
    """What an evaluation costs on a batch of test sequences x, in its two parts: the 10-sample
    log-likelihood, and the sequence metrics (a forward pass for t, equivariance error of t and of
    frame-shuffled t, roll prediction), as `Trainer.evaluate` computes them."""
    torch.manual_seed(0)
    model = build_model(MNIST).eval()
    gen = torch.Generator().manual_seed(0)

    @torch.no_grad()
    def likelihood():
        return model.log_likelihood(x, 10)

    @torch.no_grad()
    def sequence_metrics():
        t = model(x).t
        return (equivariance_error(t, 1), equivariance_error(permute_frames(t, gen), 1),
                roll_prediction(model, x, t, 1))

    return {"likelihood": likelihood, "sequence_metrics": sequence_metrics}


def load_data():
    return build_data(DataConfig(), seq_len=MNIST.seq_len, device="cpu")


def run(quiet_rounds: int, max_seconds: float, batches: tuple[int, ...]) -> dict:
    data = load_data()
    gen = torch.Generator().manual_seed(0)
    samples = {b: data.sample_train(b, gen).x for b in batches}
    cases = [StepCase(f"MNIST TVAE, {b} sequences", MNIST, samples[b]) for b in batches]
    frames = samples[batches[0]][:, :, :1].reshape(-1, 1, 1, 28, 28)
    if frames.shape[0] >= 128:
        frames = frames[:128]
    else:
        frames = frames.repeat(math.ceil(128 / frames.shape[0]), 1, 1, 1, 1)[:128]
    cases.append(StepCase("2-D TVAE, 128 images", MNIST_2D, frames.contiguous()))

    errors = {case.name: same_function_error(case.cfg, case.x) for case in cases}
    fns: dict[str, Callable[[], object]] = {}
    for case in cases:
        for variant, fn in step_functions(case).items():
            fns[f"{case.name}|{variant}"] = fn
    for b in batches:
        fns[f"generate|{b}"] = lambda b=b: data.sample_train(b, gen)
    for part, fn in evaluation_functions(samples[batches[0]]).items():
        fns[f"eval|{part}"] = fn
    times = interleaved(fns, quiet_rounds, max_seconds)
    return {"cases": cases, "batches": batches, "times": times, "errors": errors}


# ---------------------------------------------------------------- the report


def yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def step_table(result: dict) -> tuple[list[str], list[bool]]:
    t: Timings = result["times"]
    lines = ["| case | images/step | GFLOP/step | dense ms | conv ms | floor ms "
             "| conv/dense | dense/floor | quiet rounds | max rel. diff dense vs conv |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    met = []
    for case in result["cases"]:
        key = {v: f"{case.name}|{v}" for v in ("dense", "conv", "floor")}
        ms = {v: f"{t.median(k) * 1e3:.1f} ({t.fastest(k) * 1e3:.1f})" for v, k in key.items()}
        speedup = t.ratio(key["conv"], key["dense"])
        floor_ratio = t.ratio(key["dense"], key["floor"])
        met += [speedup >= SPEEDUP_GOAL, floor_ratio <= FLOOR_GOAL]
        lines.append(
            f"| {case.name} | {case.n_images} | {step_flops(case.cfg, case.n_images) / 1e9:.2f} "
            f"| {ms['dense']} | {ms['conv']} | {ms['floor']} "
            f"| {speedup:.2f} ({yes(speedup >= SPEEDUP_GOAL)}) "
            f"| {floor_ratio:.2f} ({yes(floor_ratio <= FLOOR_GOAL)}) "
            f"| {t.n_quiet(key['dense'], key['floor'])}/{len(t.times[key['dense']])} "
            f"| {result['errors'][case.name]:.1e} |")
    return lines, met


def breakdown_table(result: dict) -> list[str]:
    t: Timings = result["times"]
    lines = ["| case | dense step | forward+backward | SGD step alone | floor "
             "| energy W(u^2) fwd+bwd, one matrix (as the model) | energy as sums of rolls |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for case in result["cases"]:
        if f"{case.name}|fwd_bwd" not in t.times:
            continue
        cells = [f"{t.median(f'{case.name}|{v}') * 1e3:.1f}"
                 for v in ("dense", "fwd_bwd", "sgd", "floor", "energy_matrix", "energy_rolls")]
        lines.append(f"| {case.name} | " + " | ".join(cells) + " |")
    return lines


def data_table(result: dict) -> tuple[list[str], list[bool]]:
    t: Timings = result["times"]
    lines = ["| sequences/batch | generation seq/s | training seq/s (dense step) | generation/training |",
             "| ---: | ---: | ---: | ---: |"]
    met = []
    for b in result["batches"]:
        gen, step = f"generate|{b}", f"MNIST TVAE, {b} sequences|dense"
        ratio = t.ratio(step, gen)
        met.append(ratio >= GENERATION_GOAL)
        lines.append(f"| {b} | {b / t.median(gen):.0f} | {b / t.median(step):.0f} "
                     f"| {ratio:.1f} ({yes(ratio >= GENERATION_GOAL)}) |")
    return lines, met


def evaluation_table(result: dict) -> list[str]:
    t: Timings = result["times"]
    b = result["batches"][0]
    step = t.median(f"MNIST TVAE, {b} sequences|dense") / b
    lines = ["| part, full-size MNIST TVAE, per test sequence | ms | against a training step per sequence |",
             "| --- | ---: | ---: |"]
    parts = (("likelihood", "log-likelihood, 10 importance samples"),
             ("sequence_metrics", "equivariance error and ratio, roll prediction"))
    for part, title in parts:
        ms = t.median(f"eval|{part}") / b
        lines.append(f"| {title} | {ms * 1e3:.2f} | {ms / step:.2f}x |")
    total = sum(t.median(f"eval|{part}") for part, _ in parts) / b
    lines.append(f"| evaluation in all | {total * 1e3:.2f} | {total / step:.2f}x |")
    return lines


def report(result: dict, loads: tuple[str, str]) -> str:
    n_rounds = len(next(iter(result["times"].times.values())))
    steps, steps_met = step_table(result)
    rates, rates_met = data_table(result)
    return "\n".join([
        "## Core model: training step and data rate (`python -m benchmarks.bench_core`)",
        "",
        f"Machine: {machine_line()}. Load average (1, 5, 15 min) before: {loads[0]}; after: {loads[1]}.",
        f"{n_rounds} rounds, variants alternating within each round, each timing repeated to last at "
        f"least 0.2 s. A timing is quiet when other processes used less than {QUIET:.0%} of the CPUs "
        "meanwhile; times are medians over quiet rounds (over all rounds when fewer than 3 are "
        "quiet), the fastest round in brackets; ratios are medians of per-round ratios over the "
        "rounds where both timings are quiet.",
        "",
        "Training step (forward, backward, SGD with momentum), ms per step:",
        "",
        *steps,
        "",
        "Sequence generation (`data.sample_train`) against training at the same batch:",
        "",
        *rates,
        "",
        f"Evaluation cost, on batches of {result['batches'][0]} test sequences (a run evaluates its "
        "fixed test set after every `eval_every` epochs and after the last):",
        "",
        *evaluation_table(result),
        "",
        "Where the dense step's time goes, ms (medians, same rounds):",
        "",
        *breakdown_table(result),
        "",
        f"Goals: conv/dense >= {SPEEDUP_GOAL:g}, dense/floor <= {FLOOR_GOAL:g}, "
        f"generation/training >= {GENERATION_GOAL:g}. "
        f"All met: {yes(all(steps_met + rates_met))}.",
    ])


def load_average() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round, for a smoke check")
    parser.add_argument("--rounds", type=int, default=10,
                        help="quiet rounds wanted of every variant (default 10)")
    parser.add_argument("--max-minutes", type=float, default=20.0,
                        help="stop adding rounds after this long, quiet or not (default 20)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds, max_seconds = (1, 0.0) if args.quick else (args.rounds, 60 * args.max_minutes)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"until {rounds} quiet rounds or {max_seconds / 60:g} minutes")
    before = load_average()
    result = run(rounds, max_seconds, batches=(8, 32))
    text = report(result, (before, load_average()))
    publish("bench_core", text, not args.no_write)


if __name__ == "__main__":
    main()
