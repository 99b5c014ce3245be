"""A fused grid (search.fuse) on a real local Ray with a real MLflow store, and its
confirmation."""
from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from sweeps import child_runs, cli_env, launch_grid, reports, run_cli, running

from tvae_sweep.cli import main
from tvae_sweep.sweep.records import saved_records

pytestmark = pytest.mark.cost(135)  # seconds on 2 cores (measured): costliest files first

PRESETS = {
    "vae": {"model.variant": "vae"},
    "tvae": {"model.coherence_window": 3, "model.shift": 1},
    "bubble": {"model.coherence_window": 3, "model.shift": 0},
    "blowup": {"model.mu_init": 1.0e38},  # t overflows at the first step: this point diverges
}
SEEDS = [0, 1]


@pytest.fixture(scope="module")
def fused(tmp_path_factory, ray_temp):
    space = {"preset": {"type": "preset", "values": PRESETS}, "train.seed": {"type": "categorical", "values": SEEDS}}
    results = launch_grid(tmp_path_factory.mktemp("fused"), "fused", space, {"fuse": True}, ray_temp, baseline="vae")
    return results, pd.read_parquet(results / "fused" / "trials.parquet")


def point_of(row: pd.Series) -> tuple[str, int]:
    """(preset, seed) of a fused sweep's row, from its config columns."""
    config = {k.removeprefix("config/"): v for k, v in row.items() if k.startswith("config/") and v == v}
    preset = next(name for name, values in PRESETS.items()
                  if all(config.get(k) == v for k, v in values.items()))
    return preset, int(config["train.seed"])


@pytest.mark.slow
def test_a_fused_grid_trains_its_shapes_together_and_keeps_a_row_a_run_and_an_optuna_trial_per_point(fused):
    results, frame = fused
    folders = sorted(p.name for p in (results / "fused" / "tune").iterdir() if p.is_dir())
    assert len(folders) == 2 and all(f.startswith("fused_") for f in folders)  # the VAEs, the TVAE family
    assert len(frame) == len(PRESETS) * len(SEEDS) and frame["trial_id"].is_unique
    assert sorted(map(point_of, (row for _, row in frame.iterrows()))) == sorted(
        (p, s) for p in PRESETS for s in SEEDS)
    by_ray_trial = frame.groupby(frame["trial_id"].str.rsplit("_p", n=1).str[0])
    assert sorted(len(g) for _, g in by_ray_trial) == [2, 6]

    runs = child_runs(results, "fused")
    assert set(runs) == set(frame["trial_id"])
    study = optuna.load_study(study_name="fused", storage=f"sqlite:///{results / 'fused' / 'optuna.db'}")
    recorded = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    assert set(recorded) == set(frame["trial_id"])
    for _, row in frame.iterrows():
        trial = recorded[row["trial_id"]]
        assert (trial.params["preset"], trial.params["train.seed"]) == point_of(row)
        if row["state"] == "TERMINATED":
            assert trial.values == [pytest.approx(row["final/log_likelihood"])]
            assert runs[row["trial_id"]].info.status == "FINISHED"
            assert runs[row["trial_id"]].data.metrics["log_likelihood"] == pytest.approx(row["final/log_likelihood"])
            assert Path(row["checkpoint"], "traversal.png").is_file()
    assert [row["config/preset"] for _, row in frame.iterrows()] == [point_of(row)[0] for _, row in frame.iterrows()]
    compared = pd.read_parquet(results / "fused" / "aggregates" / "comparisons.parquet")  # blowup failed
    assert set(compared["model"]) == {"tvae", "bubble"} and set(compared["n"]) == {2}
    parent = next(iter(runs.values())).data.tags["mlflow.parentRunId"]
    logged = MlflowClient(f"sqlite:///{results / 'mlflow.db'}").list_artifacts(parent, "aggregates")
    assert {"aggregates/comparisons.json", "aggregates/curves.json",
            "aggregates/curves.png"} <= {a.path for a in logged}
    check_curves(results, frame)


def check_curves(results: Path, frame: pd.DataFrame) -> None:
    """The learning curves, from each point's reports in Ray's saved results: a group per preset
    (blowup failed), both seeds at each of the two epochs, the last one's mean the final values'."""
    curves = pd.read_parquet(results / "fused" / "aggregates" / "curves.parquet")
    assert sorted(set(curves["group"])) == ["bubble", "tvae", "vae"]
    assert set(curves["epoch"]) == {1, 2} and set(curves["n"]) == {2}
    assert {"log_likelihood", "equivariance_ratio_learned", "roll_gain", "kl_z"} <= set(curves["metric"])
    last = curves[(curves["metric"] == "log_likelihood") & (curves["epoch"] == 2)].set_index("group")["mean"]
    final = frame[frame["state"] == "TERMINATED"].groupby("config/preset")["final/log_likelihood"].mean()
    assert last.to_dict() == pytest.approx(final.to_dict())


