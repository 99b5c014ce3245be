"""Sequences of transformed images, generated a whole batch at a time on the data's device.

A sequence shows one image under one transformation that advances one step per frame. Drawing
a batch happens in two steps:

1. `plan`: pick the images, the varying factor of each sequence, its start index and the values
   of the fixed factors; the result is a `Plan` holding every frame's factor indices (B, S, F).
2. `render`: turn a plan into pixels (B, S, C, H, W) with batched tensor ops.

All randomness is in step 1 and comes from the generator passed in, so the same generator state
gives the same batch. The test set is a plan drawn once from a generator seeded by data.test_seed,
so every training seed is scored on the same held-out sequences (drawn from a training seed, 64
test sequences differed by up to 100 nats in the mean image's NLL alone); its pixels are rendered on
demand (whole, or a slice at a time).

Transforming MNIST: factors rotation, hue, scale (18 values each, see MNIST_* below) and a 3-D
tilt used only by "perspective_hue". Frame f uses index (start + f) mod 18 of the varying
factor(s). Rotation, hue and tilt are truly cyclic; scale is not (index 17 -> 0 jumps from 1.26
back to 0.60), while the model's time axis is circular all the same.

dSprites: factors x, y, orientation (15 values) and scale (5 values), see dsprites.py; frame 0 is
a random sprite and the varying factor advances one index per frame, mod its number of values.

A static config (transforms: []) repeats one image in every frame: the plain digit (MNIST, no
rotation, scale or hue change) or a random sprite (dSprites). Its batches have factor -1 and
start 0, and factor_names is empty.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..config import DATASETS, DSPRITES_FACTORS, MNIST_TRANSFORMS  # noqa: F401 (re-exported)
from ..errors import ConfigError
from . import dsprites, mnist
from .transforms import affine_matrix, affine_warp, homogeneous, homography_warp, rotate_hue, tilt_matrix

MNIST_STEPS = 18
MNIST_ANGLES = tuple(20.0 * k for k in range(MNIST_STEPS))  # rotation and hue, degrees
MNIST_SCALES = (0.60, 0.64, 0.68, 0.72, 0.76, 0.79, 0.83, 0.87, 0.91,
                0.95, 0.99, 1.03, 1.07, 1.11, 1.14, 1.18, 1.22, 1.26)
MNIST_COLUMNS = ("rotation", "hue", "scale", "tilt")  # the factor indices a Plan holds per frame
MNIST_VARIES = {  # which columns each transform advances
    "rotation": ("rotation",),
    "hue": ("hue",),
    "scale": ("scale",),
    "rotation_hue": ("rotation", "hue"),
    "perspective_hue": ("tilt", "hue"),
}
TILT_DEG = 40.0  # perspective_hue: the fixed tilt of the digit's plane
TILT_DISTANCE = 3.0  # perspective_hue: camera distance, in half image widths
TEST_SEED_OFFSET = 7919  # test-set generator seed = data.test_seed + this, apart from a trainer's seed


@dataclass
class Batch:
    x: torch.Tensor  # (B, S, C, H, W) float32 in [0, 1]
    factor: torch.Tensor  # (B,) long: index into factor_names (test_factor_names for test batches); -1 static
    start: torch.Tensor  # (B,) long: index of the varying factor at frame 0
    label: torch.Tensor  # (B,) long: digit class or sprite shape


@dataclass
class Plan:
    """What to draw for B sequences; `SequenceData.render` turns it into pixels."""

    names: tuple[str, ...]  # the transform names that `factor` indexes
    image: torch.Tensor  # (B,) long: source row (MNIST) or shape index (dSprites)
    label: torch.Tensor  # (B,) long
    factor: torch.Tensor  # (B,) long, -1 when static
    start: torch.Tensor  # (B,) long
    index: torch.Tensor  # (B, S, F) long: every frame's index of every factor column

    def __len__(self) -> int:
        return self.image.shape[0]

    def __getitem__(self, rows: slice) -> Plan:
        return replace(self, image=self.image[rows], label=self.label[rows], factor=self.factor[rows],
                       start=self.start[rows], index=self.index[rows])


class SequenceData:
    """Sequences of one data set: training batches on request and a fixed test set.

    Subclasses give the factor columns (`columns`, `column_sizes`), which columns each transform
    advances (`varies`), how to draw source images (`draw_images`) and how to draw pixels (`render`).
    """

    columns: tuple[str, ...]
    column_sizes: tuple[int, ...]
    varies: dict[str, tuple[str, ...]]

    def __init__(self, cfg, seq_len: int, device: torch.device, image_shape: tuple[int, int, int]):
        self.image_shape = image_shape
        self.factor_names = list(cfg.transforms)
        test = cfg.transforms if cfg.test_transforms is None else cfg.test_transforms
        self.test_factor_names = list(test)
        self.seq_len = seq_len
        self.device = device
        self.test_seed = cfg.test_seed
        self.test_sequences = cfg.test_sequences
        self._sizes = torch.tensor(self.column_sizes, device=device)
        self._test_plan: Plan | None = None
        self._vary_tables: dict[tuple[str, ...], tuple[torch.Tensor, torch.Tensor]] = {}
        self._test_batch: Batch | None = None

    # ------------------------------------------------------------ public interface

    def sample_train(self, batch_size: int, generator: torch.Generator) -> Batch:
        """A fresh batch of training sequences, drawn with `generator` (on the data's device)."""
        return self.batch(self.plan(batch_size, generator, self.factor_names, train=True))

    def test_set(self) -> Batch:
        """All test sequences, fixed by data.test_seed; rendered once and kept."""
        if self._test_batch is None:
            self._test_batch = self.batch(self.test_plan())
        return self._test_batch

    def test_batches(self, batch_size: int) -> Iterator[Batch]:
        """The test set in slices of `batch_size` sequences (rendered per slice unless already kept)."""
        n = self.test_sequences
        for i in range(0, n, batch_size):
            if self._test_batch is not None:
                b = self._test_batch
                yield Batch(b.x[i:i + batch_size], b.factor[i:i + batch_size], b.start[i:i + batch_size],
                            b.label[i:i + batch_size])
            else:
                yield self.batch(self.test_plan()[i:i + batch_size])

    @property
    def test_factor_periods(self) -> list[int]:
        """Steps in the cycle of each test transform (its first varying factor's number of values)."""
        return [self.column_sizes[self.columns.index(self.varies[n][0])] for n in self.test_factor_names]

    # ------------------------------------------------------------ plans

    def test_plan(self) -> Plan:
        """The plan of the test set, drawn once from a generator seeded with data.test_seed + TEST_SEED_OFFSET."""
        if self._test_plan is None:
            generator = torch.Generator(device=self.device).manual_seed(self.test_seed + TEST_SEED_OFFSET)
            self._test_plan = self.plan(self.test_sequences, generator, self.test_factor_names, train=False)
        return self._test_plan

    def plan(self, n: int, generator: torch.Generator, names: list[str], train: bool) -> Plan:
        """Draw n sequences: images, varying factor, start index and every frame's factor indices.

        Each column starts at a random index; the varying columns of the chosen transform then
        all take (start + f) mod size at frame f, start being the random index of the first of them.
        """
        if generator.device.type != self.device.type:
            raise ValueError(f"the generator is on {generator.device} but the data is on {self.device}")
        dev = self.device
        image, label = self.draw_images(n, generator, train)
        first = (torch.rand(n, len(self.columns), generator=generator, device=dev) * self._sizes).long()  # (B, F)
        if not names:
            index = first[:, None, :].expand(n, self.seq_len, -1).contiguous()
            minus = torch.full((n,), -1, dtype=torch.long, device=dev)
            return Plan((), image, label, minus, torch.zeros_like(minus), index)
        factor = torch.randint(len(names), (n,), generator=generator, device=dev)
        vary, lead = self.vary_table(names)
        vary, lead = vary[factor], lead[factor]  # (B, F) bool, (B,)
        start = first.gather(1, lead[:, None])[:, 0]  # (B,)
        steps = torch.arange(self.seq_len, device=dev)
        moving = (start[:, None, None] + steps[None, :, None]) % self._sizes  # (B, S, F)
        index = torch.where(vary[:, None, :], moving, first[:, None, :])  # (B, S, F)
        return Plan(tuple(names), image, label, factor, start, index)

    def vary_table(self, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """For each name: which columns advance (len(names), F) bool, and the first of them (len(names),)."""
        key = tuple(names)
        if key not in self._vary_tables:
            vary = torch.tensor([[c in self.varies[n] for c in self.columns] for n in names], device=self.device)
            lead = torch.tensor([self.columns.index(self.varies[n][0]) for n in names], device=self.device)
            self._vary_tables[key] = (vary, lead)
        return self._vary_tables[key]

    def batch(self, plan: Plan) -> Batch:
        return Batch(self.render(plan), plan.factor, plan.start, plan.label)

    # ------------------------------------------------------------ per data set

    def draw_images(self, n: int, generator: torch.Generator, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def render(self, plan: Plan) -> torch.Tensor:
        raise NotImplementedError


class MnistSequences(SequenceData):
    """Transforming MNIST: digits in the red channel (or grey), rotated, scaled, tilted and hue-shifted.

    perspective_hue: the digit's plane is tilted by TILT_DEG towards a pinhole camera at distance
    TILT_DISTANCE (see transforms.tilt_matrix); the tilt axis lies in the plane at 20 * i degrees
    for index i, so over 18 steps the tilt swings once around (the plane wobbles like a spinning
    coin) and the cycle closes. Hue advances with it; rotation and scale stay at random values.
    """

    columns = MNIST_COLUMNS
    column_sizes = (MNIST_STEPS,) * 4
    varies = MNIST_VARIES

    def __init__(self, cfg, seq_len, device, images: np.ndarray, labels: np.ndarray,
                 train_ids: np.ndarray, test_ids: np.ndarray):
        shape = (1, 28, 28) if cfg.grayscale else (3, 28, 28)
        super().__init__(cfg, seq_len, device, shape)
        self.images = torch.as_tensor(images, dtype=torch.uint8).to(device)  # (N, 28, 28) uint8
        self.labels = torch.as_tensor(labels, dtype=torch.long).to(device)  # (N,)
        self.train_ids = torch.as_tensor(train_ids, dtype=torch.long).to(device)
        self.test_ids = torch.as_tensor(test_ids, dtype=torch.long).to(device)
        self.angles = torch.tensor(MNIST_ANGLES, device=device)
        self.scales = torch.tensor(MNIST_SCALES, device=device)

    def draw_images(self, n, generator, train):
        pool = self.train_ids if train else self.test_ids
        image = pool[torch.randint(len(pool), (n,), generator=generator, device=self.device)]
        return image, self.labels[image]

    def render(self, plan: Plan) -> torch.Tensor:
        b, s, _ = plan.index.shape
        digits = self.images[plan.image].float().div_(255)  # (B, 28, 28)
        frames = digits[:, None, None].expand(b, s, 1, 28, 28).reshape(b * s, 1, 28, 28)
        if plan.names:
            idx = plan.index.reshape(b * s, 4)
            frames = self.warp(frames, idx, plan)
        if self.image_shape[0] == 3:
            frames = torch.cat([frames, torch.zeros_like(frames), torch.zeros_like(frames)], 1)  # (B*S, 3, 28, 28)
            if plan.names:
                frames = rotate_hue(frames, self.angles[idx[:, 1]])
        return frames.reshape(b, s, *self.image_shape)

    def warp(self, frames: torch.Tensor, idx: torch.Tensor, plan: Plan) -> torch.Tensor:
        """Rotate and scale (B*S, 1, 28, 28) frames, and tilt those of perspective_hue sequences."""
        theta = affine_matrix(self.angles[idx[:, 0]], self.scales[idx[:, 2]])  # (B*S, 2, 3)
        if "perspective_hue" not in plan.names:
            return affine_warp(frames, theta)
        b, s, _ = plan.index.shape
        vary, _ = self.vary_table(list(plan.names))
        tilted = vary[plan.factor, 3][:, None].expand(b, s).reshape(-1)  # (B*S,) bool
        tilt = tilted.float() * TILT_DEG
        m = homogeneous(theta) @ tilt_matrix(tilt, self.angles[idx[:, 3]], TILT_DISTANCE)  # (B*S, 3, 3)
        return homography_warp(frames, m)


class DSpritesSequences(SequenceData):
    """dSprites sequences, rendered from the factors or looked up in the official npz's images."""

    columns = dsprites.FACTORS
    column_sizes = dsprites.FACTOR_SIZES
    varies = {name: (name,) for name in dsprites.FACTORS}

    def __init__(self, cfg, seq_len, device, sprites: np.ndarray | None):
        super().__init__(cfg, seq_len, device, (1, 64, 64))
        self.sprites = None if sprites is None else torch.as_tensor(sprites, dtype=torch.uint8).to(device)
        self.positions = torch.tensor(dsprites.POSITIONS, dtype=torch.float32, device=device)
        self.orientations = torch.tensor(dsprites.ORIENTATIONS, dtype=torch.float32, device=device)
        self.scales = torch.tensor(dsprites.SCALES, dtype=torch.float32, device=device)

    def draw_images(self, n, generator, train):
        shape = torch.randint(len(dsprites.SHAPES), (n,), generator=generator, device=self.device)
        return shape, shape

    def render(self, plan: Plan) -> torch.Tensor:
        b, s, _ = plan.index.shape
        shape = plan.image[:, None].expand(b, s).reshape(-1)  # (B*S,)
        idx = plan.index.reshape(b * s, 4)
        if self.sprites is not None:
            frames = self.sprites[dsprites.grid_row(shape, idx)].float()  # (B*S, 64, 64)
        else:
            x, y, o, sc = idx.unbind(-1)
            frames = dsprites.render(shape, self.positions[x], self.positions[y], self.orientations[o],
                                     self.scales[sc])
        return frames.reshape(b, s, 1, 64, 64)


# ---------------------------------------------------------------- building from a config


@dataclass
class Sources:
    """The source images of a data config as NumPy arrays: loaded once, shared by every run.

    MNIST: uint8 digits (N, 28, 28), labels (N,), and the rows held for training and for testing.
    dSprites: the official npz's sprites, or None to render them from the factors.
    """

    images: np.ndarray | None = None
    labels: np.ndarray | None = None
    train_ids: np.ndarray | None = None
    test_ids: np.ndarray | None = None
    sprites: np.ndarray | None = None


def load_sources(cfg) -> Sources:
    """Reads the source images a DataConfig names (the embedded digits, IDX files or the npz)."""
    if cfg.dataset == "dsprites":
        return Sources(sprites=dsprites.read_npz(cfg.path) if cfg.path else None)
    if cfg.dataset == "mnist5k":
        images, labels = mnist.read_mnist5k()
        train_ids, test_ids = mnist.split_indices(len(images), cfg.test_fraction)
        return Sources(images, labels, train_ids, test_ids)
    train_x, train_y, test_x, test_y = mnist.read_mnist_idx(cfg.path, cfg.download)
    images, labels = np.concatenate([train_x, test_x]), np.concatenate([train_y, test_y])
    return Sources(images, labels, np.arange(len(train_x)), np.arange(len(train_x), len(images)))


def check_sources(cfg) -> None:
    """Refuses, with a one-line ConfigError naming data.path, a DataConfig whose files are missing,
    without reading them (an MNIST folder may be missing when data.download fetches it)."""
    try:
        if cfg.dataset == "dsprites" and cfg.path:
            dsprites.check_npz(cfg.path)
        elif cfg.dataset == "mnist5k":
            mnist.mnist5k_path()
        elif cfg.dataset == "mnist" and not cfg.download:
            mnist.idx_paths(Path(cfg.path))
    except ValueError as e:
        raise ConfigError(str(e)) from None


def build_data(cfg, seq_len: int, device: torch.device | str,
               sources: Sources | None = None) -> SequenceData:
    """The sequence data of a DataConfig: sources loaded (unless given) onto `device` as uint8."""
    device = torch.device(device)
    sources = sources or load_sources(cfg)
    if cfg.dataset == "dsprites":
        return DSpritesSequences(cfg, seq_len, device, sources.sprites)
    return MnistSequences(cfg, seq_len, device, sources.images, sources.labels,
                          sources.train_ids, sources.test_ids)
