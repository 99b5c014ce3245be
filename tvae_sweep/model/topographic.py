"""The topographic operator W: v = W(u^2), as sums of circular rolls.

For a sequence model, u has shape (B, S, C, D): batch, frames, capsules, capsule positions. With a
temporal window of k frames (offsets delta in [-(k//2), k//2] for odd k, [-(k/2), k/2 - 1] for even
k), a within-capsule neighbourhood |e| <= n_off_diag and a shift s:

    v[b, t, c, d] = sum_delta sum_e u^2[b, (t + delta) mod S, c, (d + s*delta + e) mod D]

Both axes are circular. Each term is one torch.roll, so the operator is exact for every k, K and s.
"""
from __future__ import annotations

import torch


def window_offsets(k: int) -> range:
    """Offsets of a window of k positions centred on 0 (one more to the left when k is even)."""
    return range(-(k // 2), k - k // 2)


def topographic_energy(u_sq: torch.Tensor, coherence_window: int, n_off_diag: int, shift: int) -> torch.Tensor:
    """v = W(u^2) for u_sq of shape (B, S, C, D); returns the same shape."""
    # within-capsule neighbourhood: w[..., d] = sum_e u_sq[..., d + e]
    w = u_sq
    for e in range(1, n_off_diag + 1):
        w = w + torch.roll(u_sq, -e, dims=-1) + torch.roll(u_sq, e, dims=-1)
    # temporal coherence, shifting by s positions per frame: roll(x, -delta)[t] = x[t + delta]
    v = torch.zeros_like(w)
    for delta in window_offsets(coherence_window):
        v = v + torch.roll(w, shifts=(-delta, -shift * delta), dims=(1, 3))
    return v


def torus_energy(u_sq: torch.Tensor, window: int) -> torch.Tensor:
    """v for the 2-D model: a window x window box sum of u^2 on a square torus.

    u_sq has shape (..., D) with D a square number; the capsule is laid out as a side x side grid.
    """
    side = round(u_sq.shape[-1] ** 0.5)
    grid = u_sq.reshape(*u_sq.shape[:-1], side, side)
    rows = sum(torch.roll(grid, -o, dims=-2) for o in window_offsets(window))
    box = sum(torch.roll(rows, -o, dims=-1) for o in window_offsets(window))
    return box.reshape(u_sq.shape)
