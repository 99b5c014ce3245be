"""`tvae-sweep collect`: a grid trained point by point by `tvae-sweep train`, read back as a sweep's results."""
import json

import pandas as pd
import pyarrow.parquet as pq
import yaml
from click.testing import CliRunner
from helpers import tiny_raw

from tvae_sweep.cli import main
from tvae_sweep.collect import Grid
from tvae_sweep.sweep.results import HYPERVOLUME_KEY, front_hypervolume

OBJECTIVES, MODES = ["log_likelihood", "equivariance_ratio"], ["max", "min"]


def grid_spec(folder):
    raw = tiny_raw()
    raw.update(name="shifts", space={"model.shift": {"type": "categorical", "values": [0, 1]}},
               search={"algorithm": "grid", "metric": OBJECTIVES, "mode": MODES, "fuse": True,
                       "scheduler": "fifo"})
    path = folder / "shifts.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_grid_trained_by_train_is_collected_into_a_sweeps_results(tmp_path):
    spec = grid_spec(tmp_path)
    written = Grid.load(spec).write_configs(tmp_path / "configs")
    assert [p.relative_to(tmp_path / "configs").as_posix() for p in written] == \
        ["group_0/point_0.yaml", "group_0/point_1.yaml"]  # one network shape: one fused group
    runs = tmp_path / "runs"
    trained = CliRunner().invoke(main, ["train", *map(str, written), "--output", str(runs / "group_0")])
    assert trained.exit_code == 0, trained.output

    result = CliRunner().invoke(main, ["collect", str(runs), "--spec", str(spec), "--results-dir", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    report = tmp_path / "r" / "shifts" / "report.md"
    assert result.output.strip() == f"report: {report}"
    frame = pd.read_parquet(report.parent / "trials.parquet")
    assert list(frame["trial_id"]) == ["g0_p0", "g0_p1"] and set(frame["state"]) == {"TERMINATED"}
    assert list(frame["config/model.shift"]) == [0, 1] and set(frame["epochs"]) == {2}
    for i, row in frame.iterrows():
        final = json.loads((runs / "group_0" / f"point_{i}" / "metrics.json").read_text())["final"]
        assert row["final/log_likelihood"] == final["log_likelihood"]
        assert row["checkpoint"] == str(runs / "group_0" / f"point_{i}")
    assert "- 2 trials: 2 terminated" in report.read_text()
    value, reference = front_hypervolume(frame, OBJECTIVES, MODES)  # as a launch writes it, from the same function
    stored = json.loads(pq.read_schema(report.parent / "trials.parquet").metadata[HYPERVOLUME_KEY])
    assert stored["value"] == value and stored["reference"] == reference and stored["metrics"] == OBJECTIVES
    assert f"hypervolume {value:.4g} (reference log_likelihood {reference[0]:.4g}" in report.read_text()
    assert (report.parent / "spec.yaml").is_file() and (report.parent / "aggregates").is_dir()


def test_a_folder_without_the_grids_runs_is_one_line_and_exit_2(tmp_path):
    spec = grid_spec(tmp_path)
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["collect", str(tmp_path / "empty"), "--spec", str(spec),
                                       "--results-dir", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"tvae-sweep: error: {tmp_path / 'empty'}: holds none of the 2 points of shifts's grid (group_0/point_0/ ...); "
        "pass the folder their `tvae-sweep train` runs were written into"]
    assert not (tmp_path / "r").exists()
