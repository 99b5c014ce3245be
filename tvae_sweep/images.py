"""Pictures of what a model learned: capsule traversals and the 2-D topographic map."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .metrics import has_map, preferred_classes
from .seeding import fixed_rng

# the pictures a finished run leaves beside its checkpoint
TRAVERSAL_FILE = "traversal.png"
FORECAST_FILE = "forecast.png"
MAP_FILE = "topographic_map.png"
PICTURES = (TRAVERSAL_FILE, FORECAST_FILE, MAP_FILE)
PICTURE_SEQUENCES = 4  # sequences drawn in a traversal or forecast

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


def grid(rows: list[torch.Tensor], pad: int = 1, split: int | None = None) -> np.ndarray:
    """Rows of (N, C, H, W) images -> one RGB canvas with a white border between images (and a
    wider one before column `split`)."""
    tiles = [to_rgb(r) for r in rows]
    n = max(len(t) for t in tiles)
    h, w = tiles[0].shape[1:3]
    gap = 3 * pad if split else 0
    canvas = np.full((len(tiles) * (h + pad) + pad, n * (w + pad) + pad + gap, 3), 255, dtype=np.uint8)
    for i, row in enumerate(tiles):
        for j, img in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad) + (gap if split and j >= split else 0)
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


@torch.no_grad()
def forecast_rows(model, x: torch.Tensor, seen: int) -> list[torch.Tensor]:
    """The paper's Figure 1: for each sequence of x (B, S, C, H, W), its true frames, then what
    the model makes of its first `seen` frames alone: their reconstructions, and each later frame
    m decoded from the last seen frame's capsules rolled by shift * (m - seen + 1). The encoder
    never sees the later frames; a model whose capsules roll with the transformation draws them."""
    model.eval()
    with fixed_rng(x.device, 0):
        t = model.sample_latent(x[:, :seen])  # (B, seen, C, D)
    last, shift = t[:, -1], model.metric_shift
    ahead = [torch.roll(last, shift * (m - seen + 1), dims=-1) for m in range(seen, x.shape[1])]
    decoded = torch.sigmoid(model.decode(torch.cat([t, torch.stack(ahead, dim=1)], dim=1)))
    rows = []
    for b in range(x.shape[0]):
        rows += [x[b], decoded[b]]
    return rows


def save_png(canvas: np.ndarray, path: str | Path, scale: int = 2) -> Path:
    from PIL import Image  # noqa: PLC0415 the core needs Pillow only to write pictures

    img = Image.fromarray(canvas)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    img.save(path)
    return Path(path)


def save_traversal(model, x: torch.Tensor, path: str | Path) -> Path:
    return save_png(grid(traversal_rows(model, x)), path)


def save_forecast(model, x: torch.Tensor, path: str | Path, seen: int | None = None) -> Path:
    seen = seen or x.shape[1] // 2
    return save_png(grid(forecast_rows(model, x, seen), split=seen), path)


@torch.no_grad()
def topographic_map(model, x: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """The latent grid (the torus of a tvae2d model) coloured by the class each unit prefers (paper
    Figure 3). Returns (side, side, 3) uint8."""
    model.eval()
    with fixed_rng(x.device, 0):
        t = model.sample_latent(x)
    preferred = preferred_classes(t, labels).cpu().numpy()
    return PALETTE[preferred % len(PALETTE)]


def save_topographic_map(model, x: torch.Tensor, labels: torch.Tensor, path: str | Path) -> Path:
    return save_png(topographic_map(model, x, labels), path, scale=12)


def save_pictures(model, test, directory: str | Path) -> list[Path]:
    """The pictures of a trained model on its test set `test` (a Batch) into `directory`: the
    traversal; the forecast for sequence models; the topographic map for static models whose
    latent is a square grid."""
    directory, cfg = Path(directory), model.cfg
    x = test.x[:PICTURE_SEQUENCES]
    saved = [save_traversal(model, x, directory / TRAVERSAL_FILE)]
    if cfg.seq_len > 1:
        saved.append(save_forecast(model, x, directory / FORECAST_FILE))
    if has_map(cfg.n_caps, cfg.cap_dim, cfg.seq_len):
        saved.append(save_topographic_map(model, test.x, test.label, directory / MAP_FILE))
    return saved


def save_member_pictures(trainer, m: int, directory: str | Path) -> list[Path]:
    """save_pictures of a trainer's member m (training.Trainer), on its own test set."""
    return save_pictures(trainer.model.member(m), trainer.data[m].test_set(), directory)
