"""What train.precision does to the model: the same fused seeds trained in each precision.

    python -m benchmarks.bench_precision [--epochs 5] [--device cpu|cuda] [--no-write]

Trains the paper's Table 1 TVAE (L = 13/36; the cpu profile's data and optimiser) under seeds
0, 1, 2 as one fused model, once per precision (fp32, bf16 autocast, and tf32 on CUDA), and
compares the final importance-sampled log-likelihood (evaluated in fp32 in every case) seed by
seed with fp32's, beside the same models untrained and the test set's mean image. Writes a table
into benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from tvae_sweep.config import run_config_from_dict
from tvae_sweep.training import Trainer, with_seed

from .common import machine_line, publish

SEEDS = (0, 1, 2)
METRICS = ("log_likelihood", "mean_image_nll", "train_loss", "kl_z", "equivariance_ratio_learned")


def config(precision: str, epochs: int, device: str):
    return run_config_from_dict({
        "data": {"dataset": "mnist5k", "transforms": ["rotation", "hue", "scale"],
                 "train_sequences": 256, "test_sequences": 128},
        "model": {"variant": "tvae", "coherence_window": 13, "shift": 1, "mu_init": 30.0},
        "train": {"epochs": epochs, "batch_size": 8, "optimizer": "adam", "lr": 1e-3, "ll_samples": 10,
                  "eval_every": epochs, "device": device, "precision": precision},
    })


def train(precision: str, epochs: int, device: str) -> dict:
    trainer = Trainer([with_seed(config(precision, epochs, device), s) for s in SEEDS])
    # the baseline: the same models untrained (evaluation has its own seeded randomness)
    untrained = [trainer.evaluate(m)["log_likelihood"] for m in range(len(SEEDS))]
    started = time.perf_counter()
    list(trainer.epochs())
    seconds = time.perf_counter() - started
    finals = [h[-1] for h in trainer.histories]
    return {"finals": finals, "untrained": untrained, "s_per_epoch": seconds / epochs, "errors": trainer.errors}


def table(results: dict[str, dict]) -> list[str]:
    base = results["fp32"]["finals"]
    lines = ["| precision | log-likelihood, mean ± std over seeds | minus fp32's, seed by seed (mean ± std) | "
             "untrained model's | mean image's (-NLL) | train loss | kl_z | ratio learned | "
             "s per epoch (3 members, with evaluation) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        if any(r["errors"]):
            lines.append(f"| {name} | failed: {'; '.join(e for e in r['errors'] if e)} | | | | | | | |")
            continue
        ll = [f["log_likelihood"] for f in r["finals"]]
        diff = [a["log_likelihood"] - b["log_likelihood"] for a, b in zip(r["finals"], base, strict=True)]
        mean = {m: statistics.fmean(f[m] for f in r["finals"]) for m in METRICS}
        lines.append(f"| {name} | {statistics.fmean(ll):.2f} ± {statistics.stdev(ll):.2f} | "
                     f"{statistics.fmean(diff):+.2f} ± {statistics.stdev(diff):.2f} | "
                     f"{statistics.fmean(r['untrained']):.2f} | {-mean['mean_image_nll']:.2f} | "
                     f"{mean['train_loss']:.2f} | "
                     f"{mean['kl_z']:.3f} | {mean['equivariance_ratio_learned']:+.4f} | {r['s_per_epoch']:.1f} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    precisions = ["fp32", "bf16"] + (["tf32"] if args.device == "cuda" else [])
    results = {p: train(p, args.epochs, args.device) for p in precisions}
    body = "\n".join([
        f"## train.precision: its effect on the model (`python -m benchmarks.bench_precision --device {args.device}`)",
        "",
        f"Machine: {machine_line()}, device {args.device}. The paper's Table 1 TVAE (L = 13/36) on the embedded "
        f"digits (256 sequences an epoch, 128 test sequences), Adam at 1e-3, batch 8, {args.epochs} epochs, seeds "
        f"{', '.join(map(str, SEEDS))} fused; the same seeds give the same initialisation, batches and noise in "
        "every precision. Evaluation (the log-likelihood with 10 importance samples) is in fp32 throughout. "
        "Baselines: the same models untrained, and the test set's mean image as a Bernoulli model (its "
        "negative NLL per image), averaged over the seeds' test sets.",
        "",
        *table(results),
    ])
    publish(f"bench_precision_{args.device}", body, not args.no_write)


if __name__ == "__main__":
    main()
