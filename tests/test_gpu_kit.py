"""The GPU session's kit: the Table 1 points as `train` configs, and their folders as a sweep's results."""
import json

import pandas as pd
import pytest
from click.testing import CliRunner

from benchmarks.gpu_kit import GROUPS, PROFILE, SPEC, collect_session
from tvae_sweep.cli import main
from tvae_sweep.collect import Grid
from tvae_sweep.config import load_run_config
from tvae_sweep.sweep.space import trial_run_config

pytestmark = pytest.mark.cost(17)  # seconds on 2 cores (measured): costliest files first

# the gpu profile's grid with one small capsule (the paper's S = D = 18 keep every preset valid)
TINY = ["model.n_caps=1", "data.train_sequences=8", "data.test_sequences=4", "train.epochs=2",
        "train.eval_every=1", "train.ll_samples=2", "train.device=cpu", "train.cuda_graph=false",
        "resources.gpus_per_trial=0"]


def test_the_table1_points_are_written_as_train_configs_one_folder_per_fused_group(tmp_path):
    grid = Grid.load(SPEC, TINY, PROFILE)
    written = grid.write_configs(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in written] == \
        [f"group_0/point_{i}.yaml" for i in range(3)] + [f"group_1/point_{i}.yaml" for i in range(3, 18)]
    for path, (_, point) in zip(written, grid.points(), strict=True):
        assert load_run_config(path).to_dict() == trial_run_config(grid.spec.base_dict(), point.config).to_dict()
    variants = [{load_run_config(p).model.variant for p in part} for part in (written[:3], written[3:])]
    assert variants == [{"vae"}, {"tvae"}]


def test_a_sessions_folders_become_a_sweeps_trials_table_and_report(tmp_path):
    grid = Grid.load(SPEC, TINY, PROFILE)
    written = grid.write_configs(tmp_path / "kit")
    runs = tmp_path / "out" / GROUPS
    for group in ("group_0", "group_1"):
        configs = [str(p) for p in written if p.parent.name == group]
        result = CliRunner().invoke(main, ["train", *configs, "--output", str(runs / group)])
        assert result.exit_code == 0, result.output
    # one point failed on the machine, one was stopped after its first epoch
    failed, stopped = runs / "group_1" / "point_4" / "metrics.json", runs / "group_1" / "point_5" / "metrics.json"
    failed.write_text(json.dumps({**json.loads(failed.read_text()), "error": "non-finite loss at epoch 2"}))
    doc = json.loads(stopped.read_text())
    stopped.write_text(json.dumps({**doc, "epochs": doc["epochs"][:1]}))

    report = collect_session(grid, tmp_path / "out", tmp_path / "results" / "paper_table1_gpu")
    frame = pd.read_parquet(report.parent / "trials.parquet")
    assert list(frame["trial_id"]) == [f"g0_p{i}" for i in range(3)] + [f"g1_p{i}" for i in range(3, 18)]
    states = dict(zip(frame["trial_id"], frame["state"], strict=True))
    assert (states.pop("g1_p4"), states.pop("g1_p5")) == ("ERROR", "RUNNING")
    assert set(states.values()) == {"TERMINATED"}
    assert frame.set_index("trial_id").loc["g1_p4", "error"] == "non-finite loss at epoch 2"
    first = json.loads((runs / "group_0" / "point_0" / "metrics.json").read_text())
    row = frame.iloc[0]
    assert row["final/log_likelihood"] == first["final"]["log_likelihood"]
    assert (row["config/paper_model"], row["config/model.variant"], row["config/train.seed"], row["epochs"]) == \
        ("vae", "vae", 0, 2)
    assert frame.set_index("trial_id").loc["g1_p5", "epochs"] == 1
    text = report.read_text()
    assert "- 18 trials: 1 error, 1 running, 16 terminated" in text
    assert "| tvae_L13_36 " in text  # the paper-style table over seeds
    assert (report.parent / "aggregates" / "paper_model_summary.parquet").is_file()
    assert (report.parent / "aggregates" / "best_traversals.png").is_file()
