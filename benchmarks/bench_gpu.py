"""GPU benchmark, for one short call on a machine with one NVIDIA GPU.

    python -m benchmarks.bench_gpu --out gpu.json      (prints a markdown table too)
    python -m benchmarks.bench_gpu --fused             (fused members; PyTorch only, no Ray or MLflow)
    python -m benchmarks.bench_gpu --fused --device cpu --quick --out /tmp/f.json   (tiny, a smoke check)

Measures, on the GPU it finds:
- the GPU's matrix-product ceiling (8192^3 products in FP32, TF32 and BF16);
- a training step of the full-size MNIST TVAE (18x18 capsules, seq 18, window 13, K=3) at 8 and 32
  sequences, with the FLOP/s it reaches;
- 1, 2, 4 and 8 trials sharing the GPU, each its own process training the same model, as
  fractional-GPU trials do under Ray (a fraction is a label: the trials share one device), and
  their summed throughput;
- the time of one full-MNIST epoch of the paper's model (60,000 sequences of 8 per step, then the
  10-sample log-likelihood and equivariance metrics on 10,000 test sequences), from measured rates.

With --fused, instead: K = 1, 3, 6, 15 members of the paper's Table 1 TVAE (ModelConfig(), 8
sequences per member) as one model's step (TopographicVAE of K members), eager and CUDA-graphed,
FP32 and TF32, in summed sequences/s and as a fraction of the matrix-product ceiling of the same
precision measured in the same run; then, for each K in its fastest mode, Trainer's epochs (the
members' batch generation included); and the GPU-hours of the full Table 1 (18 members x 100 epochs
x 60,000 sequences) at the best rate of each. Writes benchmarks/records/fused_<gpu>.json (or --out) and prints a table.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing as mp
import re
import statistics
import time
from pathlib import Path

import torch

from tvae_sweep import DataConfig, ModelConfig, RunConfig, TrainConfig
from tvae_sweep.training import Trainer

from .bench_core import step_flops as all_products_flops
from .bench_fused import fused_step

FULL_MNIST_TRAIN, FULL_MNIST_TEST = 60_000, 10_000
TABLE1_SEQUENCES = 18 * 100 * FULL_MNIST_TRAIN  # Table 1: 18 members, 100 epochs of 60,000 sequences
FUSED_KS = (1, 3, 6, 15)
RECORDS = Path(__file__).with_name("records")


def sync_time(fn, repeats: int, device: str = "cuda") -> float:
    """Median seconds of fn() over `repeats` runs, each synchronised."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_ceiling(n: int = 8192, device: str = "cuda", kinds: tuple[str, ...] = ("fp32", "tf32", "bf16")) -> dict:
    out = {}
    for name in kinds:
        dtype = torch.bfloat16 if name == "bf16" else torch.float32
        torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        product = functools.partial(torch.matmul, a, b)
        sync_time(product, 3, device)
        out[f"gemm_{name}_tflops"] = 2 * n**3 / sync_time(product, 10, device) / 1e12
    torch.backends.cuda.matmul.allow_tf32 = False
    return out


def step_flops(cfg: ModelConfig, images: int) -> float:
    """Matrix-product FLOPs of one training step: forward 2*in*out per layer, backward twice that."""
    d, pixels = cfg.latent_dim, math.prod(cfg.image_shape)
    encoder = pixels * 3 * d + 3 * d * 2 * d + 2 * d * 2 * d
    decoder = d * 2 * d + 2 * d * 3 * d + 3 * d * pixels
    per_image = 2 * (2 * encoder + decoder)  # two encoders (z, u) and the decoder
    return 3 * per_image * images


def run_config(batch: int, cuda_graph: bool = False) -> RunConfig:
    return RunConfig(data=DataConfig(train_sequences=batch * 20, test_sequences=256), model=ModelConfig(),
                     train=TrainConfig(batch_size=batch, device="cuda", optimizer="sgd", cuda_graph=cuda_graph))


def step_time(batch: int, tf32: bool, cuda_graph: bool = False) -> dict:
    torch.backends.cuda.matmul.allow_tf32 = tf32
    trainer = Trainer(run_config(batch, cuda_graph))
    trainer.train_epoch()  # warm-up
    steps = trainer.steps_per_epoch
    seconds = sync_time(trainer.train_epoch, 3) / steps
    torch.backends.cuda.matmul.allow_tf32 = False
    flops = step_flops(trainer.cfg.model, batch * trainer.cfg.model.seq_len)
    tag = f"b{batch}_{'tf32' if tf32 else 'fp32'}" + ("_graph" if cuda_graph else "")
    return {f"step_ms_{tag}": seconds * 1e3, f"step_tflops_{tag}": flops / seconds / 1e12,
            f"sequences_per_s_{tag}": batch / seconds}


