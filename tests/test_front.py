"""The front of a sweep of several objectives: its hypervolume, in the summary and in the trials
table's metadata, from hand-made trials tables whose volumes are worked out by hand."""
import json
import math

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tvae_sweep.sweep.results import HYPERVOLUME_KEY, front_hypervolume, hypervolume_metadata, write_table
from tvae_sweep.sweeping import best_lines

METRICS, MODES = ["log_likelihood", "equivariance_ratio_learned"], ["max", "min"]


def table(*rows) -> pd.DataFrame:
    """Trials (id, state, log_likelihood, equivariance_ratio_learned)."""
    return pd.DataFrame([{"trial_id": t, "state": s, "final/log_likelihood": ll, "final/equivariance_ratio_learned": r,
                          "config/model.n_caps": 6} for t, s, ll, r in rows])


# a (-100, 0.5) and b (-110, 0.2) on the front; c (-120, 0.6) behind a; the rest never count
SWEEP = table(("a", "TERMINATED", -100.0, 0.5), ("b", "TERMINATED", -110.0, 0.2), ("c", "TERMINATED", -120.0, 0.6),
              ("running", "RUNNING", -50.0, 0.0), ("failed", "ERROR", -40.0, -1.0),
              ("diverged", "TERMINATED", float("nan"), 0.1))


def test_the_volume_up_to_a_given_reference():
    """As losses (100, 0.5), (110, 0.2) up to (130, 1): boxes of 30 x 0.5 and 20 x 0.8 sharing 20 x 0.5."""
    value, reference = front_hypervolume(SWEEP, METRICS, MODES, [-130.0, 1.0])
    assert value == pytest.approx(15 + 16 - 10) and reference == [-130.0, 1.0]


def test_by_default_the_reference_is_the_worst_finished_values():
    """Up to (-120, 0.6): boxes of 20 x 0.1 and 10 x 0.4 sharing 10 x 0.1; c, on the reference, adds nothing."""
    value, reference = front_hypervolume(SWEEP, METRICS, MODES)
    assert reference == [-120.0, 0.6]
    assert value == pytest.approx(2 + 4 - 1)


def test_a_trial_not_strictly_better_than_the_reference_adds_nothing():
    """d has the best likelihood of all (on the front) but a ratio beyond the reference; e equals it on one."""
    more = pd.concat([SWEEP, table(("d", "TERMINATED", -90.0, 1.5), ("e", "TERMINATED", -95.0, 1.0))])
    assert front_hypervolume(more, METRICS, MODES, [-130.0, 1.0])[0] == pytest.approx(21)


def test_three_objectives():
    """Two points as losses (1, 2, 2) and (2, 1, 1) up to (3, 3, 3): 2x1x1 + 1x2x2 - 1x1x1."""
    frame = pd.DataFrame([{"trial_id": i, "state": "TERMINATED", "final/x": x, "final/y": y, "final/z": z}
                          for i, (x, y, z) in enumerate([(1, 2, 2), (2, 1, 1)])])
    assert front_hypervolume(frame, ["x", "y", "z"], ["min"] * 3, [3, 3, 3])[0] == pytest.approx(5)


def test_no_finished_trial_no_volume():
    value, reference = front_hypervolume(SWEEP[SWEEP["state"] != "TERMINATED"], METRICS, MODES)
    assert math.isnan(value) and reference is None
    value, reference = front_hypervolume(SWEEP.drop(columns="final/log_likelihood"), METRICS, MODES, [-130, 1])
    assert math.isnan(value) and reference == [-130.0, 1.0]  # no trial reported an objective
    stored = json.loads(hypervolume_metadata(SWEEP.iloc[0:0], METRICS, MODES)[HYPERVOLUME_KEY])
    assert stored["value"] is None and stored["reference"] is None


def test_the_summary_shows_the_hypervolume_and_its_reference():
    lines = best_lines(SWEEP, METRICS, MODES, [-130.0, 1.0])
    assert lines[0].startswith("Pareto front of log_likelihood (max), equivariance_ratio_learned (min): 2 trials")
    assert lines[1] == "hypervolume 21 (reference log_likelihood -130, equivariance_ratio_learned 1)"
    assert "hypervolume 5 (reference log_likelihood -120, equivariance_ratio_learned 0.6: the worst finished values)" \
        in best_lines(SWEEP, METRICS, MODES)
    assert not any("hypervolume" in line for line in best_lines(SWEEP, METRICS[:1], MODES[:1]))


def test_a_reference_on_the_wrong_side_is_named_beside_the_value():
    """A likelihood reference above every trial's: nothing is better than it."""
    line = best_lines(SWEEP, METRICS, MODES, [-10.0, 1.0])[1]
    assert line.startswith("hypervolume 0 (reference log_likelihood -10, equivariance_ratio_learned 1); no finished "
                           "trial is better than the reference on every objective: search.hypervolume_reference is "
                           "on the wrong side of the front")


def test_the_trials_table_carries_the_hypervolume(tmp_path):
    out = write_table(SWEEP, tmp_path / "trials.parquet", hypervolume_metadata(SWEEP, METRICS, MODES, [-130.0, 1.0]))
    stored = json.loads(pq.read_schema(out).metadata[HYPERVOLUME_KEY])
    assert stored["value"] == pytest.approx(21) and stored["reference"] == [-130.0, 1.0]
    assert stored["metrics"] == METRICS and stored["reference_from"] == "spec"
    pd.testing.assert_frame_equal(pd.read_parquet(out), SWEEP.reset_index(drop=True))  # the table itself unchanged
    assert hypervolume_metadata(SWEEP, METRICS[:1], MODES[:1]) == {}


def test_the_summary_shows_each_equivariance_figure_beside_its_control():
    """The ratio beside its input-free control and the roll gain beside the reversed roll's, where the
    trials report them; a control no trial reports is left out."""
    frame = SWEEP.assign(**{"final/equivariance_ratio": 0.3, "final/equivariance_ratio_input_free": 0.4,
                            "final/roll_gain": 60.0})
    line = best_lines(frame, METRICS, MODES)[2]
    assert "equivariance_ratio 0.3  equivariance_ratio_input_free 0.4  roll_gain 60" in line
    assert "roll_gain_reversed" not in line


def test_a_best_trials_line_shows_the_summary_metrics_it_has_each_once():
    frame = pd.DataFrame([{"trial_id": "m", "state": "TERMINATED", "final/log_likelihood": -150.0, "final/kl_z": 0.2,
                           "final/topographic_agreement": 0.56, "final/topographic_agreement_chance": 0.17,
                           "final/active_units_z": 3.0, "config/model.n_off_diag": 1}])
    line = best_lines(frame, ["log_likelihood"], ["max"])[1]
    assert line == ("  m  log_likelihood -150  kl_z 0.2  topographic_agreement 0.56  topographic_agreement_chance 0.17"
                    "  model.n_off_diag=1")
