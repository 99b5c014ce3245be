"""The run config: one pydantic parse per section, strict types, and one-line errors naming the field;
and the settings given by an option, the environment, a file or a default."""
from pathlib import Path

import pytest
from helpers import spec_raw, tiny_raw

from tvae_sweep.config import (
    ConfigError,
    DataConfig,
    ModelConfig,
    RunConfig,
    Schema,
    Setting,
    TrainConfig,
    run_config_from_dict,
)
from tvae_sweep.sweep.cluster import ray_address
from tvae_sweep.sweep.layout import results_root
from tvae_sweep.sweep.spec import select_profile
from tvae_sweep.sweep.validation import spec_from_dict
from tvae_sweep.tracking.store import resolve


def refused(raw: dict) -> str:
    with pytest.raises(ConfigError) as e:
        run_config_from_dict(raw)
    return str(e.value)


@pytest.mark.parametrize("section, key, value, expected", [
    ("model", "n_caps", "four", "model.n_caps: must be an integer, got 'four'"),
    ("model", "n_caps", True, "model.n_caps: must be an integer, got True"),
    ("model", "n_caps", 4.5, "model.n_caps: must be an integer, got 4.5"),
    ("model", "n_caps", 0, "model.n_caps: must be >= 1, got 0"),
    ("model", "image_shape", [3, 28], "model.image_shape: must be three positive sizes [C, H, W], got [3, 28]"),
    ("train", "lr", True, "train.lr: must be a number, got True"),
    ("train", "lr", -1, "train.lr: must be > 0, got -1.0"),
    ("train", "mu_lr", 0, "train.mu_lr: must be > 0, got 0.0"),
    ("train", "optimizer", "rmsprop", "train.optimizer: must be one of sgd, adam, got 'rmsprop'"),
    ("train", "cuda_graph", 1, "train.cuda_graph: must be true or false, got 1"),
    ("data", "transforms", "rotation", "data.transforms: must be a list, got 'rotation'"),
    ("data", "transforms", ["rotation", 5], "data.transforms[1]: must be a string, got 5"),
    ("data", "path", 5, "data.path: must be a string, got 5"),
])
def test_a_wrong_value_is_one_line_naming_the_field(section, key, value, expected):
    assert refused({section: {key: value}}) == expected


def test_unknown_keys_and_sections_name_what_is_allowed():
    assert refused({"model": {"colour": 1}}).startswith("model.colour: unknown key; allowed: variant, n_caps, cap_dim")
    assert refused({"foo": {}}) == "foo: unknown section; allowed: data, model, train"
    assert refused({"data": [1]}) == "data: must be a mapping of keys to values, got [1]"
    assert refused([]) == "config: must be a mapping with sections data, model, train"


def test_the_first_wrong_key_as_given_is_the_one_named():
    assert refused({"model": {"colour": 1, "n_caps": "x"}}).startswith("model.colour: unknown key")
    assert refused({"model": {"n_caps": "x", "colour": 1}}) == "model.n_caps: must be an integer, got 'x'"
    assert refused({"model": {"n_caps": 0, "cap_dim": "x"}}) == "model.cap_dim: must be an integer, got 'x'"


def test_numbers_take_integers_and_integers_take_whole_floats():
    run = run_config_from_dict({"train": {"lr": 1, "momentum": 0}, "model": {"n_caps": 4.0}})
    assert run.train.lr == 1.0 and isinstance(run.train.lr, float) and isinstance(run.train.momentum, float)
    assert run.model.n_caps == 4 and isinstance(run.model.n_caps, int)


def test_the_constructors_refuse_with_a_config_error():
    with pytest.raises(ConfigError, match="^data.transforms: 'x' is not a mnist5k transform"):
        DataConfig(transforms=["x"])
    with pytest.raises(ConfigError, match="^model.n_caps: must be >= 1, got 0$"):
        ModelConfig(n_caps=0)
    with pytest.raises(ConfigError, match="^train.colour: unknown key"):
        TrainConfig(colour=1)
    with pytest.raises(ConfigError, match="^model.seq_len: transforming sequences need seq_len >= 2"):
        RunConfig(model=ModelConfig(variant="vae", seq_len=1))
    assert ModelConfig(variant="tvae", n_caps=2, cap_dim=4).latent_dim == 8