@pytest.mark.slow
def test_a_fused_sweeps_study_names_its_objective_and_its_parent_has_the_importance(fused):
    results, frame = fused
    study = optuna.load_study(study_name="fused", storage=f"sqlite:///{results / 'fused' / 'optuna.db'}")
    assert study.metric_names == ["log_likelihood"]
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    parent = next(iter(child_runs(results, "fused").values())).data.tags["mlflow.parentRunId"]
    logged = {a.path for a in client.list_artifacts(parent, "aggregates")}
    assert {"aggregates/importance.json", "aggregates/importance.png"} <= logged
    importance = pd.read_parquet(results / "fused" / "aggregates" / "importance.parquet")
    assert (frame["state"] == "TERMINATED").sum() == 6  # the blowup points failed
    assert set(importance["param"]) == {"preset", "train.seed"} and set(importance["trials"]) == {6}
    assert set(importance["objective"]) == {"log_likelihood"} and importance["importance"].sum() == pytest.approx(1)
    metrics = client.get_run(parent).data.metrics
    for _, row in importance.iterrows():
        assert metrics[f"importance.log_likelihood.{row['param']}"] == pytest.approx(row["importance"])


@pytest.mark.slow
def test_a_diverging_point_fails_alone_with_the_single_runs_reason(fused):
    results, frame = fused
    runs = child_runs(results, "fused")
    for _, row in frame.iterrows():
        preset, _ = point_of(row)
        if preset == "blowup":
            assert row["state"] == "ERROR" and row["error"] == "non-finite loss at epoch 1"
            assert runs[row["trial_id"]].info.status == "FAILED"
            assert runs[row["trial_id"]].data.tags["tvae_sweep.error"] == "non-finite loss at epoch 1"
        else:
            assert row["state"] == "TERMINATED" and math.isfinite(row["final/log_likelihood"])


@pytest.mark.slow
def test_a_point_is_the_run_of_its_config_alone(fused, tmp_path):
    results, frame = fused
    row = next(row for _, row in frame.iterrows() if point_of(row) == ("bubble", 1))
    out = tmp_path / "best"
    proc = run_cli("export-best", "fused", "--results-dir", results, "--out", out, "--top", "6")
    assert proc.returncode == 0, proc.stderr
    config = next(p for p in out.glob("*.yaml") if row["trial_id"] in p.name)
    proc = run_cli("train", config, "--output", tmp_path / "alone")
    assert proc.returncode == 0, proc.stderr[-2000:]
    alone = json.loads((tmp_path / "alone" / "metrics.json").read_text())["final"]
    for metric in ("log_likelihood", "equivariance_ratio", "kl_z"):
        assert alone[metric] == pytest.approx(row[f"final/{metric}"], rel=1e-4, abs=2e-3), metric


@pytest.mark.slow
def test_prune_keeps_the_best_points_weights(fused):
    results, frame = fused
    proc = run_cli("prune", "fused", "--keep-best", "1", "--yes", "--results-dir", results)
    assert proc.returncode == 0, proc.stderr
    best = frame.sort_values("final/log_likelihood", ascending=False).iloc[0]
    for _, row in frame[frame["state"] == "TERMINATED"].iterrows():
        assert Path(row["checkpoint"], "state.pt").is_file() == (row["trial_id"] == best["trial_id"])


def finished_reports(experiment: Path) -> dict[str, list[int]]:
    """Trial folder -> its reported epochs, for the trials that reported their last."""
    return {name: [r["epoch"] for r in lines] for name, lines in reports(experiment).items()
            if lines and lines[-1]["epoch"] == 2}


def saved_finished(experiment: Path) -> set[str]:
    """The trial folders that Ray's saved experiment holds as finished (none before its first save)."""
    try:
        return {Path(r.path).name for r in saved_records(str(experiment)) if r.state == "TERMINATED"}
    except ValueError:  # Ray has not saved its experiment yet (it names the file it did not find)
        return set()


def killed_once_a_trial_has_finished(args: list, folder: Path, log: Path, ray_temp: str) -> dict[str, list[int]]:
    """Runs the CLI and kills it with SIGKILL once Ray has saved a trial of `folder` as finished (it
    saves its experiment every second here); returns those trials' reported epochs."""
    with running(args, log, cli_env(RAY_TMPDIR=ray_temp, TUNE_GLOBAL_CHECKPOINT_S="1")) as proc:
        deadline = time.monotonic() + 300
        while not (saved := saved_finished(folder / "tune")):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
    assert json.loads((folder / "sweep.json").read_text())["status"] == "running"
    return {name: epochs for name, epochs in finished_reports(folder / "tune").items() if name in saved}


