"""Training configuration: the `data`, `model` and `train` sections of a config file.

Pydantic models, parsed once, with strict types: an integer field refuses 'four' and true, a number
field takes integers. Every problem is a ConfigError whose message is one line naming the field.
Their base (Schema) and types are the sweep spec's too; Setting declares the order in which an
option, the environment and a file give a setting.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    model_validator,
)
from typing_extensions import Self

from .errors import ConfigError, one_line

VARIANTS = ("vae", "tvae", "tvae2d")
DATASETS = ("mnist5k", "mnist", "dsprites")
MNIST_TRANSFORMS = ("rotation", "hue", "scale", "rotation_hue", "perspective_hue")
DSPRITES_FACTORS = ("x", "y", "orientation", "scale")
OPTIMIZERS = ("sgd", "adam")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "tf32", "bf16")


# model keys that fix the network's parameter shapes (or the data they see): two runs that differ in
# any of them cannot share a checkpoint (PBT) or a batched model
SHAPE_KEYS = ("variant", "n_caps", "cap_dim", "image_shape", "torus_window", "seq_len")


# ---------------------------------------------------------------- field types


def rule(ok, text: str, show=str) -> AfterValidator:
    """A check of one value, refused as '<text>, got <value>'."""
    def check(value):
        if not ok(value):
            raise ValueError(f"{text}, got {show(value)}")
        return value
    return AfterValidator(check)


def one_of(options: tuple[str, ...]) -> AfterValidator:
    return rule(lambda v: v in options, f"must be one of {', '.join(options)}", repr)


def at_least(low: int) -> AfterValidator:
    return rule(lambda v: v >= low, f"must be >= {low}")


def _whole_to_int(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _int_to_float(value: Any) -> Any:
    return float(value) if type(value) is int else value


# 4.0 is the integer 4 (a table's column of integers with gaps holds floats); an integer is a number
Int = Annotated[int, BeforeValidator(_whole_to_int), Strict()]
Float = Annotated[float, BeforeValidator(_int_to_float), Strict()]
Str = Annotated[str, Strict()]
Bool = Annotated[bool, Strict()]
Count = Annotated[Int, at_least(1)]
Positive = Annotated[Float, rule(lambda v: v > 0, "must be > 0")]
Shape = Annotated[tuple[Int, ...], rule(lambda s: len(s) == 3 and all(n >= 1 for n in s),
                                        "must be three positive sizes [C, H, W]", list)]


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {message}")


# ---------------------------------------------------------------- the base of every config and spec model


class Schema(BaseModel):
    """The base of the config sections and of the spec's models: unknown keys refused (extra="forbid"),
    fields typed with the strict types above, and any problem a one-line ConfigError naming the field."""

    model_config = ConfigDict(extra="forbid")
    section: ClassVar[str] = ""  # the name its fields are shown under when it is parsed on its own

    @classmethod
    def parse(cls, raw: Any) -> Self:
        """The model of a raw mapping (a YAML file's), or a one-line ConfigError."""
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            raise ConfigError(one_line(e, cls, list(raw) if isinstance(raw, dict) else [], cls.section)) from None


class Section(Schema):
    """A config section, which code makes too (a notebook's ModelConfig(n_caps=4)): refused with the
    same one line. (A section is always found under its own name, so pydantic may call this
    constructor for one nested in another model: the line it raises names the field in full.)"""

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as e:
            raise ConfigError(one_line(e, type(self), list(values), self.section)) from None


# ---------------------------------------------------------------- settings: an option, the environment or a file


@dataclass(frozen=True)
class Setting:
    """A setting given, in order of precedence, by a command-line option, an environment variable, a
    key of a file (a spec's), or a default; each source is named as messages name it."""

    option: str
    env: str | None = None
    key: str | None = None

    def pick(self, option: Any = None, in_file: Any = None, default: Any = None,
             default_source: str = "the default") -> tuple[Any, str]:
        """(value, the source that gave it): the first of option, environment, file that is set, else the default."""
        given = ((option, self.option), (os.environ.get(self.env) if self.env else None, self.env),
                 (in_file, self.key))
        return next(((value, source) for value, source in given if value), (default, default_source))


# ---------------------------------------------------------------- the sections


class ModelConfig(Section):
    section: ClassVar[str] = "model"

    variant: Annotated[Str, one_of(VARIANTS)] = "tvae"
    n_caps: Count = 18
    cap_dim: Count = 18
    seq_len: Count = 18
    coherence_window: Count = 13
    n_off_diag: Annotated[Int, at_least(0)] = 1
    shift: Annotated[Int, at_least(0)] = 1
    mu_init: Float = 30.0
    image_shape: Shape = (3, 28, 28)
    torus_window: Count = 5  # tvae2d: side of the square neighbourhood on the torus

    @property
    def latent_dim(self) -> int:
        return self.n_caps * self.cap_dim

    @model_validator(mode="after")
    def _fits(self) -> ModelConfig:
        if self.variant == "tvae":
            _check(self.coherence_window <= self.seq_len, "model.coherence_window",
                   f"must be between 1 and model.seq_len ({self.seq_len}), got {self.coherence_window}")
            _check(2 * self.n_off_diag + 1 <= self.cap_dim, "model.n_off_diag",
                   f"the neighbourhood 2*n_off_diag+1 must fit in model.cap_dim ({self.cap_dim}), "
                   f"got {self.n_off_diag}")
        if self.variant == "tvae2d":
            side = round(self.cap_dim ** 0.5)
            _check(side * side == self.cap_dim, "model.cap_dim",
                   f"tvae2d lays the capsule on a square torus: must be a square number, got {self.cap_dim}")
            _check(self.torus_window <= side, "model.torus_window",
                   f"must be at most the torus side ({side}), got {self.torus_window}")
        return self


class DataConfig(Section):
    section: ClassVar[str] = "data"

    dataset: Annotated[Str, one_of(DATASETS)] = "mnist5k"
    transforms: list[Str] = Field(default_factory=lambda: ["rotation", "hue", "scale"])
    test_transforms: list[Str] | None = None
    train_sequences: Count = 1024
    test_sequences: Count = 128
    test_seed: Int = 0  # draws the test sequences; the same for every train.seed, so seeds compare
    test_fraction: Annotated[Float, rule(lambda v: 0 < v < 1, "must be between 0 and 1")] = 0.1
    path: Str | None = None
    download: Bool = False
    grayscale: Bool = False

    @property
    def image_shape(self) -> tuple[int, int, int]:
        if self.dataset == "dsprites":
            return (1, 64, 64)
        return (1, 28, 28) if self.grayscale else (3, 28, 28)

    @model_validator(mode="after")
    def _fits(self) -> DataConfig:
        allowed = DSPRITES_FACTORS if self.dataset == "dsprites" else MNIST_TRANSFORMS
        for name in ("transforms", "test_transforms"):
            for t in getattr(self, name) or []:
                _check(t in allowed, f"data.{name}",
                       f"{t!r} is not a {self.dataset} transform; allowed: {', '.join(allowed)}")
        if self.dataset == "mnist":
            _check(self.path is not None, "data.path", "dataset mnist needs the directory of the MNIST IDX files")
        _check(not (self.grayscale and self.dataset == "dsprites"), "data.grayscale", "dsprites is already one channel")
        if self.grayscale:
            for t in self.transforms + (self.test_transforms or []):
                _check("hue" not in t, "data.grayscale",
                       f"transform {t!r} changes hue, which needs colour; set grayscale: false")
        return self


class TrainConfig(Section):
    section: ClassVar[str] = "train"

    epochs: Count = 5
    batch_size: Count = 8
    lr: Positive = 1e-4
    mu_lr: Positive | None = None  # the learning rate of the TVAE's mu (None: lr); mu is one scalar among millions
    optimizer: Annotated[Str, one_of(OPTIMIZERS)] = "sgd"
    momentum: Annotated[Float, rule(lambda v: 0 <= v < 1, "must be in [0, 1)")] = 0.9
    seed: Int = 0
    device: Annotated[Str, one_of(DEVICES)] = "auto"
    eval_every: Count = 1
    eval_batch_size: Count = 64
    ll_samples: Count = 10
    num_threads: Count | None = None
    grad_clip: Positive | None = None
    cuda_graph: Bool = False  # replay each step as one CUDA graph (CUDA only; for small batches)
    precision: Annotated[Str, one_of(PRECISIONS)] = "fp32"  # the training step's; evaluation is fp32

    @model_validator(mode="after")
    def _fits(self) -> TrainConfig:
        _check(not self.cuda_graph or self.device in ("auto", "cuda"), "train.cuda_graph",
               f"CUDA graphs need train.device cuda (or auto on a GPU), got {self.device!r}")
        _check(self.precision != "tf32" or self.device in ("auto", "cuda"), "train.precision",
               f"tf32 is a CUDA matrix-product mode: needs train.device cuda (or auto on a GPU), got {self.device!r}")
        return self


class RunConfig(Section):
    """One training run: what `tvae-sweep train` reads and every sweep trial runs."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _fits(self) -> RunConfig:
        """Checks that need two sections at once."""
        m, d = self.model, self.data
        if "image_shape" not in m.model_fields_set:  # the data decides unless the user says otherwise
            self.model = m = m.model_copy(update={"image_shape": d.image_shape})
        _check(m.image_shape == d.image_shape, "model.image_shape",
               f"must match the data ({list(d.image_shape)} for data.dataset {d.dataset}), got {list(m.image_shape)}")
        if d.transforms and m.seq_len < 2:
            raise ConfigError("model.seq_len: transforming sequences need seq_len >= 2 "
                              "(use data.transforms: [] for static images)")
        return self

    def to_dict(self) -> dict[str, Any]:
        out = self.model_dump()
        out["model"]["image_shape"] = list(self.model.image_shape)
        return out


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


# ---------------------------------------------------------------- parsing


def run_config_from_dict(raw: Any) -> RunConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"config: must be a mapping with sections {', '.join(SECTIONS)}")
    for key in raw:
        if key not in SECTIONS:
            raise ConfigError(f"{key}: unknown section; allowed: {', '.join(SECTIONS)}")
    sections = {}
    for name, cls in SECTIONS.items():
        values = {} if raw.get(name) is None else raw[name]
        if not isinstance(values, dict):
            raise ConfigError(f"{name}: must be a mapping of keys to values, got {values!r}")
        sections[name] = cls(**{str(key): value for key, value in values.items()})
    return RunConfig(**sections)


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