def sample_time(batch: int) -> dict:
    """Milliseconds to generate one training batch of sequences on the GPU (part of every step)."""
    trainer = Trainer(run_config(batch))
    draw = functools.partial(trainer.data[0].sample_train, batch, trainer.batches[0])
    draw()
    return {f"sample_ms_b{batch}": sync_time(draw, 20) * 1e3}


def eval_time_per_sequence() -> float:
    trainer = Trainer(run_config(8))
    trainer.evaluate()  # warm-up, renders the test set
    return sync_time(trainer.evaluate, 3) / trainer.cfg.data.test_sequences


def _trial_worker(seconds: float, start, queue, cuda_graph: bool = False) -> None:
    trainer = Trainer(run_config(8, cuda_graph))
    trainer.train_epoch()  # warm-up
    start.wait()
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        trainer.train_epoch()
        done += trainer.cfg.data.train_sequences
    torch.cuda.synchronize()
    queue.put(done / (time.perf_counter() - began))


def shared_gpu(n_trials: int, seconds: float, cuda_graph: bool = False) -> float:
    """Summed sequences/s of n trials training at once on the one GPU."""
    ctx = mp.get_context("spawn")
    start, queue = ctx.Barrier(n_trials + 1), ctx.Queue()
    procs = [ctx.Process(target=_trial_worker, args=(seconds, start, queue, cuda_graph)) for _ in range(n_trials)]
    for p in procs:
        p.start()
    start.wait()
    rates = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(rates)


# ---------------------------------------------------------------- fused members (--fused)

TINY = ModelConfig(n_caps=3, cap_dim=6, seq_len=6, coherence_window=3, n_off_diag=1, shift=1)


def set_tf32(on: bool) -> None:
    torch.set_float32_matmul_precision("high" if on else "highest")
    torch.backends.cuda.matmul.allow_tf32 = on


def fused_step_rate(cfg: ModelConfig, k: int, batch: int, device: str, graph: bool, steps: int) -> float:
    """Summed sequences/s of K fused members' training steps on one fixed batch of random images."""
    step = fused_step(cfg, k, device, graph)
    x = (torch.rand(k, batch, cfg.seq_len, *cfg.image_shape, device=device) < 0.3).float()
    for _ in range(5):  # graphed: three eager warm-up steps, the capture, a replay
        step(x)
    return k * batch * steps / sync_time(lambda: [step(x) for _ in range(steps)], 3, device)


def fused_trainer_rate(cfg: ModelConfig, k: int, batch: int, device: str, graph: bool, steps: int) -> float:
    """Summed sequences/s of Trainer's epochs of K members, `steps` steps: the members' batches drawn too."""
    data = DataConfig(train_sequences=batch * steps, test_sequences=batch)
    train = dict(batch_size=batch, device=torch.device(device).type, optimizer="sgd", cuda_graph=graph)
    trainer = Trainer([RunConfig(data=data, model=cfg, train=TrainConfig(seed=m, **train)) for m in range(k)])
    trainer.train_epoch()  # warm-up (and the graph's capture)
    return k * batch * steps / sync_time(trainer.train_epoch, 3, device)


def attempt(res: dict, key: str, rate) -> float:
    """rate() into res[key]; an error goes under key + "_error" instead (0.0), so that one failing
    mode leaves the others' numbers."""
    try:
        res[key] = rate()
    except Exception as e:  # noqa: BLE001
        res[key], res[f"{key}_error"] = 0.0, f"{type(e).__name__}: {e}"
        print(f"{key}: {res[key + '_error']}")
    return res[key]


