"""Sweep specs: what is accepted, what is refused (exit 2, one line naming the field), how spaces sample."""

from pathlib import Path

import optuna
import pytest
import yaml
from click.testing import CliRunner
from helpers import spec_raw

from tvae_sweep.cli import main
from tvae_sweep.config import ConfigError, Schema
from tvae_sweep.sweep.searcher import OptunaSearch
from tvae_sweep.sweep.space import define_by_run, grid_points, make_sampler, num_trials, trial_run_config
from tvae_sweep.sweep.spec import (
    ParamSpec,
    ResourcesSpec,
    SearchSpec,
    StorageSpec,
    SweepSpec,
    TrackingSpec,
    select_profile,
)
from tvae_sweep.sweep.validation import load_spec, spec_from_dict


def sample(spec, n, seed=0):
    study = optuna.create_study(sampler=make_sampler(spec), direction="maximize")
    dbr = define_by_run(spec)
    return [dbr(study.ask()) for _ in range(n)]


def test_sampled_configs_lie_in_the_space_and_satisfy_the_conditions():
    spec = spec_from_dict(spec_raw())
    for config in sample(spec, 40):
        assert config["model.seq_len"] == config["model.cap_dim"]
        assert 1 <= config["model.coherence_window"] <= config["model.seq_len"]
        assert ("model.shift" in config) == (config["model.variant"] == "tvae")
        assert 1e-5 <= config["train.lr"] <= 3e-3
        trial_run_config(spec.base_dict(), config)  # valid by construction


@pytest.mark.parametrize("metric, mode", [
    (["log_likelihood", "roll_gain"], ["max", "max"]),
    (["log_likelihood", "equivariance_ratio_learned"], ["max", "min"]),
    ("roll_gain_learned", "max"),
    ("kl_z", "max"),
])
def test_any_reported_metric_or_learned_difference_can_be_the_objective(metric, mode):
    raw = spec_raw()
    raw["search"].update(metric=metric, mode=mode, scheduler="asha")  # ASHA stops on one objective or several
    raw["space"].pop("model.variant")  # kl_u and the rest: every trial a TVAE
    raw["space"]["model.shift"].pop("when")
    spec = spec_from_dict(raw)
    assert spec.search.metrics == ([metric] if isinstance(metric, str) else metric)


def test_the_same_seed_samples_the_same_configs():
    spec = spec_from_dict(spec_raw())
    assert sample(spec, 12) == sample(spec, 12)
    other = spec_from_dict(spec_raw(search={**spec_raw()["search"], "seed": 1}))
    assert sample(other, 12) != sample(spec, 12)


@pytest.mark.parametrize("algorithm", ["tpe", "gp", "cmaes", "random"])
def test_every_algorithm_samples_valid_configs(algorithm):
    raw = spec_raw()
    raw["search"]["algorithm"] = algorithm
    spec = spec_from_dict(raw)
    assert len(sample(spec, 6)) == 6


def test_a_grid_of_presets_and_seeds_runs_every_point_once():
    raw = spec_raw(space={
        "preset": {"type": "preset", "values": {
            "vae": {"model.variant": "vae"},
            "bubble": {"model.coherence_window": 3, "model.shift": 0},
            "tvae": {"model.coherence_window": 5, "model.shift": 1},
        }},
        "train.seed": {"type": "categorical", "values": [0, 1]},
    })
    raw["search"]["algorithm"] = "grid"
    spec = spec_from_dict(raw)
    assert num_trials(spec) == 6
    assert grid_points(spec.space) == {"preset": ["vae", "bubble", "tvae"], "train.seed": [0, 1]}
    configs = sample(spec, 6)
    assert sorted((c["train.seed"], c.get("model.variant", "tvae"), c.get("model.coherence_window", 3))
                  for c in configs) == sorted((s, v, w) for s in (0, 1) for v, w in
                                              (("vae", 3), ("tvae", 3), ("tvae", 5)))


def test_warm_start_points_are_checked():
    raw = spec_raw()
    raw["search"]["warm_start"] = [{"model.variant": "tvae", "model.cap_dim": 4, "model.coherence_window": 9}]
    with pytest.raises(ConfigError, match="warm_start"):
        spec_from_dict(raw)


def test_set_reaches_the_search_and_resources_keys(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_raw()))
    result = CliRunner().invoke(main, [
        "validate", str(path), "--set", "search.num_trials=7", "--set", "search.max_concurrent=3",
        "--set", "search.seed=5", "--set", "search.metric=equivariance_ratio", "--set", "search.mode=min",
        "--set", "search.algorithm=random", "--set", "search.scheduler=asha",
        "--set", "resources.cpus_per_trial=0.5", "--set", "resources.gpus_per_trial=0.25"])
    assert result.exit_code == 0, result.output
    assert "7 trials" in result.output and "random with asha" in result.output
    assert "equivariance_ratio (min)" in result.output


