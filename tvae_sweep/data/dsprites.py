"""dSprites: 64x64 binary sprites (square, ellipse, heart), rendered from their factors or read
from the official npz.

The sequence factors and their grids (15 values each, 5 for scale):

- x, y: positions 0, 2, ..., 28 of the official 32 values in linspace(0, 1, 32) (every second
  one, as in the paper's runs); x moves right (image columns), y moves down (image rows).
- orientation: rendered, 15 angles 2*pi*k/15 over one full turn, so the cycle closes. From the
  npz, the official indices 0, 2, ..., 28 of linspace(0, 2*pi, 40): 18.5 degree steps covering
  258 degrees, so that cycle jumps back from 258 to 0 degrees (as in the original runs).
- scale: the official linspace(0.5, 1, 6) without the smallest, 0.6 ... 1.0 (npz indices 1..5).

Rendering: a sprite at scale 1 is about 20 pixels across; its centre runs from pixel 12
(position 0) towards pixel 52 (position 1), so positions span the image with a margin.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..config import DSPRITES_FACTORS

SHAPES = ("square", "ellipse", "heart")
FACTORS = DSPRITES_FACTORS  # ("x", "y", "orientation", "scale")
FACTOR_SIZES = (15, 15, 15, 5)
IMAGE_SIZE = 64

POSITIONS = np.linspace(0.0, 1.0, 32)[0:29:2]
ORIENTATIONS = 2 * np.pi * np.arange(15) / 15
SCALES = np.linspace(0.5, 1.0, 6)[1:]

# Official npz layout: latents_classes columns [color, shape, scale, orientation, posX, posY].
OFFICIAL_SIZES = (1, 3, 6, 40, 32, 32)
NPZ_POSITION_INDEX = np.arange(0, 29, 2)
NPZ_ORIENTATION_INDEX = np.arange(0, 29, 2)
NPZ_SCALE_INDEX = np.arange(1, 6)

MARGIN = 12.0  # pixels from the border to the centre at position 0 (and 1), for 64x64
HALF_SIZE = 10.0  # half the sprite's extent at scale 1, in pixels, for 64x64
REACH = 1.25  # no shape point lies further than this from the centre, in half sizes


# ---------------------------------------------------------------- rendering


def shape_masks(ux: torch.Tensor, uy: torch.Tensor) -> torch.Tensor:
    """Membership of points (in the sprite's frame, y down, about [-1, 1]) in each shape: (3, ...) bool.

    - square: max(|u_x|, |u_y|) <= 0.85;
    - ellipse: u_x^2 + (u_y / 0.5)^2 <= 1, twice as wide as tall;
    - heart: the implicit curve (X^2 + Y^2 - 1)^3 <= X^2 Y^3 with X = 1.14 u_x and
      Y = 0.118 - 1.12 u_y (lobes up, point down, centred on the origin).

    No shape reaches further than REACH from the origin.
    """
    square = torch.maximum(ux.abs(), uy.abs()) <= 0.85
    ellipse = ux * ux + 4 * uy * uy <= 1.0
    hx2, hy = 1.2996 * ux * ux, 0.118 - 1.12 * uy
    t = hx2 + hy * hy - 1
    heart = t * t * t <= hx2 * hy * hy * hy
    return torch.stack([square, ellipse, heart])


def render(shape: torch.Tensor, x: torch.Tensor, y: torch.Tensor, angle: torch.Tensor,
           scale: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Draw N sprites: (N,) shape index, positions in [0, 1], angle (radians), scale -> (N, size, size) 0/1 float.

    Each pixel centre p (column + 0.5, row + 0.5) is taken into the sprite's frame,

        u = R(-angle) (p - c) / (scale * half_size),

    with c = margin + position * (size - 2 * margin) and R a counter-clockwise turn as displayed,
    and is set to 1 when u lies inside the shape. Only a W x W window of pixels around c can be
    inside (W covers REACH * half_size each side), so membership is tested there and the window is
    then added into the blank image.
    """
    n, unit = shape.shape[0], size / IMAGE_SIZE
    half = scale * HALF_SIZE * unit  # (N,)
    span = size - 2 * MARGIN * unit
    cx, cy = MARGIN * unit + x * span, MARGIN * unit + y * span  # (N,) centres in pixels
    w = 2 * math.ceil(REACH * HALF_SIZE * unit) + 2
    offsets = torch.arange(w, device=shape.device) - w // 2
    cols = cx.floor().long()[:, None] + offsets  # (N, W)
    rows = cy.floor().long()[:, None] + offsets  # (N, W)
    dx = (cols + 0.5 - cx[:, None])[:, None, :]  # (N, 1, W)
    dy = (rows + 0.5 - cy[:, None])[:, :, None]  # (N, W, 1)
    cos, sin = (torch.cos(angle) / half)[:, None, None], (torch.sin(angle) / half)[:, None, None]
    ux, uy = cos * dx - sin * dy, sin * dx + cos * dy  # (N, W, W)
    masks = shape_masks(ux, uy)  # (3, N, W, W)
    inside = masks.gather(0, shape.long()[None, :, None, None].expand(1, n, w, w))[0]
    on_image = ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]
    flat = rows.clamp(0, size - 1)[:, :, None] * size + cols.clamp(0, size - 1)[:, None, :]  # (N, W, W)
    image = torch.zeros(n, size * size, device=shape.device)
    image.scatter_add_(1, flat.reshape(n, -1), (inside & on_image).float().reshape(n, -1))
    return image.reshape(n, size, size)