def fused_mode(device: str, quick: bool) -> tuple[dict, list[str]]:
    cfg, batch, ks, steps, n = (TINY, 4, (1, 3), 4, 512) if quick else (ModelConfig(), 8, FUSED_KS, 50, 8192)
    cuda = torch.device(device).type == "cuda"
    res = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
           "model": cfg.model_dump(mode="json"), "batch": batch, "steps_per_timing": steps}
    res.update(gemm_ceiling(n, device, ("fp32", "tf32")))
    flops = all_products_flops(cfg, batch * cfg.seq_len)  # every product of the step, W's included
    rows = ["| K | precision | mode | sequences/s (all members) | TFLOP/s | of the ceiling |",
            "| ---: | --- | --- | ---: | ---: | ---: |"]
    best: dict[int, tuple[float, str, bool]] = {}
    for precision in ("fp32", "tf32"):
        set_tf32(precision == "tf32")
        for graph in (False, True) if cuda else (False,):
            mode = "graph" if graph else "eager"
            for k in ks:
                key = f"fused_k{k}_{precision}_{mode}_sequences_per_s"
                rate = attempt(res, key, functools.partial(fused_step_rate, cfg, k, batch, device, graph, steps))
                tflops = rate / batch * flops / 1e12
                share = tflops / res[f"gemm_{precision}_tflops"]
                res[f"fused_k{k}_{precision}_{mode}_ceiling_fraction"] = share
                rows.append(f"| {k} | {precision} | {mode} | {rate:,.0f} | {tflops:.2f} | {share:.1%} |")
                if rate > best.get(k, (0.0,))[0]:
                    best[k] = (rate, precision, graph)
    for k, (_, precision, graph) in best.items():
        set_tf32(precision == "tf32")
        rate = attempt(res, f"fused_k{k}_trainer_sequences_per_s",
                       functools.partial(fused_trainer_rate, cfg, k, batch, device, graph, steps))
        rows.append(f"| {k} | {precision} | {'graph' if graph else 'eager'}, Trainer epochs "
                    f"(batch generation included) | {rate:,.0f} | | |")
    set_tf32(False)
    steps_key = max((key for key in res if re.fullmatch(r"fused_k\d+_\w+_(eager|graph)_sequences_per_s", key)),
                    key=res.get)
    trainer_key = max((key for key in res if key.endswith("_trainer_sequences_per_s")), key=res.get)
    rows.append("")
    for name, key in (("step", steps_key), ("trainer", trainer_key)):
        hours = res[f"table1_gpu_hours_{name}"] = TABLE1_SEQUENCES / res[key] / 3600 if res[key] else math.nan
        rows.append(f"Table 1 (18 members x 100 epochs x 60,000 sequences, training only) at the best "
                    f"{name} rate ({key}, {res[key]:,.0f} sequences/s): {hours:.2f} GPU-hours")
    return res, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None,
                        help="JSON record (default gpu.json; with --fused benchmarks/records/fused_<device>.json)")
    parser.add_argument("--share-seconds", type=float, default=15.0)
    parser.add_argument("--fused", action="store_true", help="fused members only (see above)")
    parser.add_argument("--device", default="cuda", help="with --fused: cuda (default) or cpu")
    parser.add_argument("--quick", action="store_true", help="with --fused: a tiny model, K = 1 and 3")
    args = parser.parse_args()
    if args.fused:
        if args.device == "cuda":
            assert torch.cuda.is_available(), "this benchmark needs a CUDA device (or --device cpu)"
        res, rows = fused_mode(args.device, args.quick)
        out = args.out or RECORDS / f"fused_{re.sub('[^a-z0-9]+', '_', res['device'].lower()).strip('_')}.json"
        with open(out, "w") as f:
            json.dump(res, f, indent=1)
        print("\n".join(rows))
        print(f"written to {out}")
        return
    args.out = args.out or "gpu.json"
    assert torch.cuda.is_available(), "this benchmark needs a CUDA device"
    res = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    res.update(gemm_ceiling())
    for batch in (8, 32):
        for tf32 in (False, True):
            res.update(step_time(batch, tf32))
        res.update(step_time(batch, False, cuda_graph=True))
        res.update(sample_time(batch))
    res["eval_s_per_test_sequence"] = eval_time_per_sequence()
    res["full_mnist_epoch_s"] = (FULL_MNIST_TRAIN / 8 * res["step_ms_b8_fp32"] / 1e3
                                 + FULL_MNIST_TEST * res["eval_s_per_test_sequence"])
    for n in (1, 2, 4, 8):
        res[f"shared_{n}_sequences_per_s"] = shared_gpu(n, args.share_seconds)
    for n in (1, 4):
        res[f"shared_{n}_graph_sequences_per_s"] = shared_gpu(n, args.share_seconds, cuda_graph=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    for key, value in res.items():
        print(f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |")


if __name__ == "__main__":
    main()