def check_confirmed_trials(folder: Path, names: list[str]) -> pd.DataFrame:
    """The confirmation's trials table: each config once, finished, with its new seeds' values and
    their mean and spread; its comparisons with the baseline over both seeds."""
    confirmed = pd.read_parquet(folder / "trials.parquet")
    assert sorted(confirmed["config/confirm"]) == sorted([*names, "vae"])
    assert set(confirmed["state"]) == {"TERMINATED"} and "final/log_likelihood_seed0" not in confirmed
    for _, row in confirmed.iterrows():
        seeds = [row["final/log_likelihood_seed1000"], row["final/log_likelihood_seed1001"]]
        assert row["final/log_likelihood"] == pytest.approx(sum(seeds) / 2)
        assert row["final/log_likelihood_std"] == pytest.approx(pd.Series(seeds).std())
    compared = pd.read_parquet(folder / "aggregates" / "comparisons.parquet")
    ll = compared[compared["metric"] == "log_likelihood"]
    assert sorted(ll["model"]) == sorted(names) and set(ll["baseline"]) == {"vae"} and set(ll["n"]) == {2}
    return confirmed


def check_confirmation_runs(results: Path, frame: pd.DataFrame, confirmed: pd.DataFrame) -> None:
    """The confirmation's trials are children of the search's parent run, tagged with the stage; the
    parent's status is the search's, its end a tag, its table an artifact under confirm/."""
    search, confirmation = child_runs(results, "fused"), child_runs(results, "fused", stage="confirm")
    assert set(search) == set(frame["trial_id"]) and set(confirmation) == set(confirmed["trial_id"])
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    parent = client.get_run(next(iter(search.values())).data.tags["mlflow.parentRunId"])
    assert {r.data.tags["mlflow.parentRunId"] for r in confirmation.values()} == {parent.info.run_id}
    assert {r.info.status for r in confirmation.values()} == {"FINISHED"}
    assert parent.info.status == "FINISHED" and parent.data.tags["tvae_sweep.confirm"] == "finished"
    assert "confirm/confirmation.json" in {a.path for a in client.list_artifacts(parent.info.run_id, "confirm")}


@pytest.mark.slow
def test_confirm_retrains_the_best_configs_and_the_baseline_under_new_seeds_and_continues_after_sigkill(
        fused, ray_temp, tmp_path):
    """`confirm --top 2 --seeds 2`, killed with SIGKILL once a trial has finished, then run again:
    it continues, and its trials are children of the sweep's parent run, tagged as the confirmation."""
    results, frame = fused
    folder = results / "fused" / "confirm"
    before = killed_once_a_trial_has_finished(["confirm", "fused", "--top", "2", "--seeds", "2", "--results-dir",
                                               results], folder, tmp_path / "confirm.log", ray_temp)
    proc = run_cli("confirm", "fused", "--results-dir", results, RAY_TMPDIR=ray_temp)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"continuing the confirmation of fused in {folder}" in proc.stdout
    after = finished_reports(folder / "tune")
    assert len(after) == 3 and all(after[name] == epochs for name, epochs in before.items())  # none trained again

    # the top two distinct configs (presets, the seed aside) by the search's log-likelihood, and the baseline
    done = frame[frame["state"] == "TERMINATED"].sort_values("final/log_likelihood", ascending=False)
    names = [f"rank{k}_{trial}" for k, trial in enumerate(done.drop_duplicates("config/preset")["trial_id"][:2], 1)]
    confirmed = check_confirmed_trials(folder, names)
    state = json.loads((folder / "sweep.json").read_text())
    assert set(frame["config/train.seed"]) == {0, 1} and state["seeds"] == [1000, 1001]
    check_confirmation_runs(results, frame, confirmed)

    report = (results / "fused" / "report.md").read_text()
    assert "## Learning curves" in report and "### log_likelihood" in report
    section = report[report.index("## Confirmation"):]
    assert "seeds 1000, 1001" in section and all(f"| {name} " in section for name in names)
    again = CliRunner().invoke(main, ["confirm", "fused", "--results-dir", str(results)])  # no Ray: in this process
    assert again.exit_code == 0 and f"fused is confirmed already, in {folder}" in again.stdout, again.output
    assert "confirmed under the new seeds 1000, 1001:" in again.stdout and " started" not in again.stdout
    assert finished_reports(folder / "tune") == after
