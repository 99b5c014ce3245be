"""Learning curves (aggregates/curves.parquet): each metric at every evaluated epoch, per group of
trials that differ only by seed, from constructed trial histories."""

import math
import types
from pathlib import Path

import pandas as pd
import pytest
from helpers import spec_raw

from tvae_sweep.evaluation import evaluation_due
from tvae_sweep.sweep.fusion import MEMBERS, PARAMS, POINTS
from tvae_sweep.sweep.records import TERMINATED, histories_of, records_of
from tvae_sweep.sweep.space import num_trials
from tvae_sweep.sweep.validation import load_spec, spec_from_dict
from tvae_sweep.tracking import report
from tvae_sweep.tracking.curves import COLUMNS, curve_table, headline, shown_epochs
from tvae_sweep.tracking.figures import curves_figure
from tvae_sweep.tracking.stats import interval

MODELS = {"type": "preset", "values": {"vae": {"model.variant": "vae"}, "tvae": {"model.shift": 1}}}


def preset_spec(epochs=3, eval_every=1, seeds=(0, 1, 2)):
    raw = spec_raw(space={"model_name": MODELS, "train.seed": {"type": "categorical", "values": list(seeds)}})
    raw["search"].update(algorithm="grid", scheduler="fifo")
    raw["train"].update(epochs=epochs, eval_every=eval_every)
    return spec_from_dict(raw)


def trials(rows):
    return pd.DataFrame([{"trial_id": f"t{i}", "state": TERMINATED, **row} for i, row in enumerate(rows)])


def history(values: dict[int, dict]) -> list[dict]:
    """Reports of the epochs given, {epoch: metrics}."""
    return [{"epoch": epoch, **metrics} for epoch, metrics in values.items()]


def at(table: pd.DataFrame, group: str, metric: str) -> pd.DataFrame:
    return table[(table["group"] == group) & (table["metric"] == metric)].set_index("epoch")


def test_a_curve_moves_with_the_epochs_and_identical_seeds_have_no_spread():
    frame = trials([{"config/model_name": name, "config/train.seed": seed} for name in ("vae", "tvae")
                    for seed in (0, 1)])
    ll = {"vae": [-200.0, -150.0, -100.0], "tvae": [-210.0, -140.0, -90.0]}
    histories = {row["trial_id"]: history({e + 1: {"log_likelihood": ll[row["config/model_name"]][e]
                                                   + (row["config/train.seed"] if row["config/model_name"] == "tvae"
                                                      else 0.0), "train_loss": 5.0} for e in range(3)})
                 for _, row in frame.iterrows()}
    table = curve_table(frame, preset_spec(), histories)
    assert list(table.columns) == COLUMNS
    assert list(dict.fromkeys(table["group"])) == ["vae", "tvae"]  # the spec's order
    assert set(table["metric"]) == {"log_likelihood"}  # the training loss is left out, as in every aggregate
    vae = at(table, "vae", "log_likelihood")
    assert vae["mean"].tolist() == [-200.0, -150.0, -100.0]  # it moves
    assert vae["n"].tolist() == [2, 2, 2] and vae["std"].tolist() == [0.0, 0.0, 0.0]
    assert vae["ci_low"].tolist() == vae["mean"].tolist() == vae["ci_high"].tolist()
    tvae = at(table, "tvae", "log_likelihood")  # seeds 0 and 1: one nat apart
    assert tvae["mean"].tolist() == [-209.5, -139.5, -89.5] and tvae["std"].iloc[0] == pytest.approx(math.sqrt(0.5))
    assert (tvae.loc[1, "ci_low"], tvae.loc[1, "ci_high"]) == pytest.approx(interval([-210.0, -209.0]))


def test_a_metric_evaluated_every_k_epochs_appears_only_at_those_epochs():
    """Ray's reports carry an evaluated metric on to the epochs after it; a `tvae-sweep train`
    history (collect) has it only where it was measured. Both give the evaluated epochs alone:
    every second one, and the last."""
    spec = preset_spec(epochs=5, eval_every=2, seeds=(0,))
    frame = trials([{"config/model_name": "vae", "config/train.seed": 0},
                    {"config/model_name": "tvae", "config/train.seed": 0}])
    carried, measured = [], []
    for epoch in range(1, 6):
        due = epoch in (2, 4, 5)
        last = max((e for e in (2, 4, 5) if e <= epoch), default=None)  # the last evaluated, carried on
        carried.append({"epoch": epoch, "train_loss": 9.0 - epoch, **({"kl_z": float(2 * last)} if last else {})})
        measured.append({"epoch": epoch, "train_loss": 9.0 - epoch, **({"kl_z": float(2 * epoch)} if due else {})})
    table = curve_table(frame, spec, {"t0": carried, "t1": measured})
    for group in ("vae", "tvae"):
        curve = at(table, group, "kl_z")
        assert curve.index.tolist() == [2, 4, 5] and curve["mean"].tolist() == [4.0, 8.0, 10.0]
    assert set(table["epoch"]) == {2, 4, 5}


