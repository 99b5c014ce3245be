"""Which searched keys matter: each objective's parameter importance (Optuna's fANOVA) over a sweep's
finished trials, and the front's hypervolume beside it in the aggregates and the report, from
hand-made trials tables."""
import json
import re

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from helpers import tiny_raw

from tvae_sweep.sweep.layout import SweepDir
from tvae_sweep.sweep.results import front_hypervolume
from tvae_sweep.sweep.validation import spec_from_dict
from tvae_sweep.tracking import publish, report
from tvae_sweep.tracking.figures import importance_figure
from tvae_sweep.tracking.importance import COLUMNS, MIN_TRIALS, importance_metrics, param_importance

METRICS, MODES = ["log_likelihood", "equivariance_ratio"], ["max", "min"]
SPACE = {"model.n_caps": {"type": "categorical", "values": [2, 3, 4]},
         "train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
         "model.shift": {"type": "int", "low": 0, "high": 2, "when": {"model.n_caps": [3, 4]}},
         "model.coherence_window": {"type": "categorical", "values": [1, 3]}}


def spec(space=None, **search):
    raw = tiny_raw()
    raw["space"] = space or SPACE
    raw["search"] = {"algorithm": "random", "metric": METRICS, "mode": MODES, "num_trials": 12,
                     "scheduler": "fifo", "seed": 0, **search}
    return spec_from_dict(raw)


