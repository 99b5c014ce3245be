"""Metrics of TVAE-SPEC section 3, and the registry of every metric a run reports.

Latents t have shape (B, S, C, D): sequences, frames, capsules, capsule positions. "Rolling" a
capsule by r moves element d to d + r (torch.roll's direction).
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Metric:
    """A metric a run reports: its name, the direction in which it is better, and who reports it.

    scope: "all" (every run), "latent_u" (models with a u: tvae, tvae2d), "sequence" (transforming
    sequences: seq_len > 1 and transforms), "sequence_u" (sequence runs of models with a u) or "map"
    (static models whose latent is a square grid).
    at_init: also measured once on the model at initialisation (TVAE-SPEC 3.1), reported as
    `<name>_init`, and what training added as `<name>_learned` (trained minus init, better in the
    same direction as the metric itself).
    """

    name: str
    mode: str
    scope: str = "all"
    at_init: bool = False


REGISTRY: tuple[Metric, ...] = (
    Metric("loss", "min"),
    Metric("train_loss", "min"),
    Metric("log_likelihood", "max"),
    Metric("log_likelihood_per_frame", "max"),  # the authors' code's estimator (see model.log_likelihoods)
    Metric("mean_image_nll", "min"),
    Metric("kl_z", "max"),  # latent use: more nats carried by z
    Metric("kl_u", "max", scope="latent_u"),
    Metric("active_units_z", "max"),
    Metric("active_units_u", "max", scope="latent_u"),
    Metric("equivariance_error", "min", scope="sequence", at_init=True),
    Metric("equivariance_ratio", "min", scope="sequence", at_init=True),
    # controls (TVAE-SPEC 3.2): the posterior means, no sampling; then u's means taken from random test frames
    Metric("equivariance_error_at_mean", "min", scope="sequence", at_init=True),
    Metric("equivariance_ratio_at_mean", "min", scope="sequence", at_init=True),
    Metric("equivariance_ratio_input_free", "min", scope="sequence_u", at_init=True),
    Metric("roll_nll", "min", scope="sequence"),
    Metric("roll_nll_gap", "min", scope="sequence", at_init=True),
    Metric("roll_gain", "max", scope="sequence", at_init=True),
    Metric("roll_gain_reversed", "max", scope="sequence", at_init=True),  # the control: rolled the other way
    Metric("capsule_correlation", "max", scope="sequence", at_init=True),  # and capsule_correlation_<factor>
    Metric("topographic_agreement", "max", scope="map", at_init=True),
    Metric("topographic_agreement_chance", "max", scope="map", at_init=True),  # the baseline of both
)
METRICS = {m.name: m for m in REGISTRY}
PER_FACTOR = "capsule_correlation"  # the metric reported per varying factor too: <PER_FACTOR>_<factor>
INIT, LEARNED = "_init", "_learned"  # <m>_init: at initialisation; <m>_learned: the final value minus it
DERIVED = (INIT, LEARNED)
# what a sweep's summaries show beside its objectives (the best trials' lines, the metrics-by-axis
# figure): the likelihood and z's use, the equivariance ratio beside its value at initialisation and
# its input-free control, roll gain beside the reversed roll, the paper's capsule correlation and the
# 2-D map's neighbour agreement beside its chance
SUMMARY = ("log_likelihood", "kl_z", "equivariance_ratio", "equivariance_ratio" + INIT,
           "equivariance_ratio_input_free", "roll_gain", "roll_gain_reversed", "capsule_correlation",
           "topographic_agreement", "topographic_agreement_chance")


STD = "_std"  # a replicated trial's standard deviation over its seeds: <m>_std
SEED = re.compile(r"_seed\d+$")  # and each seed's value: <m>_seed<s>


def base_metric(name: str) -> Metric | None:
    """The registered metric a reported name stands for (`<m>_init`, `<m>_learned`, the
    per-factor capsule correlations and a replicated trial's `<m>_std` and `<m>_seed<s>`
    included), or None for a name that is no metric."""
    if SEED.search(name) or name.endswith(STD):
        return base_metric(SEED.sub("", name).removesuffix(STD))
    for suffix in DERIVED:
        if name.endswith(suffix) and (m := base_metric(name.removesuffix(suffix))) is not None and m.at_init:
            return m
    if name in METRICS:
        return METRICS[name]
    if name.startswith(PER_FACTOR + "_"):
        return METRICS[PER_FACTOR]
    return None


def is_metric(name: str) -> bool:
    return base_metric(name) is not None


def metric_mode(name: str) -> str:
    """'min' or 'max': the direction in which a reported metric is better (a spread over seeds:
    smaller)."""
    m = base_metric(name)
    if m is None:
        raise KeyError(f"{name!r} is not a metric; metrics: {', '.join(METRICS)}")
    return "min" if name.endswith(STD) else m.mode


def as_losses(values, modes) -> np.ndarray:
    """Objective values (rows of one value per objective) with every objective as a loss: a
    maximised one negated. Its own inverse: the losses of losses are the values."""
    signs = np.array([-1.0 if mode == "max" else 1.0 for mode in modes])
    return np.asarray(values, dtype=float).reshape(-1, len(signs)) * signs


def metric_order(name: str) -> tuple:
    """A sort key: registry order; each metric before its per-factor values; a name, its _init and
    its _learned together."""
    m = base_metric(name)
    if m is None:
        return (len(REGISTRY), False, name, 0)
    plain, suffix = name, 0
    for i, s in enumerate(DERIVED, start=1):
        if m.at_init and name.endswith(s):
            plain, suffix = name.removesuffix(s), i
    return (REGISTRY.index(m), plain != m.name, plain, suffix)


def test_factors(run) -> list[str]:
    """The factors a run's test sequences vary (its data's test_transforms, else its transforms)."""
    d = run.data
    return list(d.transforms if d.test_transforms is None else d.test_transforms)


def scopes(run) -> set[str]:
    """Which of the registry's scopes a run (a RunConfig) reports: see Metric."""
    sequences = run.model.seq_len > 1 and bool(test_factors(run))
    square_map = not sequences and has_map(run.model.n_caps, run.model.cap_dim, run.model.seq_len)
    with_u = run.model.variant != "vae"
    return {"all", *(("latent_u",) if with_u else ()), *(("sequence",) if sequences else ()),
            *(("sequence_u",) if sequences and with_u else ()), *(("map",) if square_map else ())}


