"""Fused members against single trials on the CPU.

    python -m benchmarks.bench_fused [--quick]

Times, side by side and in alternating rounds, for K = 1, 2, 4, 8 members of the full-size MNIST
TVAE at 8 sequences each (the paper's batch): one training step of K members as one model
(`TopographicVAE` of K members, as `Trainer` steps it), K single models (K = 1) stepped one after
another in the same process, and the fused step's matrix products alone (its floor: the same
batched products on the fused shapes). Each configuration's peak memory is measured in a fresh
child process. Prints a table and writes it into benchmarks/RESULTS.md.

The torch.func.vmap alternative the fused model was chosen over is no longer timed: the model's
layers make their weight gradient in a custom autograd Function, which vmap cannot batch.
"""
from __future__ import annotations

import argparse
import functools
import resource
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tvae_sweep import ModelConfig, TrainConfig, build_model
from tvae_sweep.graphed import GraphedStep
from tvae_sweep.model import TopographicVAE
from tvae_sweep.training import make_optimizer

from .bench_core import (
    LR,
    MNIST,
    MOMENTUM,
    Product,
    gemm_floor,
    load_average,
    load_data,
    products,
    products_step,
    train_step,
    yes,
)
from .common import QUIET, Timings, interleaved, machine_line, publish

BATCH = 8                # sequences per member per step, the paper's batch
FLOOR_GOAL = 1.25        # fused step, per member, at most this many times its floor
MEMORY_STEPS = 3         # steps a memory child takes before reading its peak


def fused_step(cfg: ModelConfig, k: int, device: torch.device | str = "cpu",
               graph: bool = False, update: bool = True) -> Callable[[torch.Tensor], torch.Tensor]:
    """x (K, B, S, C, H, W) -> the K members' losses, after forward, backward and the trainer's
    optimiser, as Trainer._step; each member starts from a single model's initialisation and
    draws its noise from its own generator (graphed: the default one, as Trainer's).
    update=False leaves out the optimiser's step (forward and backward only)."""
    device = torch.device(device)
    torch.manual_seed(0)
    model = TopographicVAE([cfg] * k)
    model.load_member_states([build_model(cfg).member_state(0) for _ in range(k)])
    model.to(device)
    optimizer = make_optimizer(model, TrainConfig(lr=LR, momentum=MOMENTUM, cuda_graph=graph), device)
    generators = [None] * k if graph else [torch.Generator(device).manual_seed(m) for m in range(k)]

    def step(x: torch.Tensor) -> torch.Tensor:
        losses = model.member_losses(x, generators)
        losses.sum().backward()
        if update:
            optimizer.step()
        return losses.detach()

    def zero_grad() -> None:
        optimizer.zero_grad(set_to_none=True)

    if graph:
        return GraphedStep(step, zero_grad)

    def eager(x: torch.Tensor) -> torch.Tensor:
        zero_grad()
        return step(x)

    return eager


# ---------------------------------------------------------------- the floor


@dataclass
class BatchedGemm:
    """One Product for K members, y[m] = x[m] @ w[m].T, forward and backward, as batched products
    on preallocated tensors (the fused model's FusedLinear and W layout)."""

    x: torch.Tensor       # (K, N, in)
    w: torch.Tensor       # (K, out, in)
    y: torch.Tensor       # (K, N, out)
    grad_y: torch.Tensor  # (K, N, out)
    grad_x: torch.Tensor | None
    grad_w: torch.Tensor | None

    @classmethod
    def make(cls, p: Product, k: int) -> BatchedGemm:
        r = torch.rand
        return cls(r(k, p.rows, p.d_in), r(k, p.d_out, p.d_in), torch.empty(k, p.rows, p.d_out),
                   r(k, p.rows, p.d_out), torch.empty(k, p.rows, p.d_in) if p.grad_input else None,
                   torch.empty(k, p.d_out, p.d_in) if p.grad_weight else None)

    def forward(self) -> None:
        torch.bmm(self.x, self.w.transpose(1, 2), out=self.y)

    def backward(self) -> None:
        if self.grad_x is not None:
            torch.bmm(self.grad_y, self.w, out=self.grad_x)
        if self.grad_w is not None:
            torch.bmm(self.grad_y.transpose(1, 2), self.x, out=self.grad_w)


def fused_floor(cfg: ModelConfig, n_images: int, k: int) -> Callable[[], None]:
    """The fused step's matrix products alone: each of the single step's products (bench_core's
    `products` at n_images per member) as one batched product over the K members."""
    return products_step([BatchedGemm.make(p, k) for p in products(cfg, n_images)])


# ---------------------------------------------------------------- peak memory, one child per case


def child(mode: str, k: int) -> None:
    """Builds `mode` ("fused": K fused members; "singles": K single models; "none": neither) for K
    members, steps it MEMORY_STEPS times on random images and prints the process's peak RSS in MB."""
    torch.manual_seed(0)
    x = (torch.rand(k, BATCH, MNIST.seq_len, *MNIST.image_shape) < 0.3).float()
    if mode == "fused":
        steps = [functools.partial(fused_step(MNIST, k), x)]
    elif mode == "singles":
        steps = [train_step(build_model(MNIST), x[m]) for m in range(k)]
    else:
        steps = []
    for _ in range(MEMORY_STEPS):
        for s in steps:
            s()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # KiB on Linux


def peak_mb(mode: str, k: int) -> float:
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_fused", "--child", mode, str(k)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


# ---------------------------------------------------------------- the run and the report


