"""The topographic operator W: v = W(u^2).

For a sequence model, u has shape (B, S, C, D): batch, frames, capsules, capsule positions. With a
temporal window of k frames (offsets delta in [-(k//2), k//2] for odd k, [-(k/2), k/2 - 1] for even
k), a within-capsule neighbourhood |e| <= n_off_diag and a shift s:

    v[b, t, c, d] = sum_delta sum_e u^2[b, (t + delta) mod S, c, (d + s*delta + e) mod D]

Both axes are circular. W is linear in u^2 and acts on each capsule's S*D units alone, so for the
sizes a TVAE uses it is one product with an (S*D, S*D) 0/1 matrix (counts where the window wraps
onto itself): one matrix product instead of k*(2K+1) rolls, forward and backward. Beyond
DENSE_LIMIT units per capsule the matrix would cost more than the rolls, and the rolls are used.
The 2-D model's W is the same kind of matrix over one frame's torus. w_matrix_t is the one plan.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from ..config import ModelConfig

DENSE_LIMIT = 1024  # units per capsule (S*D) up to which W is applied as one dense matrix


def window_offsets(k: int) -> range:
    """Offsets of a window of k positions centred on 0 (one more to the left when k is even)."""
    return range(-(k // 2), k - k // 2)


@lru_cache(maxsize=16)
def coherence_matrix_t(seq_len: int, cap_dim: int, coherence_window: int, n_off_diag: int, shift: int,
                       device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """W transposed, (S*D, S*D) over (frame, position), so that v_flat = u_sq_flat @ W^T."""
    s, d = seq_len, cap_dim
    t = torch.arange(s).view(s, 1, 1, 1)
    p = torch.arange(d).view(1, d, 1, 1)
    delta = torch.tensor(list(window_offsets(coherence_window))).view(1, 1, -1, 1)
    e = torch.arange(-n_off_diag, n_off_diag + 1).view(1, 1, 1, -1)
    rows = (t * d + p).expand(s, d, delta.shape[2], e.shape[3])
    cols = ((t + delta) % s) * d + (p + shift * delta + e) % d
    return _counts(s * d, rows, cols, device, dtype)


@lru_cache(maxsize=16)
def torus_matrix_t(side: int, window: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The window x window box sum on a side x side torus as a transposed (side^2, side^2) matrix."""
    i = torch.arange(side).view(side, 1, 1, 1)
    j = torch.arange(side).view(1, side, 1, 1)
    a = torch.tensor(list(window_offsets(window))).view(1, 1, -1, 1)
    b = a.view(1, 1, 1, -1)
    rows = (i * side + j).expand(side, side, window, window)
    cols = ((i + a) % side) * side + (j + b) % side
    return _counts(side * side, rows, cols, device, dtype)


def _counts(n: int, rows: torch.Tensor, cols: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """W^T for W[row, col] = how often (row, col) occurs."""
    w = torch.zeros(n, n, dtype=dtype)
    w.index_put_((rows.reshape(-1), cols.reshape(-1)), torch.ones(rows.numel(), dtype=dtype), accumulate=True)
    return w.t().contiguous().to(device)


def w_units(cfg: ModelConfig, seq_len: int) -> int:
    """The units W acts on together: a capsule's frames and positions (S*D), or one frame's torus (D)."""
    return cfg.cap_dim if cfg.variant == "tvae2d" else seq_len * cfg.cap_dim


def w_matrix_t(cfg: ModelConfig, seq_len: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
    """The plan of W for sequences of `seq_len` frames, the one rule for every model: W^T as one dense
    (n, n) matrix up to DENSE_LIMIT units, None beyond (W is then applied as rolls, w_by_rolls)."""
    if w_units(cfg, seq_len) > DENSE_LIMIT:
        return None
    if cfg.variant == "tvae2d":
        return torus_matrix_t(round(cfg.cap_dim ** 0.5), cfg.torus_window, device, dtype)
    return coherence_matrix_t(seq_len, cfg.cap_dim, cfg.coherence_window, cfg.n_off_diag, cfg.shift, device, dtype)


def w_by_rolls(cfg: ModelConfig, u_sq: torch.Tensor) -> torch.Tensor:
    """v = W(u^2) as sums of circular rolls, u_sq (B, S, C, D): the form beyond DENSE_LIMIT units."""
    if cfg.variant == "tvae2d":
        return torus_by_rolls(u_sq, cfg.torus_window)
    return energy_by_rolls(u_sq, cfg.coherence_window, cfg.n_off_diag, cfg.shift)


def energy_by_rolls(u_sq: torch.Tensor, coherence_window: int, n_off_diag: int, shift: int) -> torch.Tensor:
    """The sequence model's v as a sum of circular rolls: cheaper than the matrix when S*D is large."""
    # within-capsule neighbourhood: w[..., d] = sum_e u_sq[..., d + e]
    w = u_sq
    for e in range(1, n_off_diag + 1):
        w = w + torch.roll(u_sq, -e, dims=-1) + torch.roll(u_sq, e, dims=-1)
    # temporal coherence, shifting by s positions per frame: roll(x, -delta)[t] = x[t + delta]
    v = torch.zeros_like(w)
    for delta in window_offsets(coherence_window):
        v = v + torch.roll(w, shifts=(-delta, -shift * delta), dims=(1, 3))
    return v


def torus_by_rolls(u_sq: torch.Tensor, window: int) -> torch.Tensor:
    """The 2-D model's v as rolls: a window x window box sum of u^2 on a square torus, u_sq (..., D)
    with D a square number laid out as a side x side grid."""
    side = round(u_sq.shape[-1] ** 0.5)
    grid = u_sq.reshape(*u_sq.shape[:-1], side, side)
    rows = sum(torch.roll(grid, -o, dims=-2) for o in window_offsets(window))
    box = sum(torch.roll(rows, -o, dims=-1) for o in window_offsets(window))
    return box.reshape(u_sq.shape)
