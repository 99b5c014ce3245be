import json

import pytest
import torch
import yaml
from click.testing import CliRunner
from helpers import tiny_raw

from tvae_sweep.cli import main
from tvae_sweep.config import ConfigError
from tvae_sweep.images import forecast_rows
from tvae_sweep.seeding import fixed_rng
from tvae_sweep.training import DivergenceError, Trainer


def test_loss_falls_on_the_embedded_digits(tiny_config):
    cfg = tiny_config(train={"epochs": 1, "lr": 3e-3}, data={"train_sequences": 64})
    trainer = Trainer(cfg)
    losses = []
    trainer.train_epoch(on_step=lambda step, loss: losses.append(loss))
    assert len(losses) == 16
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4


def test_evaluation_reports_every_metric_and_is_repeatable(tiny_config):
    # the capsule correlation needs each sequence's canonical frame in view: a full cycle of 18
    trainer = Trainer(tiny_config(model={"n_caps": 2, "cap_dim": 18, "seq_len": 18, "coherence_window": 5},
                                  data={"test_sequences": 24}))
    first, second = trainer.evaluate(), trainer.evaluate()
    for key in ("loss", "log_likelihood", "equivariance_error", "equivariance_ratio", "roll_nll",
                "roll_nll_gap", "capsule_correlation", "equivariance_error_at_mean", "equivariance_ratio_at_mean",
                "equivariance_ratio_input_free", "roll_gain_reversed"):
        assert key in first
    assert first == second  # the fixed test set and its own seeded RNG


def test_every_training_seed_is_scored_on_the_same_test_set(tiny_config):
    members = [tiny_config(train={"seed": seed}) for seed in (0, 1000)]
    trainer = Trainer(members)
    one, other = (data.test_set() for data in trainer.data)
    assert torch.equal(one.x, other.x) and torch.equal(one.label, other.label)
    moved = Trainer(tiny_config(data={"test_seed": 1})).data[0].test_set()
    assert not torch.equal(one.x, moved.x)


def test_resume_from_checkpoint_reproduces_the_uninterrupted_run(tiny_config, tmp_path):
    cfg = tiny_config(train={"epochs": 3, "eval_every": 2})
    straight = Trainer(cfg)
    history = [result for (result,) in straight.epochs()]  # one member: one result an epoch
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert "log_likelihood" in history[1] and "log_likelihood" in history[2] and "log_likelihood" not in history[0]

    first = Trainer(cfg)
    it = first.epochs()
    next(it)
    first.save_checkpoint(tmp_path)
    resumed = Trainer(cfg)
    resumed.load_checkpoint(tmp_path)
    rest = [result for (result,) in resumed.epochs()]

    def strip(hs):
        return [{k: v for k, v in h.items() if not k.endswith("time_s")} for h in hs]

    assert strip(resumed.history) == strip(history)
    assert [h["epoch"] for h in rest] == [2, 3]
    assert resumed.init_metrics == straight.init_metrics and "equivariance_ratio" in straight.init_metrics[0]
    assert rest[-1]["equivariance_ratio_init"] == history[-1]["equivariance_ratio_init"]
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_the_init_metrics_are_measured_once_before_training_and_kept_by_the_checkpoint(tiny_config, tmp_path):
    cfg = tiny_config(train={"epochs": 2})
    fresh = Trainer(cfg)
    measured = fresh.evaluate(likelihood=False)  # the untrained model, as measure_init sees it
    (first,) = next(fresh.epochs())
    for name in ("equivariance_error", "equivariance_ratio", "roll_nll_gap", "roll_gain", "equivariance_error_at_mean",
                 "equivariance_ratio_at_mean", "equivariance_ratio_input_free", "roll_gain_reversed"):
        assert first[f"{name}_init"] == measured[name]
        assert first[f"{name}_learned"] == pytest.approx(first[name] - measured[name])
    assert "log_likelihood_init" not in first and "kl_z_init" not in first
    fresh.save_checkpoint(tmp_path)

    resumed = Trainer(cfg)
    resumed.load_checkpoint(tmp_path)
    resumed.evaluate = lambda m=0, likelihood=True: pytest.fail("measured again") if not likelihood else {}
    resumed.measure_init()
    assert resumed.init_metrics == fresh.init_metrics


