"""Evaluating a run: its metrics on its fixed test sequences, and when an epoch is evaluated.

Each evaluation has its own seeded randomness, so the training RNG is untouched and a resumed run
measures what an uninterrupted one measures.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch

from .config import RunConfig, TrainConfig
from .data import SequenceData
from .metrics import (
    active_units,
    capsule_correlation,
    equivariance_error,
    equivariance_ratio,
    learned,
    mean_controls,
    mean_image_nll,
    preferred_classes,
    roll_gain,
    roll_prediction,
    scopes,
    topographic_agreement,
)
from .model import TopographicVAE
from .model.tvae import gaussian_kl
from .seeding import fixed_rng


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
    means: dict[str, list[torch.Tensor]] = {"z": [], "u": []}  # sequence runs: the posterior means, for the controls

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
                add("roll_gain_reversed", roll_gain(model.decode, model.bernoulli_nll, tt, x, -shift).sum())
                means["z"].append(q.z_mean)
                if q.u_mean is not None:
                    means["u"].append(q.u_mean)
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
        # the same frame shuffles as equivariance_ratio's (t.seed + 3); the input-free draw its own seed
        out.update(mean_controls(model.latent, torch.cat(means["z"]), torch.cat(means["u"]) if means["u"] else None,
                                 shift, t.seed + 3, t.seed + 4))
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