def test_a_replicated_trials_seeds_count_as_seeds_and_one_seed_has_no_interval():
    frame = trials([{"config/model_name": "vae"}, {"config/model_name": "tvae"}])
    per_seed = {"t0": [-101.0, -99.0, -103.0], "t1": [-90.0, -80.0, -70.0]}
    histories = {trial: history({1: {"log_likelihood": sum(v) / 3, "log_likelihood_std": 2.0,
                                     **{f"log_likelihood_seed{s}": x for s, x in enumerate(v)}}})
                 for trial, v in per_seed.items()}
    table = curve_table(frame, preset_spec(epochs=1), histories)
    assert set(table["metric"]) == {"log_likelihood"}  # a spread and the seeds' values are no curves of their own
    tvae = at(table, "tvae", "log_likelihood").loc[1]
    assert (tvae["n"], tvae["mean"], tvae["std"]) == (3, -80.0, 10.0)
    assert (tvae["ci_low"], tvae["ci_high"]) == pytest.approx(interval([-90.0, -80.0, -70.0]))

    single = curve_table(frame.iloc[:1], preset_spec(epochs=1), {"t0": history({1: {"log_likelihood": -100.0}})})
    row = single.iloc[0]
    assert row["n"] == 1 and all(math.isnan(row[c]) for c in ("std", "ci_low", "ci_high"))
    assert report.curve_cell(row) == "-100 none (n = 1)"


def test_a_spec_without_presets_groups_by_its_searched_values_and_a_failed_trial_is_left_out():
    raw = spec_raw(space={"model.variant": {"type": "categorical", "values": ["vae", "tvae"]},
                          "train.seed": {"type": "categorical", "values": [0, 1]}})
    raw["train"].update(epochs=1)
    frame = trials([{"config/model.variant": v, "config/train.seed": s} for v in ("vae", "tvae") for s in (0, 1)]
                   + [{"config/model.variant": "vae", "config/train.seed": 2}])
    frame.loc[4, "state"] = "ERROR"
    histories = {f"t{i}": history({1: {"kl_z": float(i)}}) for i in range(5)}
    table = curve_table(frame, spec_from_dict(raw), histories).set_index("group")
    assert table["n"].to_dict() == {"model.variant=vae": 2, "model.variant=tvae": 2}
    assert table["mean"].to_dict() == {"model.variant=vae": 0.5, "model.variant=tvae": 2.5}


def test_the_saved_reports_of_a_fused_trial_are_each_points_history():
    """Ray's saved results (one row per report, the points' under `members`) become each point's
    history, and histories_of gives them by trial id."""
    config = {POINTS: [{"model.shift": s} for s in (0, 1)], PARAMS: [{"shift": s} for s in (0, 1)]}
    reports = pd.DataFrame([{"epoch": e, "training_iteration": e, "time_total_s": 1.0 * e,
                             MEMBERS: [{"epoch": e, "log_likelihood": -100.0 + e, "best": {"log_likelihood": 0.0}},
                                       {"epoch": e, "log_likelihood": -200.0 + e}]} for e in (1, 2)])
    trial = types.SimpleNamespace(trial_id="f", status=TERMINATED, config=config, last_result={}, path="/nowhere",
                                  checkpoint=None, num_failures=0)
    p0, p1 = records_of([trial], histories={"f": reports})
    assert p0.history == ({"epoch": 1, "log_likelihood": -99.0}, {"epoch": 2, "log_likelihood": -98.0})
    assert [r["log_likelihood"] for r in p1.history] == [-199.0, -198.0]
    assert histories_of([p0, p1]) == {"f_p0": p0.history, "f_p1": p1.history}
    live, = records_of([types.SimpleNamespace(**{**vars(trial), "config": {}})])
    assert live.history == ()  # a live hook's record reads no history


def test_the_epochs_shown_are_those_nearest_to_5_10_20_40_80_and_the_last():
    assert shown_epochs(range(5, 81, 5)) == [5, 10, 20, 40, 80]
    assert shown_epochs(range(2, 31, 2)) == [4, 10, 20, 30]
    assert shown_epochs([1, 2, 3]) == [1, 2, 3] and shown_epochs(range(1, 101)) == [5, 10, 20, 40, 80, 100]
    assert shown_epochs([]) == []


def test_the_report_section_and_the_figure_show_the_headline_metrics():
    frame = trials([{"config/model_name": name, "config/train.seed": seed} for name in ("vae", "tvae")
                    for seed in (0, 1)])
    histories = {f"t{i}": history({e: {"log_likelihood": -100.0 + e + i % 2, "kl_z": 1.0 * e, "mean_image_nll": 7.0}
                                   for e in range(1, 4)}) for i in range(4)}
    table = curve_table(frame, preset_spec(), histories)
    assert headline(table) == ["log_likelihood", "kl_z"] and headline(None) == []
    md = "\n".join(report.curves_markdown(table, {"curves.png": "x"}))
    assert "## Learning curves" in md and "### log_likelihood" in md and "### kl_z" in md
    assert "mean_image_nll" not in md  # every metric is in the parquet; the report shows the headline ones
    assert "| vae " in md and "epoch 3" in md and "(n = 2)" in md and "![Learning curves](aggregates/curves.png)" in md
    assert report.curves_markdown(None, {}) == []
    figure = curves_figure(table, headline(table))
    assert [ax.get_title() for ax in figure.axes] == ["log_likelihood", "kl_z"]
    assert curves_figure(table.iloc[0:0], []) is None


def test_the_curve_profile_evaluates_the_epochs_the_report_shows():
    spec = load_spec(Path(__file__).parents[1] / "search_spaces" / "paper_table1.yaml", profile="curve")
    train = spec.run.train
    evaluated = [e for e in range(1, train.epochs + 1) if evaluation_due(e, train)]
    assert shown_epochs(evaluated) == [5, 10, 20, 40, 80] and spec.name == "paper_table1_curve"
    assert list(spec.space["paper_model"].values) == ["vae", "bubble", "tvae_L13_36", "tvae_L13_36_mu10",
                                                      "tvae_L13_36_mu3"]
    assert num_trials(spec) == 15 and spec.search.max_concurrent == 2 and spec.resources.cpus_per_trial == 1
