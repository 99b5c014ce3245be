"""Pictures of what a model learned: capsule traversals and the 2-D topographic map."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .seeding import fixed_rng

# ten distinct colours for the digit classes of the topographic map
PALETTE = np.array([
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [128, 128, 128],
], dtype=np.uint8)


def to_rgb(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> (N, H, W, 3) uint8."""
    images = images.detach().float().clamp(0, 1).cpu()
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def grid(rows: list[torch.Tensor], pad: int = 1) -> np.ndarray:
    """Rows of (N, C, H, W) images -> one RGB canvas with a white border between images."""
    tiles = [to_rgb(r) for r in rows]
    n = max(len(t) for t in tiles)
    h, w = tiles[0].shape[1:3]
    canvas = np.full((len(tiles) * (h + pad) + pad, n * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, row in enumerate(tiles):
        for j, img in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            canvas[y:y + h, x:x + w] = img
    return canvas


@torch.no_grad()
def traversal_rows(model, x: torch.Tensor) -> list[torch.Tensor]:
    """For each sequence of x (B, S, C, H, W): its frames, then the decodes of frame 0's capsules
    rolled by 0..S-1 steps (the model's shift per step). A model that learned the transformation
    as a roll draws the sequence again from its first frame alone."""
    model.eval()
    with fixed_rng(x.device, 0):  # the same picture for the same model
        t = model.sample_latent(x)  # (B, S, C, D)
    s = x.shape[1]
    rolled = torch.stack([torch.roll(t[:, 0], model.metric_shift * m, dims=-1) for m in range(s)], dim=1)
    decoded = torch.sigmoid(model.decode(rolled))
    rows = []
    for b in range(x.shape[0]):
        rows += [x[b], decoded[b]]
    return rows


def save_png(canvas: np.ndarray, path: str | Path, scale: int = 2) -> Path:
    from PIL import Image  # imported here: the core needs Pillow only to write pictures

    img = Image.fromarray(canvas)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    img.save(path)
    return Path(path)


def save_traversal(model, x: torch.Tensor, path: str | Path) -> Path:
    return save_png(grid(traversal_rows(model, x)), path)


@torch.no_grad()
def topographic_map(model, x: torch.Tensor, labels: torch.Tensor, n_classes: int = 10) -> np.ndarray:
    """The torus of a tvae2d model coloured by the class each unit prefers (paper Figure 3).

    A unit's preference is the class whose images give it the largest mean activation |t| above
    the unit's mean over all images. Returns (side, side, 3) uint8.
    """
    model.eval()
    with fixed_rng(x.device, 0):
        t = model.sample_latent(x).flatten(1).abs()  # (N, D)
    side = round(t.shape[1] ** 0.5)
    overall = t.mean(0)
    means = torch.stack([t[labels == k].mean(0) if (labels == k).any() else overall
                         for k in range(n_classes)])  # (classes, D)
    preferred = (means - overall).argmax(0).cpu().numpy()
    return PALETTE[preferred % len(PALETTE)].reshape(side, side, 3)


def save_topographic_map(model, x: torch.Tensor, labels: torch.Tensor, path: str | Path) -> Path:
    return save_png(topographic_map(model, x, labels), path, scale=12)
