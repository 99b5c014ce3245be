"""Members: several runs of one shape trained as one batched model, each the same run as alone."""
from __future__ import annotations

import json
import statistics

import optuna
import pytest
import torch
import yaml
from click.testing import CliRunner
from helpers import spec_raw, tiny_raw
from optuna.trial import TrialState
from ray.tune.search import Searcher

from tvae_sweep.cli import main
from tvae_sweep.config import ConfigError, run_config_from_dict
from tvae_sweep.model import FusedLinear, build_model
from tvae_sweep.sweep.fusion import MEMBERS, POINTS, costliest_first, fused_groups, ray_trials
from tvae_sweep.sweep.searcher import FusedGridSearch
from tvae_sweep.sweep.space import num_trials, trial_run_config
from tvae_sweep.sweep.trainable import Replicates
from tvae_sweep.sweep.validation import load_spec, spec_from_dict
from tvae_sweep.training import DivergenceError, Trainer, check_members, clip_per_member

TIMES = ("train_time_s", "eval_time_s")


def config(model=None, train=None, **data):
    return run_config_from_dict(tiny_raw(model=model or {}, train=train or {}, data=data))


def assert_same_history(single: list[dict], member: list[dict]) -> None:
    assert len(single) == len(member) >= 1
    for a, b in zip(single, member, strict=True):
        assert set(a) == set(b)
        for key in a:
            if key not in TIMES:
                # float32 sums of ~1e3 nats: differences of two such (roll_nll_gap) agree to ~1e-3
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=2e-3), key


def single_history(cfg) -> list[dict]:
    return [result for (result,) in Trainer(cfg).epochs()]


@pytest.mark.parametrize("members", [
    # seeds, and the values a fused trial may vary: W (window, neighbourhood, shift) and mu's start
    [{}, {"train": {"seed": 1}}, {"model": {"coherence_window": 1, "shift": 0, "mu_init": 3.0}, "train": {"seed": 2}}],
    [{"model": {"variant": "vae"}}, {"model": {"variant": "vae"}, "train": {"seed": 5}}],
    [{"model": {"variant": "tvae2d", "n_caps": 1, "cap_dim": 9, "seq_len": 1, "torus_window": 3}, **s}
     for s in ({"data": {"transforms": []}}, {"data": {"transforms": []}, "train": {"seed": 3}})],
], ids=["tvae", "vae", "tvae2d"])
def test_each_member_is_the_run_of_its_config_alone(members):
    cfgs = [config(m.get("model"), m.get("train"), **m.get("data", {})) for m in members]
    fused = Trainer(cfgs)
    list(fused.epochs())
    for cfg, history in zip(cfgs, fused.histories, strict=True):
        assert_same_history(single_history(cfg), history)


def test_members_match_with_sgd_momentum_mu_lr_and_per_member_clipping():
    train = {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "mu_lr": 0.1, "grad_clip": 5.0}
    cfgs = [config(train={**train, "seed": s}) for s in (0, 1)]
    fused = Trainer(cfgs)
    list(fused.epochs())
    for m, cfg in enumerate(cfgs):
        single = Trainer(cfg)
        list(single.epochs())
        assert_same_history(single.history, fused.histories[m])
        for name, weight in single.model.member_state(0).items():
            torch.testing.assert_close(fused.model.member_state(m)[name], weight, rtol=1e-4, atol=1e-5)


def test_a_member_checkpoint_is_a_single_runs_and_resumes_either_way(tmp_path):
    cfgs = [config(train={"epochs": 3, "seed": s}) for s in (0, 1)]
    dirs = [tmp_path / f"m{s}" for s in (0, 1)]
    fused = Trainer(cfgs)
    next(iter(fused.epochs()))  # one epoch, then stop as a killed process would
    fused.save_checkpoints(dirs)

    # a fresh fused trainer resumes both members to the uninterrupted histories
    resumed = Trainer(cfgs)
    resumed.load_checkpoints(dirs)
    list(resumed.epochs())
    # and a single trainer resumes a member's checkpoint as its own
    single = Trainer(cfgs[1])
    single.load_checkpoint(dirs[1])
    list(single.epochs())
    for m, cfg in enumerate(cfgs):
        assert_same_history(single_history(cfg), resumed.histories[m])
    assert_same_history(single_history(cfgs[1]), single.history)


