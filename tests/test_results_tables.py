"""results/: the README's numbers against the reference runs, and the table scripts that print them."""

import math

import numpy as np
import pandas as pd
import pytest
from check_readme import (
    BESIDE,
    SPREAD,
    aggregate_rows,
    beside_values,
    comparisons,
    config_seeds,
    printed,
    seed_spreads,
    stated,
    unfounded,
)
from check_readme import main as check_readme
from paired_table import paired
from preset_table import models_table
from readme_tables import cell

from tvae_sweep.tracking.stats import interval


def test_every_number_the_results_readme_states_with_its_spread_is_one_the_reference_runs_give(capsys):
    code = check_readme()
    out = capsys.readouterr().out
    assert code == 0, out
    assert int(out.splitlines()[-1].split()[0]) > 550, out  # the check read the README's numbers, not none


def test_an_interval_off_by_one_digit_or_the_wrong_way_round_is_caught():
    group = pd.DataFrame({"group": ["a"], "metric": ["kl_z"], "mean": [5.04], "ci_low": [4.27], "ci_high": [5.80]})
    compared = pd.DataFrame({"metric": ["log_likelihood"], "diff": [-5.36], "ci_low": [-8.31], "ci_high": [-2.44]})
    known = aggregate_rows(group, "ci_low", "ci_high") + comparisons(compared)
    text = ("kl_z 5.04 [4.27, 5.80] and 5.0 [4.3, 5.8]\n"     # as printed, and rounded further
            "mu 3 costs 5.4 [2.4, 8.3] nats, -5.4 [-8.3, -2.4]\n"  # a difference either way round
            "kl_z 5.05 [4.27, 5.80]\n"                        # one digit off
            "kl_z -5.04 [-5.80, -4.27]\n"                     # a group's mean has no other way round
            "-5.4 [-8.3, -2.5]")                              # a bound off
    assert [line for line, _ in unfounded(text, known)] == [3, 4, 5]


def two_configs(tmp_path):
    """The means and sds over seeds 0 and 1 of mu 30 and mu 3 (likelihood, its value at initialisation)."""
    pd.DataFrame([{"state": "TERMINATED", "config/model.mu_init": mu, "config/train.seed": s,
                   "final/log_likelihood": ll, "final/log_likelihood_init": ll - 100.0, "final/mean_image_nll": 400.0}
                  for mu, s, ll in [(30.0, 0, -350.0), (30.0, 1, -360.0), (3.0, 0, -300.0), (3.0, 1, -300.0)]]) \
        .to_parquet(tmp_path / "trials.parquet")
    return config_seeds(tmp_path / "trials.parquet")


def test_a_mean_and_sd_is_found_over_a_configs_seeds_and_a_wrong_one_is_not(tmp_path):
    known = seed_spreads(*two_configs(tmp_path))
    sd = float(np.std([-350.0, -360.0], ddof=1))
    text = (f"| -355.0 ± {sd:.1f} | 45 ± {sd:.0f} | -300 ± 0 |\n"  # a metric, above the mean image, mu 3
            f"| -355.0 ± {sd + 0.1:.1f} | -330.0 ± 34.6 |")       # sd off; a number no config gives
    assert [line for line, _ in unfounded(text, known, SPREAD)] == [2, 2]


def test_a_table_cells_value_beside_it_is_its_init_or_sd_and_nothing_else(tmp_path):
    means, stds = two_configs(tmp_path)
    known = seed_spreads(means, stds) + beside_values(means)
    text = ("| mu 30 | -355.0 (-455.0) | -355.0 ± 7.1 (-455.0) |\n"  # at initialisation
            "| mu 30 | -355.0 (7.1) | -300 (-400) |\n"               # the sd; mu 3 at initialisation
            "| mu 30 | -355.0 (-456.0) | -355.0 (-400.0) |\n"        # neither; another config's init
            "mu 30 reaches -355.0 (-456.0) in prose")                # not a table cell: not read
    assert [line for line, _ in unfounded(text, known, BESIDE)] == [3, 3]


def test_numbers_are_read_as_written():
    assert stated("a | -0.009 [-0.047, 0.029] | +2.8 [-5.1, 10.8] |\n12 [3, 4]") == [
        (1, ("-0.009", "-0.047", "0.029")), (1, ("+2.8", "-5.1", "10.8"))]
    assert stated("-376.9 ± 32.4, 8 ± 7 and ±24 nats", SPREAD) == [(1, ("-376.9", "32.4")), (1, ("8", "7"))]
    assert stated("| 13,270 (13,271) | 0.577 (0.598) | -34.4 ± 18.2 (0.0) | L=1/2 (0.348) |", BESIDE) == [
        (1, ("13,270", "13,271")), (1, ("0.577", "0.598")), (1, ("-34.4", "0.0"))]


def test_a_readme_command_prints_what_the_script_prints():
    out = printed("results/paired_table.py results/reference/paper_table1_curve paper_model tvae_L13_36")
    assert "| tvae_L13_36_mu3 | 3 | -5.4 [-8.3, -2.4] |" in out