def reported_metrics(run) -> list[str]:
    """Every metric name a run of `run` (a RunConfig) reports at its evaluated epochs."""
    reported = scopes(run)
    factors = test_factors(run) if "sequence" in reported else []
    names = []
    for m in REGISTRY:
        if m.scope not in reported:
            continue
        group = [m.name] + ([f"{m.name}_{f}" for f in factors] if m.name == PER_FACTOR else [])
        for name in group:
            names.append(name)
            if m.at_init:
                names += [name + INIT, name + LEARNED]
    return names


def best_of(values, metric: str) -> float:
    """The best of a metric's values, in the metric's direction; NaN when none is a number."""
    present = [v for v in values if v == v]  # NaN is not equal to itself
    if not present:
        return float("nan")
    return max(present) if metric_mode(metric) == "max" else min(present)


def learned(metrics: dict[str, float], init: dict[str, float]) -> dict[str, float]:
    """`<m>_init` and `<m>_learned` (trained minus initialisation) for every init metric measured."""
    out = {}
    for name, value in init.items():
        out[name + INIT] = value
        if name in metrics:
            out[name + LEARNED] = metrics[name] - value
    return out


def over_seeds(by_seed: dict[int, dict]) -> dict:
    """One report of a replicated trial's epoch from its seeds' reports: each metric's mean under
    its own name, `<m>_std` (the sample standard deviation; 0 for one seed) and `<m>_seed<s>`;
    other values (epoch, timings) from the first seed."""
    first = next(iter(by_seed.values()))
    out = dict(first)
    for name in first:
        values = {s: m[name] for s, m in by_seed.items() if name in m}
        if not is_metric(name) or len(values) < len(by_seed):
            continue
        mean = math.fsum(values.values()) / len(values)
        spread = math.fsum((v - mean) ** 2 for v in values.values()) / max(len(values) - 1, 1)
        out[name], out[name + STD] = mean, math.sqrt(spread)
        out.update({f"{name}_seed{s}": v for s, v in values.items()})
    return out


def init_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics of an evaluation that are also kept for the model at initialisation."""
    return {k: v for k, v in metrics.items()
            if (m := base_metric(k)) is not None and m.at_init and not k.endswith(DERIVED)}


# ---------------------------------------------------------------- equivariance


def normalise_capsules(t: torch.Tensor) -> torch.Tensor:
    """Each capsule of each frame scaled to unit L2 norm."""
    return F.normalize(t, p=2, dim=-1)


def equivariance_error(t: torch.Tensor, shift: int = 1) -> torch.Tensor:
    """E_eq per sequence, (B,): the pairwise form, right for any cap_dim and seq_len.

    E_eq = sum_{l < m} sum_c || roll(t_hat_l, s*(m - l)) - t_hat_m ||_1
    """
    t_hat = normalise_capsules(t)
    s = t.shape[1]
    err = t.new_zeros(t.shape[0])
    for gap in range(1, s):  # all pairs (l, l + gap) at once
        rolled = torch.roll(t_hat[:, : s - gap], shifts=shift * gap, dims=-1)
        err = err + (rolled - t_hat[:, gap:]).abs().sum(dim=(1, 2, 3))
    return err


def permute_frames(t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each sequence's frames in an independent random order."""
    b, s = t.shape[:2]
    order = torch.rand(b, s, generator=generator, device=generator.device if generator else t.device).argsort(dim=1)
    order = order.to(t.device)
    return torch.gather(t, 1, order.view(b, s, 1, 1).expand_as(t))