def test_a_diverging_member_fails_alone_with_the_single_runs_reason():
    blowing_up = {"mu_init": 1e38}  # t overflows at the first step
    with pytest.raises(DivergenceError) as alone:
        list(Trainer(config(blowing_up)).epochs())
    cfgs = [config(), config(blowing_up), config(train={"seed": 4})]
    fused = Trainer(cfgs)
    list(fused.epochs())
    assert fused.errors == [None, str(alone.value), None]
    assert fused.histories[1] == []
    assert_same_history(single_history(cfgs[0]), fused.histories[0])
    assert_same_history(single_history(cfgs[2]), fused.histories[2])


@pytest.mark.parametrize("change, expected", [
    ({"model": {"n_caps": 4}}, "model.n_caps: fused members must share the network's shapes, got 3, 4"),
    ({"model": {"variant": "vae"}}, "model.variant: fused members must share the network's shapes"),
    ({"train": {"lr": 0.5}}, "train.lr: fused members share it, got 0.001, 0.5"),
    ({"data": {"train_sequences": 32}}, "data.train_sequences: fused members share it"),
])
def test_members_put_together_by_hand_must_fit(change, expected):
    other = config(change.get("model"), change.get("train"), **change.get("data", {}))
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.").replace("(", r"\(")):
        Trainer([config(), other])


def test_train_seeds_writes_a_single_runs_folder_per_seed_and_resumes(tmp_path):
    raw = tiny_raw()
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["train", str(path), "-o", str(out), "--seeds", "0,1"])
    assert result.exit_code == 0, result.output
    alone = tmp_path / "alone"
    assert CliRunner().invoke(main, ["train", str(path), "-o", str(alone), "--set", "train.seed=1"]).exit_code == 0
    files = sorted(p.name for p in alone.iterdir())
    for seed in (0, 1):
        folder = out / f"seed_{seed}"
        assert sorted(p.name for p in folder.iterdir()) == files
        assert yaml.safe_load((folder / "config.yaml").read_text())["train"]["seed"] == seed
    assert (out / "seed_1" / "config.yaml").read_text() == (alone / "config.yaml").read_text()
    final = json.loads((out / "seed_1" / "metrics.json").read_text())["final"]
    expected = json.loads((alone / "metrics.json").read_text())["final"]
    assert_same_history([expected], [final])
    assert "log_likelihood" in result.output and "±" in result.output

    # the same command again resumes: nothing retrains, the record is unchanged
    before = (out / "seed_0" / "metrics.json").read_text()
    again = CliRunner().invoke(main, ["train", str(path), "-o", str(out), "--seeds", "0,1"])
    assert again.exit_code == 0, again.output
    assert "epoch 1:" not in again.output
    assert json.loads((out / "seed_0" / "metrics.json").read_text())["epochs"] == json.loads(before)["epochs"]


def test_train_seeds_reports_each_diverged_seed_and_exits_1(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_raw(model={"mu_init": 1e38})))
    result = CliRunner().invoke(main, ["train", str(path), "-o", str(tmp_path / "out"), "--seeds", "0,1"])
    assert result.exit_code == 1
    for seed in (0, 1):
        assert f"tvae-sweep: error: seed_{seed}: non-finite loss at epoch 1" in result.stderr
        record = json.loads((tmp_path / "out" / f"seed_{seed}" / "metrics.json").read_text())
        assert record["error"] == "non-finite loss at epoch 1" and record["epochs"] == []
    # run again, a failed seed stays failed (its record says why) instead of training again
    again = CliRunner().invoke(main, ["train", str(path), "-o", str(tmp_path / "out"), "--seeds", "0,1"])
    assert again.exit_code == 1 and "epoch 1:" not in again.stderr