def run(ks: tuple[int, ...], quiet_rounds: int, max_seconds: float) -> dict:
    memory = {"none": peak_mb("none", 1)}
    for k in ks:
        memory[f"fused|{k}"], memory[f"singles|{k}"] = peak_mb("fused", k), peak_mb("singles", k)
    gen = torch.Generator().manual_seed(0)
    xs = load_data().sample_train(BATCH * max(ks), gen).x
    xs = xs.reshape(max(ks), BATCH, *xs.shape[1:])
    torch.manual_seed(0)
    singles = [train_step(build_model(MNIST), xs[m]) for m in range(max(ks))]
    n_images = BATCH * MNIST.seq_len
    fns: dict[str, Callable[[], object]] = {"single_floor": gemm_floor(MNIST, n_images)}
    for k in ks:
        x = xs[:k].contiguous()
        fns[f"fused|{k}"] = functools.partial(fused_step(MNIST, k), x)
        fns[f"backprop|{k}"] = functools.partial(fused_step(MNIST, k, update=False), x)
        fns[f"singles|{k}"] = lambda k=k: [s() for s in singles[:k]]
        fns[f"floor|{k}"] = fused_floor(MNIST, n_images, k)
    return {"ks": ks, "times": interleaved(fns, quiet_rounds, max_seconds), "memory": memory}


def table(result: dict) -> tuple[list[str], list[bool]]:
    t: Timings = result["times"]
    mem = result["memory"]
    lines = ["| K members | fused ms/step | K singles ms | fused seq/s (all members) | singles seq/s "
             "| fused/singles throughput | fused floor ms | K x single floor ms | fused/floor "
             "| forward+backward/floor | SGD update ms | peak MB fused | peak MB K singles | quiet rounds |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
             "| ---: |"]
    met = []
    for k in result["ks"]:
        fused, singles, floor = f"fused|{k}", f"singles|{k}", f"floor|{k}"
        ratio = t.ratio(fused, floor)
        met.append(ratio <= FLOOR_GOAL)
        ms = {n: f"{t.median(n) * 1e3:.0f} ({t.fastest(n) * 1e3:.0f})" for n in (fused, singles, floor)}
        lines.append(
            f"| {k} | {ms[fused]} | {ms[singles]} | {k * BATCH / t.median(fused):.0f} "
            f"| {k * BATCH / t.median(singles):.0f} | {t.ratio(singles, fused):.2f}x "
            f"| {ms[floor]} | {k * t.median('single_floor') * 1e3:.0f} "
            f"| {ratio:.2f} ({yes(ratio <= FLOOR_GOAL)}) | {t.ratio(f'backprop|{k}', floor):.2f} "
            f"| {(t.median(fused) - t.median(f'backprop|{k}')) * 1e3:.1f} | {mem[fused]:.0f} | {mem[singles]:.0f} "
            f"| {t.n_quiet(fused, singles, floor)}/{len(t.times[fused])} |")
    return lines, met


def report(result: dict, loads: tuple[str, str]) -> str:
    n_rounds = len(next(iter(result["times"].times.values())))
    lines, met = table(result)
    flops = sum(p.flops for p in products(MNIST, BATCH * MNIST.seq_len)) / 1e9
    return "\n".join([
        "## Fused members against single trials, CPU (`python -m benchmarks.bench_fused`)",
        "",
        f"Machine: {machine_line()}. Load average (1, 5, 15 min) before: {loads[0]}; after: {loads[1]}.",
        f"Full-size MNIST TVAE (`ModelConfig()`), {BATCH} sequences ({BATCH * MNIST.seq_len} images, "
        f"{flops:.2f} GFLOP of matrix products) per member per step, trainer's fused SGD. "
        f"{n_rounds} rounds, variants alternating within each round, each timing repeated to last at "
        f"least 0.2 s; medians over the rounds where other processes used less than {QUIET:.0%} of "
        "the CPUs (fastest round in brackets), ratios medians of per-round ratios.",
        "",
        *lines,
        "",
        "- **fused**: one step of K members as one `TopographicVAE` (batched products over the "
        "members), forward, backward and SGD, as `Trainer` steps it. **K singles**: K separate single "
        "models, each stepped once, one after another in this process (K single trials as separate "
        "processes would share the same cores; their summed rate is at best this one).",
        "- **fused floor**: the fused step's matrix products alone, each of the single step's "
        "products (`bench_core.products`) as one `torch.bmm` over the K members' own weights, on "
        "preallocated tensors. **K x single floor**: K times the single step's floor "
        "(`bench_core.gemm_floor`), for reference.",
        "- **forward+backward**: the fused step without the optimiser's step; **SGD update**: the "
        "fused step's median less its own, the time the update of the K members' weights takes.",
        f"- **peak MB**: `ru_maxrss` of a fresh child process that builds the case and takes "
        f"{MEMORY_STEPS} steps on random images; a child that only imports torch and makes the "
        f"images peaks at {result['memory']['none']:.0f} MB. K single trials as K processes would "
        "take K times the K = 1 singles figure.",
        "",
        f"Goal: fused step at most {FLOOR_GOAL:g}x its floor, per member, at {BATCH} sequences. "
        f"Met for every K: {yes(all(met))}.",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round, K up to 4, for a smoke check")
    parser.add_argument("--rounds", type=int, default=10, help="quiet rounds wanted (default 10)")
    parser.add_argument("--max-minutes", type=float, default=10.0,
                        help="stop adding rounds after this long, quiet or not (default 10)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "K"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return child(args.child[0], int(args.child[1]))
    ks = (1, 2, 4) if args.quick else (1, 2, 4, 8)
    rounds, max_seconds = (1, 0.0) if args.quick else (args.rounds, 60 * args.max_minutes)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; K in {ks}; "
          f"until {rounds} quiet rounds or {max_seconds / 60:g} minutes")
    before = load_average()
    text = report(run(ks, rounds, max_seconds), (before, load_average()))
    publish("bench_fused", text, not args.no_write)


if __name__ == "__main__":
    main()