def equivariance_ratio(t: torch.Tensor, shift: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean E_eq over mean E_eq of the same latents with frames permuted (scalar).

    About 1 for a code that ignores the transformation, near 0 for one that rolls with it.
    """
    shuffled = permute_frames(t, generator)
    return equivariance_error(t, shift).mean() / equivariance_error(shuffled, shift).mean().clamp_min(1e-12)


def input_free(u: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """u (N, S, C, D) with every frame's value replaced by that of a frame drawn at random from the
    whole set: one permutation of all N*S frames, from `generator` (a CPU generator)."""
    order = torch.randperm(u.shape[0] * u.shape[1], generator=generator).to(u.device)
    return u.flatten(0, 1)[order].view_as(u)


@torch.no_grad()
def mean_controls(latent: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor], z_mean: torch.Tensor,
                  u_mean: torch.Tensor | None, shift: int, shuffle_seed: int, draw_seed: int) -> dict[str, float]:
    """The controls of TVAE-SPEC 3.2 from a test set's posterior means z_mean, u_mean (N, S, C, D;
    u_mean None for the VAE), with latent(z, u) the model's t:

    equivariance_error_at_mean and equivariance_ratio_at_mean: of t built from the means (no
    sampling); equivariance_ratio_input_free (models with u): of t built from z's means and, for
    every frame, the u mean of a random test frame (input_free, drawn with draw_seed): what W's
    structure gives with the model's own u but nothing of the input. Both ratios shuffle the frames
    with the same shuffle_seed, so a code that ignores its input scores the two alike exactly.
    """

    def shuffles() -> torch.Generator:
        return torch.Generator(z_mean.device).manual_seed(shuffle_seed)

    at_mean = latent(z_mean, u_mean)
    out = {"equivariance_error_at_mean": float(equivariance_error(at_mean, shift).mean()),
           "equivariance_ratio_at_mean": float(equivariance_ratio(at_mean, shift, shuffles()))}
    if u_mean is not None:
        free = latent(z_mean, input_free(u_mean, torch.Generator().manual_seed(draw_seed)))
        out["equivariance_ratio_input_free"] = float(equivariance_ratio(free, shift, shuffles()))
    return out


def capsule_roll(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The roll r in [0, D) that best maps capsule a onto b, per capsule: argmax_r sum_d a[d] b[d + r].

    a, b: (..., D); the circular cross-correlation is computed with the FFT.
    """
    d = a.shape[-1]
    corr = torch.fft.irfft(torch.fft.rfft(a, dim=-1).conj() * torch.fft.rfft(b, dim=-1), n=d, dim=-1)
    return corr.argmax(dim=-1)


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson's r; 0 where either side is constant (torch.corrcoef gives NaN there)."""
    r = torch.corrcoef(torch.stack([x.double(), y.double()]))[0, 1]
    return float(r) if torch.isfinite(r) else 0.0


def capsule_offsets(t: torch.Tensor, canonical: torch.Tensor) -> torch.Tensor:
    """Estimated capsule roll from frame 0 to each sequence's canonical frame, (B,).

    The roll is estimated per capsule and the mode over capsules is taken.
    """
    idx = torch.arange(t.shape[0], device=t.device)
    first, target = t[:, 0], t[idx, canonical]  # (B, C, D)
    return capsule_roll(first, target).mode(dim=-1).values


def capsule_correlation(t: torch.Tensor, factor: torch.Tensor, start: torch.Tensor,
                        periods: list[int], factor_names: list[str]) -> dict[str, float]:
    """Pearson correlation of the estimated capsule roll with the true offset, per varying factor.

    For a sequence whose factor starts at index `start` of a cycle of `period` values, the canonical
    frame (factor at index 0) is c = (-start) mod period frames after frame 0; a code that rolls one
    position per frame moves by c there. Frames beyond the sequence are skipped. Returns
    {"capsule_correlation": mean over factors, "capsule_correlation_<name>": per factor}.
    """
    out: dict[str, float] = {}
    seq_len = t.shape[1]
    for i, name in enumerate(factor_names):
        period = periods[i]
        sel = (factor == i) & (((-start) % period) < seq_len)
        if int(sel.sum()) < 2:
            continue
        canonical = (-start[sel]) % period
        estimate = capsule_offsets(t[sel], canonical)
        out[f"capsule_correlation_{name}"] = pearson(estimate.float(), canonical.float())
    values = list(out.values())
    if values:
        out["capsule_correlation"] = sum(values) / len(values)
    return out