@pytest.mark.parametrize("seeds, expected", [
    ("", "--seeds '': give one or more integer seeds"),
    ("0,0", "--seeds '0,0': seed 0 is given twice"),
    ("0,x", "--seeds '0,x': seeds must be integers"),
])
def test_bad_seeds_are_one_line_and_write_nothing(tmp_path, seeds, expected):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_raw()))
    result = CliRunner().invoke(main, ["train", str(path), "-o", str(tmp_path / "out"), "--seeds", seeds])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"tvae-sweep: error: {expected}" + lines[0].split(expected, 1)[1]] and len(lines) == 1
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- replicates: one config under K seeds


def test_replicates_report_each_metrics_mean_std_and_every_seeds_value():
    cfg = config(train={"seed": 4})
    replicated = Replicates(cfg, 3)
    list(replicated.trainer.epochs())
    singles = {s: single_history(config(train={"seed": s}))[-1] for s in (4, 5, 6)}
    final = replicated.history[-1]
    for name in ("log_likelihood", "equivariance_ratio_learned", "train_loss"):
        values = [singles[s][name] for s in (4, 5, 6)]
        assert final[name] == pytest.approx(statistics.fmean(values), rel=1e-4, abs=2e-3)
        assert final[f"{name}_std"] == pytest.approx(statistics.stdev(values), rel=1e-3, abs=2e-3)
        for s in (4, 5, 6):
            assert final[f"{name}_seed{s}"] == pytest.approx(singles[s][name], rel=1e-4, abs=2e-3)
    assert final["log_likelihood_std"] > 0  # the seeds differ: a spread that cannot move is no spread


def break_member(replicated: Replicates, m: int) -> None:
    """Makes member m's weights non-finite, as a diverging update would."""
    with torch.no_grad():
        replicated.trainer.model.decoder.net[0].weight[m].fill_(float("nan"))


def test_replicates_go_on_without_a_failed_seed_and_resume_with_it_failed(tmp_path):
    cfg = config(train={"epochs": 3})

    def run(stop_after: int | None = None, resume_from=None) -> Replicates:
        replicated = Replicates(cfg, 3)
        if resume_from is not None:
            replicated.load_checkpoint(resume_from)
        for results in replicated.trainer.epochs():
            epoch = results[0]["epoch"]
            if epoch == 1:
                break_member(replicated, 1)
            replicated.save_checkpoint(tmp_path / f"after_{epoch}")
            if epoch == stop_after:
                break
        return replicated

    whole = run()
    assert whole.trainer.errors == [None, "non-finite loss at epoch 2", None]
    history = whole.history
    assert "log_likelihood_seed1" in history[0] and "log_likelihood_seed1" not in history[-1]
    assert history[-1]["log_likelihood"] == pytest.approx(
        (history[-1]["log_likelihood_seed0"] + history[-1]["log_likelihood_seed2"]) / 2)

    run(stop_after=2)
    resumed = run(resume_from=tmp_path / "after_2")
    assert resumed.trainer.errors == whole.trainer.errors
    assert_same_history(whole.history, resumed.history)


def test_replicates_fail_when_every_seed_has():
    replicated = Replicates(config({"mu_init": 1e38}), 2)
    with pytest.raises(DivergenceError, match="non-finite loss at epoch 1"):
        list(replicated.trainer.epochs())


# ---------------------------------------------------------------- search.fuse: grouping a grid


@pytest.mark.parametrize("profile", ["cpu", "full"])
def test_the_table1_grid_fuses_into_the_vaes_and_the_tvae_family(profile):
    spec = load_spec("search_spaces/paper_table1.yaml", ["search.fuse=true"], profile)
    groups = fused_groups(spec)
    assert ray_trials(spec) == 2 and num_trials(spec) == 18
    presets = [sorted({p.params["paper_model"] for p in group}) for group in groups]
    assert presets == [["vae"], ["bubble", "tvae_L0", "tvae_L13_36", "tvae_L1_2", "tvae_L5_36"]]
    assert [len(g) for g in groups] == [3, 15]
    for group in groups:  # every group trains as one fused model
        check_members([trial_run_config(spec.base_dict(), p.config) for p in group])
    # trained the costliest first: the fifteen TVAE-family points of 18x18 before the three VAEs
    assert [len(g) for g in costliest_first(groups, spec)] == [15, 3]