# ---------------------------------------------------------------- the table scripts


def one_seed_per_trial(rows: list[tuple[str, int, int, float]]) -> pd.DataFrame:
    """Trials of a preset sweep: (model, window the preset sets, seed, log-likelihood)."""
    return pd.DataFrame([{"state": "TERMINATED", "config/paper_model": m, "config/model.coherence_window": w,
                          "config/train.seed": s, "final/log_likelihood": ll} for m, w, s, ll in rows])


def replicated(rows: list[tuple[float, int, list[float]]]) -> pd.DataFrame:
    """Replicated trials: (mu, K, log-likelihood of seeds 0, 1, 2)."""
    return pd.DataFrame([{"state": "TERMINATED", "config/model.mu_init": mu, "config/model.n_off_diag": k,
                          "final/log_likelihood": float(np.mean(lls)),
                          **{f"final/log_likelihood_seed{s}": v for s, v in enumerate(lls)}} for mu, k, lls in rows])


def test_paired_reads_both_layouts_of_a_sweep_and_one_without_a_seed_column():
    flat = one_seed_per_trial([("vae", 18, 0, -300.0), ("vae", 18, 1, -310.0), ("tvae", 13, 0, -305.0),
                               ("tvae", 13, 1, -313.0)])
    low, high = interval([-5.0, -3.0])
    assert paired(flat, "paper_model", "vae", {"log_likelihood": 1}).iloc[0]["log_likelihood"] == \
        f"-4.0 [{low:.1f}, {high:.1f}]"
    one_seed = one_seed_per_trial([("vae", 18, 0, -300.0), ("tvae", 13, 0, -305.0)]).drop(columns="config/train.seed")
    assert paired(one_seed, "paper_model", "vae", {"log_likelihood": 1})[["n", "log_likelihood"]].values.tolist() == \
        [[1, "-5.0"]]
    long = replicated([(30.0, 1, [-290.0, -291.0, -292.0]), (3.0, 1, [-280.0, -281.0, -282.0])])
    assert paired(long, "model.mu_init", "30.0", {"log_likelihood": 1})[["n", "log_likelihood"]].values.tolist() == \
        [[3, "10.0 [10.0, 10.0]"]]


def test_paired_differences_are_taken_seed_by_seed_within_the_other_keys():
    frame = replicated([(30.0, 0, [-290.0, -300.0, -310.0]), (3.0, 0, [-295.0, -303.0, -314.0]),
                        (30.0, 1, [-280.0, -280.0, -280.0]), (3.0, 1, [-200.0, -200.0, -200.0])])
    table = paired(frame, "model.mu_init", "30.0", {"log_likelihood": 1}).set_index("model.n_off_diag")
    low, high = interval([-5.0, -3.0, -4.0])
    assert table.loc[0, "log_likelihood"] == f"-4.0 [{low:.1f}, {high:.1f}]"  # not the K = 1 trials' 80
    assert table.loc[1, "log_likelihood"] == "80.0 [80.0, 80.0]"
    assert list(table["n"]) == [3, 3]


def test_a_presets_own_settings_are_not_held_equal_and_unpaired_seeds_drop_out():
    frame = one_seed_per_trial([("paper", 13, 0, -320.0), ("paper", 13, 1, -330.0), ("paper", 13, 2, -325.0),
                                ("bubble", 5, 0, -310.0), ("bubble", 5, 1, -321.0)])  # seed 2 did not finish
    row = paired(frame, "paper_model", "paper", {"log_likelihood": 1}).iloc[0]
    assert (row["paper_model"], row["n"]) == ("bubble", 2)
    low, high = interval([10.0, 9.0])
    assert row["log_likelihood"] == f"9.5 [{low:.1f}, {high:.1f}]"


def test_trials_that_share_no_seed_with_the_baseline_pair_with_nothing():
    frame = one_seed_per_trial([("paper", 13, 0, -320.0), ("bubble", 5, 1, -310.0)])
    assert paired(frame, "paper_model", "paper").empty


def test_paired_names_a_missing_key_or_baseline():
    frame = one_seed_per_trial([("paper", 13, 0, -320.0)])
    with pytest.raises(SystemExit, match="no searched key model.shift"):
        paired(frame, "model.shift", "1")
    with pytest.raises(SystemExit, match="no finished trial has paper_model = vae"):
        paired(frame, "paper_model", "vae")


def test_a_cell_is_the_mean_with_its_interval_and_a_column_without_the_metric_is_left_out():
    assert cell(np.array([1.0, 2.0, math.nan, 3.0]), 2) == "2.00 [{:.2f}, {:.2f}]".format(*interval([1.0, 2.0, 3.0]))
    assert cell(np.array([4.0]), 1) == "4.0"
    assert cell(np.array([math.nan]), 1) == ""
    table = models_table(one_seed_per_trial([("vae", 18, 0, -300.0), ("vae", 18, 1, -310.0)]), "paper_model")
    assert list(table.columns) == ["model", "n", "log p(x)"]  # no kl_z, ratio or agreement columns
