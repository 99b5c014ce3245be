"""GPU benchmark, for one short call on a machine with one NVIDIA GPU.

    python -m benchmarks.bench_gpu --out gpu.json      (prints a markdown table too)

Measures, on the GPU it finds:
- the GPU's matrix-product ceiling (8192^3 products in FP32, TF32 and BF16);
- a training step of the full-size MNIST TVAE (18x18 capsules, seq 18, window 13, K=3) at 8 and 32
  sequences, with the FLOP/s it reaches;
- 1, 2, 4 and 8 trials sharing the GPU, each its own process training the same model, as
  fractional-GPU trials do under Ray (a fraction is a label: the trials share one device), and
  their summed throughput;
- the time of one full-MNIST epoch of the paper's model (60,000 sequences of 8 per step, then the
  10-sample log-likelihood and equivariance metrics on 10,000 test sequences), from measured rates.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import statistics
import time

import torch

from tvae_sweep import ModelConfig
from tvae_sweep.config import DataConfig, RunConfig, TrainConfig
from tvae_sweep.training import Trainer

FULL_MNIST_TRAIN, FULL_MNIST_TEST = 60_000, 10_000


def sync_time(fn, repeats: int) -> float:
    """Median seconds of fn() over `repeats` runs, each synchronised."""
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_ceiling() -> dict:
    n = 8192
    out = {}
    for name, dtype, tf32 in (("fp32", torch.float32, False), ("tf32", torch.float32, True),
                              ("bf16", torch.bfloat16, False)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a = torch.randn(n, n, device="cuda", dtype=dtype)
        b = torch.randn(n, n, device="cuda", dtype=dtype)
        sync_time(lambda: a @ b, 3)
        out[f"gemm_{name}_tflops"] = 2 * n**3 / sync_time(lambda: a @ b, 10) / 1e12
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
    draw = lambda: trainer.data.sample_train(batch, trainer.generator)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu.json")
    parser.add_argument("--share-seconds", type=float, default=15.0)
    args = parser.parse_args()
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
