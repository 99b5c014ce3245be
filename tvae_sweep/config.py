"""Training configuration: the `data`, `model` and `train` sections of a config file.

Plain dataclasses with explicit validation, so the core imports with PyTorch, NumPy and PyYAML
only. Every problem is a ConfigError whose message is one line naming the field to fix.
"""
from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

VARIANTS = ("vae", "tvae", "tvae2d")
DATASETS = ("mnist5k", "mnist", "dsprites")
MNIST_TRANSFORMS = ("rotation", "hue", "scale", "rotation_hue", "perspective_hue")
DSPRITES_FACTORS = ("x", "y", "orientation", "scale")
OPTIMIZERS = ("sgd", "adam")
DEVICES = ("auto", "cpu", "cuda", "mps")


# model keys that fix the network's parameter shapes (or the data they see): two runs that differ in
# any of them cannot share a checkpoint (PBT) or a batched model
SHAPE_KEYS = ("variant", "n_caps", "cap_dim", "image_shape", "torus_window", "seq_len")


@dataclass
class ModelConfig:
    variant: str = "tvae"
    n_caps: int = 18
    cap_dim: int = 18
    seq_len: int = 18
    coherence_window: int = 13
    n_off_diag: int = 1
    shift: int = 1
    mu_init: float = 30.0
    image_shape: tuple[int, int, int] = (3, 28, 28)
    torus_window: int = 5  # tvae2d: side of the square neighbourhood on the torus

    def __post_init__(self) -> None:
        self.image_shape = tuple(self.image_shape)
        validate_model(self)

    @property
    def latent_dim(self) -> int:
        return self.n_caps * self.cap_dim


@dataclass
class DataConfig:
    dataset: str = "mnist5k"
    transforms: list[str] = field(default_factory=lambda: ["rotation", "hue", "scale"])
    test_transforms: list[str] | None = None
    train_sequences: int = 1024
    test_sequences: int = 128
    test_fraction: float = 0.1
    path: str | None = None
    download: bool = False
    grayscale: bool = False

    def __post_init__(self) -> None:
        validate_data(self)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        if self.dataset == "dsprites":
            return (1, 64, 64)
        return (1, 28, 28) if self.grayscale else (3, 28, 28)


@dataclass
class TrainConfig:
    epochs: int = 5
    batch_size: int = 8
    lr: float = 1e-4
    mu_lr: float | None = None  # the learning rate of the TVAE's mu (None: lr); mu is one scalar among millions
    optimizer: str = "sgd"
    momentum: float = 0.9
    seed: int = 0
    device: str = "auto"
    eval_every: int = 1
    eval_batch_size: int = 64
    ll_samples: int = 10
    num_threads: int | None = None
    grad_clip: float | None = None
    cuda_graph: bool = False  # replay each step as one CUDA graph (CUDA only; for small batches)

    def __post_init__(self) -> None:
        validate_train(self)