def sweep(n: int = 12, seed: int = 0) -> pd.DataFrame:
    """n finished trials: n_caps drives the likelihood, lr the ratio; shift is sampled only for 3 and
    4 capsules, and every trial has the same coherence window."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        caps, lr = [2, 3, 4][i % 3], float(10 ** rng.uniform(-4, -2))
        rows.append({"trial_id": f"t{i}", "state": "TERMINATED", "config/model.n_caps": caps,
                     "config/train.lr": lr, "config/model.shift": i % 3 if caps != 2 else np.nan,
                     "config/model.coherence_window": 3,
                     "final/log_likelihood": -100.0 - 10 * caps + rng.normal(),
                     "final/equivariance_ratio": 100 * lr + 0.01 * rng.normal()})
    return pd.DataFrame(rows)


def ranking(table: pd.DataFrame, objective: str) -> list[str]:
    return table[table["objective"] == objective]["param"].tolist()


def test_the_key_that_drives_an_objective_ranks_first_and_the_noise_last():
    result = param_importance(sweep(), spec())
    table = result.table
    assert list(table.columns) == COLUMNS and set(table["evaluator"]) == {"fANOVA"} and set(table["trials"]) == {12}
    assert ranking(table, "log_likelihood") == ["model.n_caps", "train.lr"]
    assert ranking(table, "equivariance_ratio") == ["train.lr", "model.n_caps"]
    for objective in METRICS:
        shares = table[table["objective"] == objective]["importance"]
        assert shares.sum() == pytest.approx(1.0) and shares.iloc[0] > 0.8
    assert result.notes == [
        "model.shift is not in every finished trial (a `when` condition): fANOVA leaves it out",
        "model.coherence_window has the same value in every finished trial: nothing to assess"]
    assert importance_metrics(table)["importance.log_likelihood.model.n_caps"] == table["importance"].iloc[0]


def test_the_same_sweep_gives_the_same_table_and_unfinished_trials_change_nothing():
    frame = sweep()
    first = param_importance(frame, spec()).table
    pd.testing.assert_frame_equal(param_importance(frame, spec()).table, first)  # seeded by search.seed
    others = frame.head(3).assign(trial_id=["r", "e", "d"], state=["RUNNING", "ERROR", "TERMINATED"],
                                  **{"final/log_likelihood": [5.0, 5.0, np.nan]})  # running, failed, diverged
    unfinished = pd.concat([frame, others])
    pd.testing.assert_frame_equal(param_importance(unfinished, spec()).table, first)


def test_a_new_driver_changes_the_ranking():
    frame = sweep()
    frame["final/log_likelihood"] = -1000 * frame["config/train.lr"]  # now the learning rate drives it
    assert ranking(param_importance(frame, spec()).table, "log_likelihood")[0] == "train.lr"


def test_too_few_trials_or_nothing_that_varies_is_a_sentence():
    few = param_importance(sweep(MIN_TRIALS - 1), spec())
    assert few.table.empty and list(few.table.columns) == COLUMNS
    assert few.notes == [f"parameter importance needs {MIN_TRIALS} finished trials with every objective; "
                         f"there are {MIN_TRIALS - 1}"]
    flat = sweep().assign(**{"final/equivariance_ratio": 0.5})
    result = param_importance(flat, spec())
    assert set(result.table["objective"]) == {"log_likelihood"}
    assert "equivariance_ratio is the same in every finished trial: nothing to apportion" in result.notes
    fixed = param_importance(sweep(), spec({"model.coherence_window": SPACE["model.coherence_window"]}))
    assert fixed.table.empty and fixed.notes == [
        "model.coherence_window has the same value in every finished trial: nothing to assess"]


def test_a_preset_and_a_single_objective():
    presets = {"type": "preset", "values": {"vae": {"model.variant": "vae"}, "tvae": {"model.shift": 1}}}
    frame = sweep().assign(**{"config/paper_model": ["vae", "tvae"] * 6})
    frame["final/log_likelihood"] = np.where(frame["config/paper_model"] == "vae", -200.0, -100.0)
    frame["final/log_likelihood"] += frame["config/train.lr"]  # a little noise from the learning rate
    one = spec({"paper_model": presets, "train.lr": SPACE["train.lr"]}, metric="log_likelihood", mode="max")
    table = param_importance(frame, one).table
    assert ranking(table, "log_likelihood") == ["paper_model", "train.lr"] and table["importance"].iloc[0] > 0.9


def test_the_aggregates_and_the_report_show_the_importance_and_the_front(tmp_path):
    frame, sweep_spec = sweep(), spec()
    folder = SweepDir(tmp_path / "s")
    result = publish.compute(frame, sweep_spec, folder)
    written = tmp_path / "s" / "aggregates" / "importance.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(written), result.importance.table)
    assert json.loads(pq.read_schema(written).metadata[publish.NOTES_KEY]) == result.importance.notes
    assert "importance.png" in result.figures and result.figures["importance.png"].is_file()
    value, reference = front_hypervolume(frame, METRICS, MODES)
    assert result.hypervolume["value"] == pytest.approx(value) and result.hypervolume["reference"] == reference
    assert publish.front_metrics(result) == {"front_hypervolume": pytest.approx(value)}

    text, markdown = report.render("s", frame, sweep_spec, result, None)
    markdown = re.sub(" +", " ", markdown)
    line = next(x for x in markdown.splitlines() if x.startswith("- Pareto front of"))
    assert line.startswith("- Pareto front of log_likelihood (max), equivariance_ratio (min): ")
    assert f"hypervolume {value:.4g} (reference log_likelihood {reference[0]:.4g}, equivariance_ratio " \
           f"{reference[1]:.4g}: the worst finished values)" in line
    assert "## Which searched keys matter" in markdown and "(aggregates/importance.png)" in markdown
    top = result.importance.table.iloc[0]
    assert f"| log_likelihood | model.n_caps | {top['importance']:.3f} |" in markdown
    assert "- model.shift is not in every finished trial" in markdown
    assert "which searched keys matter" in text and "hypervolume" in text


def test_before_the_figures_no_importance_and_a_single_objective_no_front(tmp_path):
    one = spec(metric="log_likelihood", mode="max")
    result = publish.compute(sweep(), one, SweepDir(tmp_path / "s"), figures=False)
    assert result.importance is None and result.hypervolume is None and publish.front_metrics(result) == {}
    assert not (tmp_path / "s" / "aggregates" / "importance.parquet").exists()
    _, markdown = report.render("s", sweep(), one, result, None)
    assert "Pareto front" not in markdown and "Which searched keys matter" not in markdown
    few = publish.compute(sweep(3), one, SweepDir(tmp_path / "few"))
    assert "importance.png" not in few.figures and importance_figure(few.importance.table) is None
    _, markdown = report.render("few", sweep(3), one, few, None)
    assert f"- parameter importance needs {MIN_TRIALS} finished trials with every objective; there are 3" in markdown