# ---------------------------------------------------------------- the official npz


def grid_row(shape: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Row of `read_npz`'s compact array for a shape and factor indices (..., 4) in FACTORS order."""
    x, y, o, s = index.unbind(-1)
    return (((shape * 15 + x) * 15 + y) * 15 + o) * 5 + s


def check_npz(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data.path: no dsprites npz at {path} (leave data.path empty to render dSprites instead)")
    return path


def read_npz(path: str | Path) -> np.ndarray:
    """The sprites of the sequence grid from the official dsprites npz: (3*15*15*15*5, 64, 64) uint8.

    Row `grid_row(shape, (x, y, orientation, scale))` holds the official image with shape index
    `shape`, posX index NPZ_POSITION_INDEX[x], posY index NPZ_POSITION_INDEX[y], orientation
    index NPZ_ORIENTATION_INDEX[orientation] and scale index NPZ_SCALE_INDEX[scale]. The file may
    hold any subset of the official rows as long as every one of these is there.
    """
    path = check_npz(path)
    with np.load(path, allow_pickle=False) as npz:
        for key in ("imgs", "latents_classes"):
            if key not in npz.files:
                raise ValueError(f"data.path: {path} has no array '{key}' (is it the official dsprites npz?)")
        imgs, classes = npz["imgs"], npz["latents_classes"].astype(np.int64)
    if imgs.ndim != 3 or imgs.shape[1:] != (64, 64) or classes.shape != (imgs.shape[0], 6):
        raise ValueError(f"data.path: {path}: imgs {imgs.shape} and latents_classes {classes.shape} "
                         "are not (N, 64, 64) and (N, 6)")
    if (classes < 0).any() or (classes >= np.array(OFFICIAL_SIZES)).any():
        raise ValueError(f"data.path: {path}: latents_classes out of the official ranges {OFFICIAL_SIZES}")
    lookup = np.full(int(np.prod(OFFICIAL_SIZES)), -1, dtype=np.int64)
    lookup[np.ravel_multi_index(classes.T, OFFICIAL_SIZES)] = np.arange(len(classes))
    needed = needed_classes()  # (M, 6), in grid_row order
    rows = lookup[np.ravel_multi_index(needed.T, OFFICIAL_SIZES)]
    missing = np.flatnonzero(rows < 0)
    if missing.size:
        factors = ("color", "shape", "scale", "orientation", "posX", "posY")
        first = dict(zip(factors, needed[missing[0]].tolist(), strict=True))
        raise ValueError(f"data.path: {path} lacks {missing.size} of the {len(needed)} sprites the sequences use, "
                         f"e.g. latents_classes {first}")
    return np.ascontiguousarray(imgs[rows], dtype=np.uint8)


def needed_classes() -> np.ndarray:
    """Official latents_classes rows (M, 6) of the sequence grid, in `grid_row` order."""
    shape, x, y, o, s = np.meshgrid(np.arange(3), NPZ_POSITION_INDEX, NPZ_POSITION_INDEX,
                                    NPZ_ORIENTATION_INDEX, NPZ_SCALE_INDEX, indexing="ij")
    color = np.zeros_like(shape)
    return np.stack([color, shape, s, o, x, y], -1).reshape(-1, 6)