@dataclass
class RunConfig:
    """One training run: what `tvae-sweep train` reads and every sweep trial runs."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["model"]["image_shape"] = list(self.model.image_shape)
        return out


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


# ---------------------------------------------------------------- validation


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {message}")


def validate_model(m: ModelConfig) -> None:
    _check(m.variant in VARIANTS, "model.variant", f"must be one of {', '.join(VARIANTS)}, got {m.variant!r}")
    for name in ("n_caps", "cap_dim", "seq_len", "coherence_window", "torus_window"):
        _check(getattr(m, name) >= 1, f"model.{name}", f"must be >= 1, got {getattr(m, name)}")
    _check(m.n_off_diag >= 0, "model.n_off_diag", f"must be >= 0, got {m.n_off_diag}")
    _check(m.shift >= 0, "model.shift", f"must be >= 0, got {m.shift}")
    _check(len(m.image_shape) == 3 and all(s >= 1 for s in m.image_shape), "model.image_shape",
           f"must be three positive sizes [C, H, W], got {list(m.image_shape)}")
    if m.variant == "tvae":
        _check(m.coherence_window <= m.seq_len, "model.coherence_window",
               f"must be between 1 and model.seq_len ({m.seq_len}), got {m.coherence_window}")
        _check(2 * m.n_off_diag + 1 <= m.cap_dim, "model.n_off_diag",
               f"the neighbourhood 2*n_off_diag+1 must fit in model.cap_dim ({m.cap_dim}), got {m.n_off_diag}")
    if m.variant == "tvae2d":
        side = round(m.cap_dim ** 0.5)
        _check(side * side == m.cap_dim, "model.cap_dim",
               f"tvae2d lays the capsule on a square torus: must be a square number, got {m.cap_dim}")
        _check(m.torus_window <= side, "model.torus_window",
               f"must be at most the torus side ({side}), got {m.torus_window}")


def validate_data(d: DataConfig) -> None:
    _check(d.dataset in DATASETS, "data.dataset", f"must be one of {', '.join(DATASETS)}, got {d.dataset!r}")
    allowed = DSPRITES_FACTORS if d.dataset == "dsprites" else MNIST_TRANSFORMS
    for name, value in (("transforms", d.transforms), ("test_transforms", d.test_transforms)):
        if value is None:
            continue
        _check(isinstance(value, list), f"data.{name}", f"must be a list of {', '.join(allowed)}")
        for t in value:
            _check(t in allowed, f"data.{name}",
                   f"{t!r} is not a {d.dataset} transform; allowed: {', '.join(allowed)}")
    _check(d.train_sequences >= 1, "data.train_sequences", f"must be >= 1, got {d.train_sequences}")
    _check(d.test_sequences >= 1, "data.test_sequences", f"must be >= 1, got {d.test_sequences}")
    _check(0.0 < d.test_fraction < 1.0, "data.test_fraction", f"must be between 0 and 1, got {d.test_fraction}")
    if d.dataset == "mnist":
        _check(d.path is not None, "data.path", "dataset mnist needs the directory of the MNIST IDX files")
    _check(not (d.grayscale and d.dataset == "dsprites"), "data.grayscale", "dsprites is already one channel")
    if d.grayscale:
        for t in (d.transforms or []) + (d.test_transforms or []):
            _check("hue" not in t, "data.grayscale", f"transform {t!r} changes hue, which needs colour; set grayscale: false")


def validate_train(t: TrainConfig) -> None:
    for name in ("epochs", "batch_size", "eval_every", "eval_batch_size", "ll_samples"):
        _check(getattr(t, name) >= 1, f"train.{name}", f"must be >= 1, got {getattr(t, name)}")
    _check(t.lr > 0, "train.lr", f"must be > 0, got {t.lr}")
    _check(t.mu_lr is None or t.mu_lr > 0, "train.mu_lr", f"must be > 0, got {t.mu_lr}")
    _check(t.optimizer in OPTIMIZERS, "train.optimizer", f"must be one of {', '.join(OPTIMIZERS)}, got {t.optimizer!r}")
    _check(0.0 <= t.momentum < 1.0, "train.momentum", f"must be in [0, 1), got {t.momentum}")
    _check(t.device in DEVICES, "train.device", f"must be one of {', '.join(DEVICES)}, got {t.device!r}")
    _check(t.num_threads is None or t.num_threads >= 1, "train.num_threads", f"must be >= 1, got {t.num_threads}")
    _check(t.grad_clip is None or t.grad_clip > 0, "train.grad_clip", f"must be > 0, got {t.grad_clip}")
    _check(not t.cuda_graph or t.device in ("auto", "cuda"), "train.cuda_graph",
           f"CUDA graphs need train.device cuda (or auto on a GPU), got {t.device!r}")


def validate_run(run: RunConfig) -> None:
    """Checks that need two sections at once."""
    m, d = run.model, run.data
    _check(tuple(m.image_shape) == d.image_shape, "model.image_shape",
           f"must match the data ({list(d.image_shape)} for data.dataset {d.dataset}), got {list(m.image_shape)}")
    if d.transforms and m.seq_len < 2:
        raise ConfigError("model.seq_len: transforming sequences need seq_len >= 2 (use data.transforms: [] for static images)")


# ---------------------------------------------------------------- parsing


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Checks one value against its annotation; ints are accepted for floats."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0])
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: must be a list, got {value!r}")
        item = args[0]
        items = [_coerce(f"{name}[{i}]", v, item) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{name}: must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: must be a string, got {value!r}")
        return value
    return value


def section_from_dict(section: str, cls: type, raw: Any) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{section}: must be a mapping of keys to values, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{section}.{key}: unknown key; allowed: {', '.join(known)}")
        kwargs[key] = _coerce(f"{section}.{key}", value, hints[key])
    try:
        return cls(**kwargs)
    except TypeError as e:  # pragma: no cover - all fields have defaults
        raise ConfigError(f"{section}: {e}") from None


def run_config_from_dict(raw: Any) -> RunConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"config: must be a mapping with sections {', '.join(SECTIONS)}")
    for key in raw:
        if key not in SECTIONS:
            raise ConfigError(f"{key}: unknown section; allowed: {', '.join(SECTIONS)}")
    data = section_from_dict("data", DataConfig, raw.get("data"))
    model_raw = dict(raw.get("model") or {}) if isinstance(raw.get("model") or {}, dict) else raw.get("model")
    if isinstance(model_raw, dict) and "image_shape" not in model_raw:
        model_raw["image_shape"] = list(data.image_shape)  # the data decides unless the user says otherwise
    model = section_from_dict("model", ModelConfig, model_raw)
    train = section_from_dict("train", TrainConfig, raw.get("train"))
    run = RunConfig(data=data, model=model, train=train)
    validate_run(run)
    return run


def parse_override(text: str) -> tuple[list[str], Any]:
    """'section.key=value' -> (['section', 'key'], value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected section.key=value")
    key, _, value = text.partition("=")
    path = key.strip().split(".")
    if len(path) < 2 or not all(path):
        raise ConfigError(f"--set {text}: the key must name a section and a field, like train.epochs")
    try:
        return path, yaml.safe_load(value)
    except yaml.YAMLError:
        raise ConfigError(f"--set {text}: the value is not valid YAML") from None


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Returns a copy of raw with each 'a.b=value' set."""
    out = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        set_path(out, path, value, f"--set {text}")
    return out


def set_path(raw: dict, path: list[str], value: Any, where: str) -> None:
    """raw[path[0]][path[1]]... = value, making missing sections; `where` names the setting in errors."""
    node = raw
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: {part} is not a section")
        node = child
    node[path[-1]] = value


def read_yaml(path: str | Path) -> dict:
    """Reads a YAML mapping safely; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a YAML mapping with sections data, model, train")
    return raw


def load_run_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    return run_config_from_dict(apply_overrides(read_yaml(path), list(overrides)))


def dump_yaml(data: dict, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))
