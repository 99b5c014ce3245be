"""Aggregates over seeds: the recorded preset, 95% intervals, paired comparisons with a baseline, Holm."""

import math

import optuna
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from helpers import spec_raw

from tvae_sweep.cli import main
from tvae_sweep.config import ConfigError
from tvae_sweep.sweep.space import define_by_run
from tvae_sweep.sweep.validation import spec_from_dict
from tvae_sweep.tracking import report
from tvae_sweep.tracking.aggregate import axis_table, wide_table
from tvae_sweep.tracking.compare import comparisons
from tvae_sweep.tracking.figures import axes_figure
from tvae_sweep.tracking.stats import holm, interval, paired, verdict

# one preset's settings a subset of the other's: the old inference put every mu_lr trial under paper
REMEDY = {"type": "preset", "values": {"paper": {"model.mu_init": 30.0},
                                       "mu_lr": {"model.mu_init": 30.0, "train.mu_lr": 0.1}}}


def remedy_spec(baseline: str | None = "paper", seeds=(0, 1, 2), **search):
    raw = spec_raw(space={"remedy": REMEDY, "train.seed": {"type": "categorical", "values": list(seeds)}})
    raw["search"].update(algorithm="grid", scheduler="fifo", **search)
    if baseline is not None:
        raw["baseline"] = baseline
    return spec_from_dict(raw)


def trials(rows):
    return pd.DataFrame([{"trial_id": f"t{i}", "state": "TERMINATED", **row} for i, row in enumerate(rows)])


def test_the_define_by_run_space_records_the_sampled_presets_name():
    spec = remedy_spec()
    config = define_by_run(spec)(optuna.trial.FixedTrial({"remedy": "mu_lr", "train.seed": 1}))
    assert config == {"remedy": "mu_lr", "model.mu_init": 30.0, "train.mu_lr": 0.1, "train.seed": 1}
    assert define_by_run(spec)(optuna.trial.FixedTrial({"remedy": "paper", "train.seed": 0}))["remedy"] == "paper"
    raw = spec_raw(space={"model.remedy": REMEDY})  # a dotted preset key would land in the model's config
    with pytest.raises(ConfigError, match=r"^space.model.remedy: a preset key is a name of its own.*model_remedy$"):
        spec_from_dict(raw)


def test_a_trials_preset_is_the_recorded_name_not_the_first_whose_settings_it_contains():
    frame = trials([{"config/remedy": name, "config/model.mu_init": 30.0, "config/train.mu_lr": lr,
                     "final/log_likelihood": -100.0 - i}
                    for i, (name, lr) in enumerate([("paper", None), ("mu_lr", 0.1), ("mu_lr", 0.1)])])
    table = axis_table(frame, "remedy", remedy_spec().space["remedy"])
    assert table.set_index("remedy")["count"].to_dict() == {"mu_lr": 2, "paper": 1}
    assert table.set_index("remedy")["mean"].to_dict() == {"mu_lr": -101.5, "paper": -100.0}


def test_a_means_interval_is_student_t_over_its_seeds_and_absent_for_one():
    low, high = interval([1.0, 2.0, 3.0, 4.0])  # mean 2.5, sem 0.6455, t(0.975, 3) = 3.1824
    assert (low, high) == pytest.approx((0.445740, 4.554260), abs=1e-6)
    assert all(math.isnan(v) for v in interval([7.0]))
    frame = trials([{"config/remedy": "paper", "final/log_likelihood": v} for v in (1.0, 2.0, 3.0, 4.0)]
                   + [{"config/remedy": "mu_lr", "final/log_likelihood": 5.0}])
    table = axis_table(frame, "remedy", remedy_spec().space["remedy"]).set_index("remedy")
    assert table.loc["paper", ["ci_low", "ci_high"]].tolist() == pytest.approx([0.445740, 4.554260], abs=1e-6)
    assert math.isnan(table.loc["mu_lr", "ci_low"]) and table.loc["mu_lr", "count"] == 1
    wide = wide_table(table.reset_index(), "remedy", ["paper", "mu_lr"])
    assert list(wide.columns) == ["remedy", "log_likelihood_mean", "log_likelihood_std", "log_likelihood_ci_low",
                                  "log_likelihood_ci_high", "count"]
    assert report.ci(math.nan, math.nan) == "none (n = 1)" and report.ci(0.5, 4.5) == "[0.5, 4.5]"