def test_a_single_runs_checkpoint_keeps_its_layout(tiny_config, tmp_path):
    """state.pt at the top, nn.Linear's weights (out, in) and a scalar mu: checkpoints of single runs
    written before the model held members load, and this one loads in their place."""
    trainer = Trainer(tiny_config(train={"epochs": 1}))
    list(trainer.epochs())
    trainer.save_checkpoint(tmp_path)
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    cfg = trainer.cfg.model
    pixels, d = 3 * 28 * 28, cfg.latent_dim
    assert state["model"]["z_encoder.net.0.weight"].shape == torch.nn.Linear(pixels, 3 * d).weight.shape
    assert state["model"]["decoder.net.4.bias"].shape == (pixels,) and state["model"]["mu"].shape == ()
    adam = state["optimizer"]["state"]  # by parameter: mu first (the model's own), then the layers'
    assert adam[0]["exp_avg"].shape == () and adam[1]["exp_avg"].shape == (3 * d, pixels)
    assert not (tmp_path / "failed.json").exists()


def test_a_corrupt_checkpoint_is_refused_with_its_path(tiny_config, tmp_path):
    (tmp_path / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="state.pt"):
        Trainer(tiny_config()).load_checkpoint(tmp_path)


def test_a_diverging_run_stops_with_the_epoch(tiny_config):
    trainer = Trainer(tiny_config(train={"lr": 1e30, "optimizer": "sgd"}))
    with pytest.raises(DivergenceError, match="non-finite loss at epoch 1"):
        list(trainer.epochs())


@pytest.mark.parametrize("variant,extra", [
    ("vae", {}),
    ("tvae", {"shift": 0, "coherence_window": 1}),
    ("tvae", {"coherence_window": 4, "shift": 2}),
])
def test_every_variant_trains_and_evaluates(tiny_config, variant, extra):
    trainer = Trainer(tiny_config(model={"variant": variant, **extra}, train={"epochs": 1}))
    ((metrics,),) = list(trainer.epochs())
    assert metrics["log_likelihood"] < 0 and metrics["equivariance_error"] > 0


def test_tvae2d_trains_on_static_grayscale_digits(tiny_config):
    cfg = tiny_config(data={"transforms": [], "grayscale": True},
                      model={"variant": "tvae2d", "n_caps": 1, "cap_dim": 16, "seq_len": 1, "torus_window": 3},
                      train={"epochs": 1})
    ((metrics,),) = list(Trainer(cfg).epochs())
    assert metrics["log_likelihood"] < 0
    assert "equivariance_error" not in metrics  # no time axis, no equivariance


def write_config(tmp_path, **sections):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_raw(**sections)))
    return path


def test_train_command_writes_config_metrics_checkpoint_and_traversal(tmp_path):
    config = write_config(tmp_path)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(config), "--output", str(out), "--set", "train.epochs=1"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1]
    assert metrics["final"]["log_likelihood"] == metrics["epochs"][-1]["log_likelihood"]
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["train"]["epochs"] == 1 and resolved["model"]["image_shape"] == [3, 28, 28]
    assert (out / "checkpoint" / "state.pt").is_file()
    assert (out / "traversal.png").read_bytes()[:4] == b"\x89PNG"

    # the same config into the same folder resumes: two more epochs, not three
    result = CliRunner().invoke(main, ["train", str(config), "--output", str(out), "--set", "train.epochs=3"])
    assert result.exit_code == 2 and "another config" in result.output  # a different config is refused
    result = CliRunner().invoke(main, ["train", str(config), "--output", str(out), "--set", "train.epochs=1"])
    assert result.exit_code == 0
    assert [e["epoch"] for e in json.loads((out / "metrics.json").read_text())["epochs"]] == [1]