# each broken spec: (change to the valid spec, text the one-line error must contain)
BROKEN = [
    (lambda r: r.update(colour=1), "colour: unknown key"),
    (lambda r: r["search"].update(algorithm="bayes"), "search.algorithm"),
    (lambda r: r["train"].update(cuda_graph=True, device="auto"), "train.cuda_graph: trials run on the CPU"),
    (lambda r: r["search"].update(scheduler="hyperband"), "search.scheduler"),
    (lambda r: r["search"].update(num_trials=0), "search.num_trials"),
    (lambda r: r["search"].update(num_trials="many"), "search.num_trials"),
    (lambda r: r["search"].update(metric="accuracy"), "search.metric"),
    (lambda r: r["search"].update(metric=["log_likelihood", "equivariance_ratio"], mode="max"), "search.mode"),
    (lambda r: r["search"].update(metric=["log_likelihood", "equivariance_ratio"], mode=["max", "min"],
                                  scheduler="pbt", algorithm="random"),
     "search.scheduler: pbt ranks trials by one metric"),
    (lambda r: r["search"].update(pruner="median"), "search.pruner: unknown key"),
    (lambda r: r["resources"].update(cpus_per_trial=0), "resources.cpus_per_trial"),
    (lambda r: r["resources"].update(gpus_per_trial=1.5), "resources.gpus_per_trial"),
    (lambda r: r["space"].update({"model.n_caps": {"type": "int", "low": 8, "high": 2}}), "empty range"),
    (lambda r: r["space"].update({"model.n_caps": {"type": "int", "low": 1}}), "needs low and high"),
    (lambda r: r["space"].update({"model.n_caps": {"type": "integer", "low": 1, "high": 2}}),
     "space.model.n_caps.type: must be one of int, float, categorical, preset, got 'integer'"),
    (lambda r: r["space"].update({"model.n_caps": {"type": "int", "low": 1, "high": 2, "steps": 1}}),
     "space.model.n_caps.steps: unknown key"),
    (lambda r: r["space"].update({"model.colour": {"type": "int", "low": 1, "high": 2}}), "space.model.colour"),
    (lambda r: r["space"].update({"model.shift": {"type": "int", "low": 0, "high": 1, "when": {"model.kind": ["a"]}}}),
     "model.kind"),
    (lambda r: r["space"].update({"model.coherence_window": {"type": "int", "low": 1, "high": 9}}), "impossible"),
    (lambda r: r["search"].update(num_trials=True), "search.num_trials: must be an integer, got True"),
    (lambda r: r["search"].update(max_concurrent=1.5), "search.max_concurrent: must be an integer, got 1.5"),
    (lambda r: r["resources"].update(reuse_actors="no"), "resources.reuse_actors: must be true or false, got 'no'"),
    (lambda r: r.update(tracking={"experiment": 7}), "tracking.experiment: must be a string, got 7"),
    (lambda r: r["space"].update({"train.lr": {"type": "float", "low": 0, "high": 1, "log": True}}), "log range"),
    (lambda r: r["space"].update({"model.variant": {"type": "categorical", "values": []}}), "non-empty"),
    (lambda r: r["space"].update({"model.variant": {"type": "categorical", "values": ["vae", "bubble"]}}),
     "model.variant"),
    (lambda r: r["space"].update({"model.seq_len": {"same_as": "model.seq_len"}}), "cycle"),
    (lambda r: r["model"].update(coherence_window=0), "model.coherence_window"),
    (lambda r: r["data"].update(dataset="cifar"), "data.dataset"),
    (lambda r: r["train"].update(optimizer="lbfgs"), "train.optimizer"),
    (lambda r: r["search"].update(algorithm="grid"), "grid"),
    (lambda r: r["search"].update(scheduler="pbt"), "search.algorithm: pbt"),
    (lambda r: r["search"].update(scheduler="pbt", algorithm="random"), "search.mutate"),
    (lambda r: r["search"].update(scheduler="pbt", algorithm="random", mutate=["model.cap_dim"]),
     "changes the network"),
    (lambda r: r["search"].update(mutate=["train.lr"]), "only the pbt scheduler"),
]


@pytest.mark.parametrize("change,expected", BROKEN, ids=[b[1] for b in BROKEN])
def test_a_broken_spec_is_refused_with_one_line_naming_the_field(tmp_path, change, expected):
    raw = spec_raw()
    change(raw)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    for command in (["validate", str(path)], ["launch", str(path), "--results-dir", str(tmp_path / "results")]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "results").exists()  # nothing started