def test_a_model_without_a_metric_has_an_empty_cell_not_one_seeds_interval():
    """The VAE has no u: its kl_u cell is empty, while a model with one seed says it has no interval."""
    frame = trials([{"config/remedy": "paper", "final/log_likelihood": v, "final/kl_u": 2.0 * v} for v in (1.0, 3.0)]
                   + [{"config/remedy": "mu_lr", "final/log_likelihood": 5.0}])
    table = axis_table(frame, "remedy", remedy_spec().space["remedy"])
    lines = report.wide_markdown(wide_table(table, "remedy", ["paper", "mu_lr"]), "remedy").splitlines()
    mu_lr = [cell.strip() for cell in lines[-1].split("|")[1:-1]]
    assert mu_lr == ["mu_lr", "5 ± - none (n = 1)", "-", "1"]
    assert "4 ± 2.828" in lines[-2]  # paper's kl_u: 2 and 6


def test_a_learned_value_is_called_learned_only_where_its_interval_excludes_zero():
    row = pd.Series({"m_learned_mean": -0.1, "m_learned_std": 0.2, "m_learned_ci_low": -0.6, "m_learned_ci_high": 0.4})
    assert report.learned(row, "m_learned").endswith("not resolved from 0")
    row.update({"m_learned_ci_high": -0.01})
    assert report.learned(row, "m_learned").startswith("learned -0.1")


def test_a_paired_difference_its_interval_and_t_test():
    result = paired([3.0, 5.0, 4.0], [1.0, 2.0, 2.0])  # differences 2, 3, 2: t = 7 on 2 degrees of freedom
    assert result.n == 3 and result.diff == pytest.approx(7 / 3)
    assert (result.ci_low, result.ci_high) == pytest.approx((7 / 3 - 4.302653 / 3, 7 / 3 + 4.302653 / 3), abs=1e-6)
    assert result.p == pytest.approx(1 - 7 / math.sqrt(51))  # two-sided p of t on 2 df: 1 - t / sqrt(t^2 + 2)
    one = paired([3.0], [1.0])
    assert one.n == 1 and one.diff == 2 and math.isnan(one.p) and math.isnan(one.ci_low)


def test_holms_step_down_on_known_p_values():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    corrected = holm([math.nan, 0.01, 0.04])  # a missing p-value is not counted in m
    assert math.isnan(corrected[0]) and corrected[1:] == pytest.approx([0.02, 0.04])
    assert verdict(-2.0, 0.01, "min") == "lower (better)" and verdict(-2.0, 0.01, "max") == "lower (worse)"
    assert verdict(5.0, 0.06, "max") == "no resolvable difference"


def test_comparisons_pair_each_preset_with_the_baseline_by_seed():
    rows = []
    for seed, (paper, mu_lr) in enumerate([(-100.0, -97.0), (-110.0, -108.0), (-90.0, -88.0)]):
        rows.append({"config/remedy": "paper", "config/train.seed": seed, "final/log_likelihood": paper,
                     "final/equivariance_ratio": 0.5})
        rows.append({"config/remedy": "mu_lr", "config/train.seed": seed, "final/log_likelihood": mu_lr,
                     "final/equivariance_ratio": 0.5 + 0.01 * seed})
    rows.append({"config/remedy": "mu_lr", "config/train.seed": 9, "final/log_likelihood": 0.0})  # no partner
    table = comparisons(trials(rows)[::-1], remedy_spec()).set_index("metric")
    assert list(table.columns[:3]) == ["model", "baseline", "n"]
    ll = table.loc["log_likelihood"]
    assert (ll["model"], ll["baseline"], ll["n"]) == ("mu_lr", "paper", 3)
    assert ll["diff"] == pytest.approx(7 / 3)  # differences 3, 2, 2
    assert ll["p"] == pytest.approx(1 - 7 / math.sqrt(51))
    assert ll["p_holm"] == pytest.approx(min(1, 2 * ll["p"]))  # two comparisons in the report
    ratio = table.loc["equivariance_ratio"]
    assert ratio["p_holm"] >= ratio["p"] and ratio["diff"] == pytest.approx(0.01)
    assert ll["verdict"] == "higher (better)"  # p_holm 0.0396
    assert ratio["verdict"] == "no resolvable difference"  # differences 0, 0.01, 0.02: p 0.23