@torch.no_grad()
def roll_prediction(model, x: torch.Tensor, t: torch.Tensor, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence NLL (nats per image) of frames predicted by rolling frame 0's capsules, and of
    each frame's own reconstruction, over frames 1..S-1: ((B,), (B,)).

    t is the model's latent of x. Frame m is predicted by decoding roll(t_0, shift * m): the
    commutative diagram of the paper's Figure 1, measured in nats.
    """
    s = t.shape[1]
    predicted = torch.stack([torch.roll(t[:, 0], shift * m, dims=-1) for m in range(s)], dim=1)
    roll_nll = model.bernoulli_nll(model.decode(predicted), x)[:, 1:].mean(dim=1)
    self_nll = model.bernoulli_nll(model.decode(t), x)[:, 1:].mean(dim=1)
    return roll_nll, self_nll


@torch.no_grad()
def roll_gain(decode: Callable[[torch.Tensor], torch.Tensor], nll: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
              t: torch.Tensor, x: torch.Tensor, shift: int) -> torch.Tensor:
    """Per sequence (B,): the mean over frame pairs l < m of NLL(copy) - NLL(roll), nats per image.

    roll: decode(roll(t_l, shift * (m - l))) against the true frame m (the commutative diagram of
    Figure 1); copy: decode(t_l), frame l repeated, against frame m (its trivial explanation).
    Positive when rolling the capsules predicts the transformed frame better than repeating the
    frame; 0 for a decoder that ignores its latent. nll(logits, x) gives (B, S') per image. With
    -shift, the roll turned the other way: roll_gain_reversed, the control for W's symmetry.
    """
    s = t.shape[1]
    copies = decode(t)  # (B, S, C, H, W): each frame's own decode, compared with later frames
    gain = t.new_zeros(t.shape[0])
    for gap in range(1, s):  # all pairs (l, l + gap) at once
        rolled = decode(torch.roll(t[:, : s - gap], shifts=shift * gap, dims=-1))
        target = x[:, gap:]
        gain = gain + (nll(copies[:, : s - gap], target) - nll(rolled, target)).sum(dim=1)
    return gain / (s * (s - 1) / 2)


def mean_image_nll(pixel_mean: torch.Tensor) -> float:
    """The NLL per image of the test set under its own per-pixel mean image, in nats.

    With p the mean of the images x, the mean over images of BCE(p, x) is sum_pixels H(p): the
    binary entropy of the mean, what a decoder reaches with no latent at all.
    """
    p = pixel_mean.double().clamp(1e-7, 1 - 1e-7)
    return float(-(p * p.log() + (1 - p) * (1 - p).log()).sum())


def active_units(mean_sum: torch.Tensor, square_sum: torch.Tensor, n: int, threshold: float = 0.01) -> int:
    """Units whose posterior mean varies over the n test images by more than `threshold` (Burda et
    al. 2016), from the per-unit sums of the means and of their squares."""
    variance = square_sum.double() / n - (mean_sum.double() / n) ** 2
    return int((variance > threshold).sum())


# ---------------------------------------------------------------- topographic maps (2-D model, paper Figure 3)


def has_map(n_caps: int, cap_dim: int, seq_len: int) -> bool:
    """A static-image model whose latent can be laid out as a square grid."""
    side = round((n_caps * cap_dim) ** 0.5)
    return seq_len == 1 and side * side == n_caps * cap_dim


def preferred_classes(t: torch.Tensor, labels: torch.Tensor, n_classes: int = 10) -> torch.Tensor:
    """The class each latent unit prefers, laid out as the (side, side) grid of the torus.

    t: (N, ...) latents of N images, flattened to N x D units. A unit's preference is the class
    whose images give it the largest mean |t| above the unit's mean over all images.
    """
    t = t.flatten(1).abs()
    side = round(t.shape[1] ** 0.5)
    overall = t.mean(0)
    means = torch.stack([t[labels == k].mean(0) if (labels == k).any() else overall
                         for k in range(n_classes)])  # (classes, D)
    return (means - overall).argmax(0).reshape(side, side)


def topographic_agreement(preferred: torch.Tensor) -> tuple[float, float]:
    """(observed, chance): the fraction of neighbouring unit pairs on the torus (right and down
    neighbours, wrapping) that prefer the same class, and the same fraction expected if the
    units' preferences were placed at random."""
    same = torch.cat([(preferred == torch.roll(preferred, 1, dims=d)).flatten() for d in (0, 1)])
    counts = torch.bincount(preferred.flatten()).double()
    n = counts.sum()
    chance = float((counts * (counts - 1)).sum() / (n * (n - 1))) if n > 1 else 1.0
    return float(same.double().mean()), chance