def test_tvae2d_run_draws_its_topographic_map(tmp_path):
    config = write_config(tmp_path, data={"transforms": [], "grayscale": True},
                          model={"variant": "tvae2d", "n_caps": 1, "cap_dim": 16, "seq_len": 1, "torus_window": 3})
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(config), "--output", str(out), "--set", "train.epochs=1"])
    assert result.exit_code == 0, result.output
    assert (out / "topographic_map.png").is_file()
    assert not (out / "forecast.png").exists()  # no time axis, nothing to forecast
    final = json.loads((out / "metrics.json").read_text())["final"]
    assert 0 <= final["topographic_agreement"] <= 1 and 0 < final["topographic_agreement_chance"] <= 1


def test_forecast_decodes_unseen_frames_from_the_seen_ones_only(tiny_config):
    trainer = Trainer(tiny_config(train={"epochs": 1}))
    x = trainer.data[0].test_set().x[:2]
    seen = 3
    rows = forecast_rows(trainer.model, x, seen)
    assert len(rows) == 4 and rows[1].shape == x[0].shape
    changed = x.clone()
    changed[:, seen:] = torch.rand_like(changed[:, seen:])  # frames the encoder must not see
    again = forecast_rows(trainer.model, changed, seen)
    assert torch.equal(again[1], rows[1]) and torch.equal(again[3], rows[3])
    assert not torch.equal(again[0], rows[0])  # the true frames row does show them
    # the unseen frames are the last seen frame's capsules rolled one step per frame
    with fixed_rng(x.device, 0):
        forecast_latent = trainer.model.sample_latent(x[:, :seen])
    t = torch.roll(forecast_latent[:, -1], trainer.model.metric_shift * 2, dims=-1)
    expected = torch.sigmoid(trainer.model.decode(t[:, None]))[0, 0]
    assert torch.allclose(rows[1][seen + 1], expected, atol=1e-6)


def test_a_sequence_run_draws_its_forecast(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(write_config(tmp_path)), "--output", str(out),
                                       "--set", "train.epochs=1"])
    assert result.exit_code == 0, result.output
    assert (out / "forecast.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / "topographic_map.png").exists()


@pytest.mark.parametrize("override,field", [
    ("model.variant=bubble", "model.variant"),
    ("model.coherence_window=9", "model.coherence_window"),
    ("train.lr=-1", "train.lr"),
    ("train.epochs=two", "train.epochs"),
    ("model.colour=1", "model.colour"),
    ("data.dataset=cifar", "data.dataset"),
    ("train.device=tpu", "train.device"),
    ("data.transforms=[spin]", "data.transforms"),
])
def test_bad_config_exits_2_with_one_line_naming_the_field(tmp_path, override, field):
    config = write_config(tmp_path)
    result = CliRunner().invoke(main, ["train", str(config), "--output", str(tmp_path / "run"), "--set", override])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.strip().splitlines() if ln]
    assert len(lines) == 1 and field in lines[0], result.output
    assert not (tmp_path / "run").exists()


def test_cuda_graphs_are_refused_without_a_gpu(tiny_config):
    with pytest.raises(ConfigError, match="train.cuda_graph"):
        tiny_config(train={"cuda_graph": True, "device": "cpu"})
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="needs a CUDA device"):
            Trainer(tiny_config(train={"cuda_graph": True, "device": "auto"}))


def test_mu_learns_at_its_own_rate_when_given_one(tiny_config, tmp_path):
    moved = {}
    for mu_lr in (None, 0.5):
        trainer = Trainer(tiny_config(train={"epochs": 1, "mu_lr": mu_lr}))
        list(trainer.epochs())
        moved[mu_lr] = abs(float(trainer.model.mu.detach()) - 30.0)
    assert moved[None] < 0.05 < 1.0 < moved[0.5]  # Adam moves each parameter by about its lr per step
    trainer.save_checkpoint(tmp_path)
    resumed = Trainer(tiny_config(train={"epochs": 2, "mu_lr": 0.5}))
    resumed.load_checkpoint(tmp_path)
    assert sorted(g["lr"] for g in resumed.optimizer.param_groups) == [1e-3, 0.5]