def test_comparisons_read_a_replicated_trials_seeds():
    frame = trials([{"config/remedy": "paper", "final/log_likelihood": -100.0,
                     "final/log_likelihood_seed0": -101.0, "final/log_likelihood_seed1": -99.0},
                    {"config/remedy": "mu_lr", "final/log_likelihood": -97.0,
                     "final/log_likelihood_seed0": -99.0, "final/log_likelihood_seed1": -95.0}])
    table = comparisons(frame, remedy_spec())
    assert table[["metric", "n", "diff"]].values.tolist() == [["log_likelihood", 2, 3.0]]  # 2 and 4
    assert comparisons(frame, remedy_spec(baseline=None)).empty


def test_the_metrics_by_axis_figure_shows_the_objectives_first_and_each_metric_once():
    """A replicated trial reports each metric's seeds, spread, value at initialisation and what
    training added: the figure has a row per metric (the objectives first) and what training added,
    not a row per seed (a 3-seed sweep of 18 trials had 228 rows and took 86 s to draw)."""
    row = {"config/remedy": "paper"}
    for metric in ("log_likelihood", "kl_z", "equivariance_ratio"):
        row.update({f"final/{metric}{suffix}": -1.0 for suffix in ("", "_std", "_seed0", "_seed1")})
    row.update({"final/equivariance_ratio_init": 0.5, "final/equivariance_ratio_learned": 0.1})
    spec = remedy_spec(metric="equivariance_ratio", mode="min")
    fig = axes_figure(trials([row, {**row, "config/remedy": "mu_lr"}]), spec)
    rows = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert rows == ["equivariance_ratio", "log_likelihood", "kl_z", "equivariance_ratio_learned"]


def test_the_metrics_by_axis_figure_draws_the_summarys_metrics_and_any_objective_not_the_rest():
    row = {"config/remedy": "paper", "final/log_likelihood": -300.0, "final/active_units_z": 3.0,
           "final/equivariance_error": 50.0, "final/equivariance_error_init": 40.0,
           "final/equivariance_error_learned": 10.0, "final/roll_gain": 2.0, "final/roll_gain_init": 1.0,
           "final/roll_gain_learned": 1.0, "final/roll_nll": 400.0}
    spec = remedy_spec(metric="active_units_z", mode="max")  # an objective outside the summary
    fig = axes_figure(trials([row, {**row, "config/remedy": "mu_lr"}]), spec)
    rows = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert rows == ["active_units_z", "log_likelihood", "roll_gain", "roll_gain_learned"]


def test_an_unknown_baseline_is_refused_with_one_line(tmp_path):
    raw = spec_raw(space={"remedy": REMEDY})
    raw["search"].update(algorithm="grid", scheduler="fifo")
    for baseline, expected in (("vae", "baseline: 'vae' is not a preset; the space's presets: paper, mu_lr"),
                               (3, "baseline: must be a string")):
        raw["baseline"] = baseline
        path = tmp_path / "spec.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        result = CliRunner().invoke(main, ["validate", str(path)])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], result.output
    raw["space"] = {"train.seed": {"type": "categorical", "values": [0, 1]}}
    raw["baseline"] = "paper"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2 and "baseline: needs a preset key in space" in result.output