def test_points_of_other_shapes_or_settings_are_not_fused():
    raw = spec_raw(search={"algorithm": "grid", "scheduler": "fifo", "fuse": True, "metric": "log_likelihood"})
    raw["space"] = {"model.n_caps": {"type": "categorical", "values": [2, 3]},
                    "model.shift": {"type": "categorical", "values": [0, 1]},
                    "train.lr": {"type": "categorical", "values": [1e-3, 1e-2]}}
    groups = fused_groups(spec_from_dict(raw))
    assert [len(g) for g in groups] == [2, 2, 2, 2]  # n_caps x lr; the shifts of each fused
    assert all({p.params["model.shift"] for p in g} == {0, 1} for g in groups)


# ---------------------------------------------------------------- train.precision


def test_bf16_changes_the_training_step_and_leaves_evaluation_in_fp32():
    fp32, bf16 = Trainer(config()), Trainer(config(train={"precision": "bf16"}))
    assert bf16.evaluate() == fp32.evaluate()  # the same weights: evaluation does not depend on it
    a, b = list(fp32.epochs())[-1][0], list(bf16.epochs())[-1][0]
    assert a["train_loss"] != b["train_loss"]  # the step ran in bfloat16
    assert b["log_likelihood"] == pytest.approx(a["log_likelihood"], rel=0.02)


def test_bf16_fused_members_follow_their_single_runs():
    cfgs = [config(train={"precision": "bf16", "seed": s}) for s in (0, 1)]
    fused = Trainer(cfgs)
    list(fused.epochs())
    for cfg, history in zip(cfgs, fused.histories, strict=True):
        assert history[-1]["log_likelihood"] == pytest.approx(single_history(cfg)[-1]["log_likelihood"], rel=0.01)


def test_tf32_is_refused_off_cuda():
    with pytest.raises(ConfigError,
                       match="train.precision: tf32 is a CUDA matrix-product mode: needs train.device cuda"):
        config(train={"precision": "tf32", "device": "cpu"})
    with pytest.raises(ConfigError, match="train.precision: must be one of fp32, tf32, bf16, got 'fp16'"):
        config(train={"precision": "fp16"})
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="tf32 is a CUDA matrix-product mode, and this run is on cpu"):
            Trainer([config(train={"precision": "tf32", "device": "auto"})])


def test_configs_of_one_shape_train_fused_each_into_its_folder(tmp_path):
    paths = []
    for name, model in (("tvae", {}), ("bubble", {"shift": 0}), ("short", {"coherence_window": 1, "mu_init": 3.0})):
        paths.append(tmp_path / f"{name}.yaml")
        paths[-1].write_text(yaml.safe_dump(tiny_raw(model=model)))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["train", *map(str, paths), "-o", str(out)])
    assert result.exit_code == 0, result.output
    for path in paths:
        final = json.loads((out / path.stem / "metrics.json").read_text())["final"]
        alone = single_history(run_config_from_dict(yaml.safe_load(path.read_text())))[-1]
        assert_same_history([alone], [final])


@pytest.mark.parametrize("second, args, expected", [
    ({"model": {"n_caps": 4}}, [], "model.n_caps: fused members must share the network's shapes, got 3, 4"),
    ({"train": {"lr": 0.5}}, [], "train.lr: fused members share it, got 0.001, 0.5"),
    ({}, ["--seeds", "0,1"], "--seeds: trains one config under several seeds, got 2 configs"),
])
def test_configs_that_cannot_be_fused_are_one_line_and_write_nothing(tmp_path, second, args, expected):
    first, other = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(yaml.safe_dump(tiny_raw()))
    other.write_text(yaml.safe_dump(tiny_raw(**second)))
    result = CliRunner().invoke(main, ["train", str(first), str(other), "-o", str(tmp_path / "out"), *args])
    assert result.exit_code == 2
    assert [line for line in result.stderr.splitlines() if line.strip()] == [f"tvae-sweep: error: {expected}"]
    assert not (tmp_path / "out").exists()