def test_the_image_shape_follows_the_data_unless_given():
    gray = {"data": {"grayscale": True, "transforms": ["rotation"]}}
    assert run_config_from_dict(gray).model.image_shape == (1, 28, 28)
    assert run_config_from_dict({**gray, "model": {"image_shape": [1, 28, 28]}}).model.image_shape == (1, 28, 28)
    assert refused({**gray, "model": {"image_shape": [3, 28, 28]}}) == \
        "model.image_shape: must match the data ([1, 28, 28] for data.dataset mnist5k), got [3, 28, 28]"


def test_to_dict_gives_back_the_full_config_in_field_order():
    raw = tiny_raw()
    out = run_config_from_dict(raw).to_dict()
    assert list(out) == ["data", "model", "train"] and list(out["model"])[:3] == ["variant", "n_caps", "cap_dim"]
    for section, values in raw.items():
        assert {k: out[section][k] for k in values} == values
    assert out["model"]["image_shape"] == [3, 28, 28]
    assert run_config_from_dict(out).to_dict() == out


def test_a_spec_parses_its_sections_once_with_the_same_messages():
    spec = spec_from_dict(spec_raw())
    assert spec.run is spec.run and spec.run.model.n_caps == spec.model["n_caps"]
    assert spec.model_copy(update={"name": "x"}).run is spec.run
    raw = spec_raw()
    raw["model"]["n_caps"] = "four"
    with pytest.raises(ConfigError, match="^model.n_caps: must be an integer, got 'four'$"):
        spec_from_dict(raw)


def test_the_sections_share_the_specs_strict_base():
    for section in (DataConfig, ModelConfig, TrainConfig, RunConfig):
        assert issubclass(section, Schema) and section.model_config["extra"] == "forbid"
    with pytest.raises(ConfigError, match=r"^train.epochs: must be an integer, got True$"):
        TrainConfig.parse({"epochs": True})


def test_a_setting_is_the_option_else_the_environment_else_the_file_else_the_default(monkeypatch):
    setting = Setting("--thing", "TVAE_SWEEP_TEST_THING", "spec.thing")
    monkeypatch.delenv("TVAE_SWEEP_TEST_THING", raising=False)
    assert setting.pick(None, None, "d") == ("d", "the default")
    assert setting.pick(None, "f", "d") == ("f", "spec.thing")
    monkeypatch.setenv("TVAE_SWEEP_TEST_THING", "e")
    assert setting.pick(None, "f", "d") == ("e", "TVAE_SWEEP_TEST_THING")
    assert setting.pick("o", "f", "d") == ("o", "--thing")
    monkeypatch.setenv("TVAE_SWEEP_TEST_THING", "")  # an empty variable is no setting
    assert setting.pick(None, "", "d", "built in") == ("d", "built in")


def test_the_results_folder_tracking_uri_ray_address_and_profile_follow_that_order(tmp_path, monkeypatch):
    for name in ("TVAE_SWEEP_RESULTS", "MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    assert results_root(None) == Path("results").absolute()
    assert resolve(None, None, tmp_path).source == "the default store under the results folder"
    assert ray_address(None)[0] is None
    assert resolve(None, "sqlite:///spec.db", tmp_path).source == "tracking.uri"
    monkeypatch.setenv("TVAE_SWEEP_RESULTS", str(tmp_path / "env"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    monkeypatch.setenv("RAY_ADDRESS", "env:6379")
    assert results_root(None) == tmp_path / "env"
    assert (resolve(None, "sqlite:///spec.db", tmp_path).uri, ray_address(None)) == \
        ("http://env:5000", ("env:6379", "RAY_ADDRESS"))
    assert results_root(tmp_path / "option") == tmp_path / "option"
    assert resolve("http://option:5000", "sqlite:///spec.db", tmp_path).source == "--tracking-uri"
    assert ray_address("option:6379") == ("option:6379", "--address")
    profiles = {"profiles": {"first": {"train.epochs": 1}, "second": {"train.epochs": 2}}}
    assert select_profile(profiles)["profile"] == "first"
    assert select_profile({**profiles, "profile": "second"})["profile"] == "second"
    assert select_profile({**profiles, "profile": "second"}, "first")["profile"] == "first"
