"""Metrics of TVAE-SPEC section 3: equivariance error and ratio, capsule correlation, roll prediction.

Latents t have shape (B, S, C, D): sequences, frames, capsules, capsule positions. "Rolling" a
capsule by r moves element d to d + r (torch.roll's direction).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


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


def capsule_roll(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The roll r in [0, D) that best maps capsule a onto b, per capsule: argmax_r sum_d a[d] b[d + r].

    a, b: (..., D); the circular cross-correlation is computed with the FFT.
    """
    d = a.shape[-1]
    corr = torch.fft.irfft(torch.fft.rfft(a, dim=-1).conj() * torch.fft.rfft(b, dim=-1), n=d, dim=-1)
    return corr.argmax(dim=-1)


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    x = x.double() - x.double().mean()
    y = y.double() - y.double().mean()
    denom = (x.norm() * y.norm()).item()
    return float((x @ y).item() / denom) if denom > 0 else 0.0


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