def test_the_fused_grid_searcher_suggests_each_group_once_and_records_each_point(tmp_path):
    spec = load_spec("search_spaces/paper_table1.yaml", ["search.fuse=true"])
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    searcher = FusedGridSearch(fused_groups(spec), ["log_likelihood"], ["max"], "t1", storage)
    first = searcher.suggest("a")
    searcher.save(tmp_path / "searcher.json")  # what Tune keeps with the experiment
    again = FusedGridSearch(fused_groups(spec), ["log_likelihood"], ["max"], "t1", storage)
    again.restore(tmp_path / "searcher.json")
    second = again.suggest("b")
    assert again.suggest("c") == Searcher.FINISHED
    assert [len(first[POINTS]), len(second[POINTS])] == [3, 15]
    reports = [{"log_likelihood": -100.0 - i} for i in range(14)] + [{"error": "non-finite loss at epoch 1"}]
    again.on_trial_complete("b", {MEMBERS: reports})
    trials = optuna.load_study(study_name="t1", storage=storage).trials
    assert [t.user_attrs["ray_trial_id"] for t in trials] == [f"b_p{i}" for i in range(15)]
    assert [t.values[0] for t in trials[:14]] == [-100.0 - i for i in range(14)]
    assert trials[14].state == TrialState.FAIL


def affine_grads(layer, x: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward of a FusedLinear through `layer.forward`; returns (input gradient, weight.grad)."""
    x = x.detach().requires_grad_()
    layer(x).backward(grad)
    return x.grad, layer.weight.grad


def test_a_fused_linears_weight_gradient_is_autograds_made_in_its_own_buffer():
    torch.manual_seed(0)
    layer = FusedLinear(3, 5, 4)
    torch.nn.init.normal_(layer.weight)
    torch.nn.init.normal_(layer.bias)
    x, grad = torch.randn(3, 7, 5, dtype=torch.float32), torch.randn(3, 7, 4)
    reference = x.detach().requires_grad_()
    torch.baddbmm(layer.bias.unsqueeze(1), reference, layer.weight).backward(grad)  # autograd's own
    expected_w, expected_b = layer.weight.grad.clone(), layer.bias.grad.clone()
    layer.zero_grad(set_to_none=True)

    grad_x, grad_w = affine_grads(layer, x, grad)
    torch.testing.assert_close(grad_x, reference.grad)
    torch.testing.assert_close(grad_w, expected_w)
    torch.testing.assert_close(layer.bias.grad, expected_b)
    buffer = grad_w.data_ptr()
    # without zero_grad a second backward accumulates, as autograd does
    _, grad_w = affine_grads(layer, x, grad)
    torch.testing.assert_close(grad_w, 2 * expected_w)
    # after zero_grad(set_to_none=True) the next gradient goes into the same memory, newly written
    layer.zero_grad(set_to_none=True)
    _, grad_w = affine_grads(layer, x, 2 * grad)
    assert grad_w.data_ptr() == buffer
    torch.testing.assert_close(grad_w, 2 * expected_w)
    # zeroed in place, it accumulates onto the zeros
    layer.zero_grad(set_to_none=False)
    _, grad_w = affine_grads(layer, x, grad)
    torch.testing.assert_close(grad_w, expected_w)
    # cast, the layer makes a buffer of its new dtype
    layer.double().zero_grad(set_to_none=True)
    _, grad_w = affine_grads(layer, x.double(), grad.double())
    assert grad_w.dtype == torch.float64
    torch.testing.assert_close(grad_w.float(), expected_w)


def test_under_autocast_a_fused_linear_leaves_the_weight_gradient_to_autograd():
    layer = FusedLinear(2, 4, 3)
    torch.nn.init.normal_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(torch.randn(2, 5, 4))
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert layer.grad_buffer is None and layer.weight.grad.dtype == torch.float32


def test_one_members_clipping_is_clip_grad_norm():
    torch.manual_seed(0)
    x = torch.rand(2, 6, 3, 28, 28)
    grads = []
    for clip in (clip_per_member, torch.nn.utils.clip_grad_norm_):
        torch.manual_seed(1)
        model = build_model(config().model)
        model(x).loss.backward()
        clip(list(model.parameters()), 0.5)
        grads.append([p.grad.clone() for p in model.parameters()])
    assert sum(float(g.norm()) ** 2 for g in grads[0]) ** 0.5 == pytest.approx(0.5, rel=1e-4)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)