def test_the_spec_models_share_the_configs_strict_base():
    """Unknown keys refused by pydantic itself (extra="forbid"), strict types, one-line errors."""
    for model in (SweepSpec, ParamSpec, SearchSpec, ResourcesSpec, TrackingSpec, StorageSpec):
        assert issubclass(model, Schema) and model.model_config["extra"] == "forbid", model
    with pytest.raises(ConfigError, match=r"^search.num_trials: must be an integer, got True$"):
        SweepSpec.parse({"search": {"num_trials": True}})
    with pytest.raises(ConfigError, match=r"^search.colour: unknown key; allowed: algorithm, metric, mode, "):
        SweepSpec.parse({"search": {"colour": "blue"}})
    assert SweepSpec.parse({"search": {"num_trials": 3.0, "reduction_factor": 3}}).search.reduction_factor == 3.0


def test_yaml_syntax_errors_and_missing_files_are_one_line(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("search: {algorithm: tpe\nspace: [")
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2 and "YAML syntax error at line" in result.output
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "no such file" in result.output


def test_shipped_specs_are_valid():
    specs = sorted(Path(__file__).parent.parent.joinpath("search_spaces").glob("*.yaml"))
    assert {p.name for p in specs} >= {"capsules.yaml", "smoke.yaml"}
    for path in specs:
        result = CliRunner().invoke(main, ["validate", str(path)])
        assert result.exit_code == 0, (path, result.output)


def test_a_failed_trial_counts_as_the_worst_value_seen():
    spec = spec_from_dict(spec_raw())
    search = OptunaSearch(space=define_by_run(spec), metric="log_likelihood", mode="max",
                          sampler=make_sampler(spec))
    for trial_id in ("a", "b", "c"):
        search.suggest(trial_id)
    search.on_trial_complete("a", result={"log_likelihood": -300.0})
    search.on_trial_complete("b", result={"log_likelihood": -900.0})
    search.on_trial_complete("c", error=True)  # diverged
    values = {t.number: t.value for t in search._ot_study.get_trials()}
    assert values == {0: -300.0, 1: -900.0, 2: -900.0}
    search.on_trial_result("a", {"log_likelihood": -1.0, "training_iteration": 3})  # finished: ignored


def profiled_spec(tmp_path):
    raw = spec_raw()
    raw["profiles"] = {"small": {"train.epochs": 1, "search.max_concurrent": 1},
                       "large": {"name": "large_run", "train.epochs": 3, "resources.cpus_per_trial": 2}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_a_profile_sets_its_values_and_set_overrides_win(tmp_path):
    path = profiled_spec(tmp_path)
    default = load_spec(path)
    assert default.profile == "small" and default.train["epochs"] == 1 and default.search.max_concurrent == 1
    large = load_spec(path, profile="large")
    assert (large.profile, large.name, large.train["epochs"], large.resources.cpus_per_trial) == \
        ("large", "large_run", 3, 2)
    assert load_spec(path, ["train.epochs=5"], profile="large").train["epochs"] == 5
    raw = yaml.safe_load(path.read_text())
    raw["profile"] = "large"  # the spec's own choice of default
    assert spec_from_dict(select_profile(raw)).train["epochs"] == 3


def test_profile_errors_are_one_line(tmp_path):
    path = profiled_spec(tmp_path)
    result = CliRunner().invoke(main, ["validate", str(path), "--profile", "huge"])
    assert result.exit_code == 2
    assert result.output.strip() == "tvae-sweep: error: profile 'huge': no such profile; the spec has: small, large"
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(spec_raw()))
    result = CliRunner().invoke(main, ["validate", str(plain), "--profile", "small"])
    assert result.exit_code == 2 and "has no profiles section" in result.output
    with pytest.raises(ConfigError, match="profiles: must map"):
        select_profile({"profiles": {"small": 3}})


def test_shipped_paper_specs_have_a_cpu_and_a_full_profile():
    for name in ("paper_table1", "paper_table2", "paper_2d"):
        path = f"search_spaces/{name}.yaml"
        cpu, full = load_spec(path, profile="cpu"), load_spec(path, profile="full")
        assert num_trials(cpu) == num_trials(full) and len(cpu.space["train.seed"].values) >= 3
        assert cpu.run.data.dataset == "mnist5k" or name == "paper_table2"
        assert full.run.train.optimizer == "sgd" and full.run.train.lr == 1e-4
        assert full.run.train.epochs == (250 if name == "paper_2d" else 100)
        assert full.resources.gpus_per_trial > 0 and cpu.resources.gpus_per_trial == 0
        assert full.name == f"{name}_full" and cpu.name == name
