"""MLflow tracking with a real SQLite store and a real local Ray.

One tiny sweep of three pinned trials (one of them diverges and fails) is stopped with Ctrl-C,
resumed, killed with SIGKILL, and resumed again to its end; every check on runs, statuses, metric
histories, images and aggregated tables is made on what that leaves. The sweep is built once per
test session and shared with test_ui.py.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from filelock import FileLock
from helpers import ctrl_c_as_from_a_terminal, spec_raw, tiny_raw
from mlflow import MlflowClient
from mlflow.entities import ViewType
from PIL import Image
from scipy import stats

from tvae_sweep.cli import main
from tvae_sweep.config import ConfigError
from tvae_sweep.metrics import is_metric, metric_mode
from tvae_sweep.sweep.console import RayLog, ray_output_to
from tvae_sweep.sweep.layout import SweepDir, sweep_dir
from tvae_sweep.sweep.results import front_hypervolume, pareto_trials, ranked
from tvae_sweep.sweep.spec import ParamSpec
from tvae_sweep.sweep.validation import spec_from_dict
from tvae_sweep.tracking import publish, report
from tvae_sweep.tracking import store as stores
from tvae_sweep.tracking.aggregate import axis_table, pareto_front
from tvae_sweep.tracking.callback import MlflowTracking
from tvae_sweep.tracking.runs import RUNNING, Child
from tvae_sweep.tracking.store import Store, artifact_root, resolve
from tvae_sweep.tracking.trial_log import TrialLog
from tvae_sweep.tracking.writer import Writer

pytestmark = pytest.mark.cost(123)  # seconds on 2 cores (measured): costliest files first

CLI = [sys.executable, "-m", "tvae_sweep"]
NAME = "tracked"
GOOD_LR, BAD_LR = 1e-3, 1e6  # Adam at 1e6 makes the loss non-finite in the first epoch
POINTS = [  # the three trials, in order; the second diverges
    {"model.n_caps": 2, "model.shift": 1, "train.lr": GOOD_LR},
    {"model.n_caps": 3, "model.shift": 1, "train.lr": BAD_LR},
    {"model.n_caps": 3, "model.shift": 0, "train.lr": GOOD_LR},
]
AXES = ("model.n_caps", "model.shift", "train.lr")
METRICS = ("equivariance_error", "equivariance_ratio", "log_likelihood", "roll_nll_gap", "capsule_correlation")
EPOCHS = 2
OBJECTIVES, MODES = ["log_likelihood", "equivariance_ratio"], ["max", "min"]  # two: the front has a hypervolume


# ---------------------------------------------------------------- running the CLI


def env(**extra) -> dict:
    out = dict(os.environ, RAY_ENABLE_UV_RUN_RUNTIME_ENV="0", PYTHONUNBUFFERED="1",
               MLFLOW_DISABLE_TELEMETRY="true", **extra)
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "TVAE_SWEEP_RESULTS"):
        out.pop(key, None)
    return out


def run_cli(*args, timeout=600, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env(**extra))


def start_cli(*args, log: Path) -> subprocess.Popen:
    """The CLI in its own process group, so a SIGKILL takes its local Ray cluster along."""
    return subprocess.Popen([*CLI, *map(str, args)], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env=env(), start_new_session=True, preexec_fn=ctrl_c_as_from_a_terminal)


def spec_file(folder: Path) -> Path:
    # epochs of a second or so: the Ctrl-C, sent once the first epoch is in MLflow, lands inside the
    # first trial (with 24 sequences its second epoch could end before the signal was handled)
    raw = tiny_raw(train={"epochs": EPOCHS}, data={"train_sequences": 240})
    raw["space"] = {"model.n_caps": {"type": "categorical", "values": [2, 3]},
                    "model.shift": {"type": "categorical", "values": [0, 1]},
                    "train.lr": {"type": "categorical", "values": [GOOD_LR, BAD_LR]}}
    raw["search"] = {"algorithm": "random", "metric": OBJECTIVES, "mode": MODES, "num_trials": 3,
                     "max_concurrent": 1, "seed": 0, "scheduler": "fifo", "warm_start": POINTS}
    raw["resources"] = {"cpus_per_trial": 1, "gpus_per_trial": 0}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def db_count(db: Path, query: str) -> int:
    """Reads the MLflow database while a sweep writes it (0 until the tables exist)."""
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute(query).fetchone()[0]
    except sqlite3.Error:
        return 0


TRIALS_WITH_METRICS = ("select count(distinct m.run_uuid) from metrics m join tags t on t.run_uuid = m.run_uuid "
                       "where t.key = 'tvae_sweep.role' and t.value = 'trial'")
TRIAL_RUNS = "select count(*) from tags where key = 'tvae_sweep.role' and value = 'trial'"


def wait_for(condition, process: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the sweep ended before it could be interrupted:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)


def statuses(client, experiment_id: str) -> dict[str, str]:
    return {r.info.run_name: r.info.status for r in client.search_runs([experiment_id])}


def build_sweep(root: Path) -> dict:
    """Launch, Ctrl-C, resume, SIGKILL, resume; returns what each stage left in MLflow."""
    results = root / "results"
    spec = spec_file(root)
    db = results / "mlflow.db"
    record: dict = {"results": str(results), "name": NAME}

    # 1. launch, Ctrl-C once the first trial has logged an epoch
    log = root / "launch.log"
    proc = start_cli("launch", spec, "--name", NAME, "--results-dir", results, log=log)
    wait_for(lambda: db_count(db, TRIALS_WITH_METRICS) >= 1, proc, log)
    proc.send_signal(signal.SIGINT)
    record["interrupted_code"] = proc.wait(timeout=300)
    client = MlflowClient(f"sqlite:///{db}")
    experiment_id = client.get_experiment_by_name(NAME).experiment_id
    record["after_ctrl_c"] = statuses(client, experiment_id)
    record["launch_log"] = log.read_text()[-5000:]

    # 2. resume, SIGKILL once a second trial has its run
    log = root / "resume1.log"
    proc = start_cli("resume", NAME, "--results-dir", results, log=log)
    wait_for(lambda: db_count(db, TRIAL_RUNS) >= 2, proc, log)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    record["after_sigkill"] = statuses(client, experiment_id)
    record["state_after_sigkill"] = json.loads((results / NAME / "sweep.json").read_text())["status"]

    # 3. resume to the end
    done = run_cli("resume", NAME, "--results-dir", results)
    record.update(final_code=done.returncode, final_stdout=done.stdout, final_stderr=done.stderr[-20000:])
    return record


def shared_sweep(tmp_path_factory) -> dict:
    """The sweep, built by the first test (of any module or xdist worker) that needs it."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "tracked-sweep"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock"):
        done = root / "record.json"
        if not done.is_file():
            done.write_text(json.dumps(build_sweep(root)))
    record = json.loads(done.read_text())
    assert record["final_code"] == 0, record["final_stdout"][-3000:] + record["final_stderr"][-3000:]
    return record


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return shared_sweep(tmp_path_factory)


@pytest.fixture(scope="module")
def client(sweep):
    return MlflowClient(f"sqlite:///{Path(sweep['results']) / 'mlflow.db'}")


@pytest.fixture(scope="module")
def runs(sweep, client):
    """(parent run, {trial id: child run}, Ray's trials table)."""
    experiment = client.get_experiment_by_name(NAME)
    every = client.search_runs([experiment.experiment_id])
    parents = [r for r in every if r.data.tags.get("tvae_sweep.role") == "sweep"]
    assert len(parents) == 1
    children = [r for r in every if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    by_trial = {r.data.tags["tvae_sweep.trial_id"]: r for r in children}
    assert len(by_trial) == len(children), "a trial has two runs"
    trials = pd.read_parquet(Path(sweep["results"]) / NAME / "trials.parquet")
    return parents[0], by_trial, trials


def reported(run) -> list[str]:
    """The aggregated metrics a run has (capsule correlation needs enough test sequences per factor)."""
    core = [m for m in METRICS if m != "capsule_correlation"]
    assert set(core) <= set(run.data.metrics), sorted(run.data.metrics)
    return [m for m in METRICS if m in run.data.metrics]


def by_lr(children: dict, trials: pd.DataFrame, lr: float) -> list:
    """The runs of the trials with learning rate `lr`. (If the SIGKILL lands before Ray saved the
    second trial, the resume samples a new third config: which trials diverge is known by lr only.)"""
    ids = trials[trials["config/train.lr"] == lr]["trial_id"]
    return [children[i] for i in ids]


# ---------------------------------------------------------------- fast checks, no Ray


def test_store_precedence_option_env_spec_default(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    default = resolve(None, None, tmp_path)
    assert default.uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert default.artifact_root == (tmp_path / "mlartifacts").as_uri()
    assert resolve(None, "http://spec:5000", tmp_path).uri == "http://spec:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve(None, "http://spec:5000", tmp_path).uri == "http://env:5000"
    chosen = resolve("http://option:5000", "http://spec:5000", tmp_path)
    assert (chosen.uri, chosen.source, chosen.artifact_root) == ("http://option:5000", "--tracking-uri", None)
    assert resolve(str(tmp_path / "other.db"), None, tmp_path).uri == f"sqlite:///{tmp_path / 'other.db'}"
    assert artifact_root("http://x", "s3://bucket/mlflow") == "s3://bucket/mlflow"
    for folder_store in ("./mlruns", "file:///tmp/mlruns"):
        with pytest.raises(ConfigError, match="refuses folder"):
            resolve(folder_store, None, tmp_path)


def test_a_store_prepared_for_a_command_that_stops_early_is_settled_with_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = stores.resolve(None, None, tmp_path)
    stores.prepare(store)  # what launch does before Ray starts
    stores.settle()  # what every command does as it ends
    assert not [t for t in threading.enumerate() if t.name.startswith("mlflow-open")]
    assert (tmp_path / "mlflow.db").stat().st_size > 0  # it was opened, not abandoned half-way


def cli(*args):
    """The CLI in this process, for commands that start no sweep."""
    return CliRunner().invoke(main, [str(a) for a in args])


def test_unreachable_tracking_server_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    result = cli("launch", spec_file(tmp_path), "--name", "x", "--results-dir", tmp_path / "r",
                 "--tracking-uri", f"http://127.0.0.1:{port}")
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"tvae-sweep: error: --tracking-uri http://127.0.0.1:{port}: no MLflow server answers")


def test_aggregate_tables_with_bins_presets_and_unsampled_keys():
    rng = list(range(12))
    frame = pd.DataFrame({
        "trial_id": [f"t{i}" for i in rng],
        "state": ["TERMINATED"] * 11 + ["ERROR"],
        "config/train.lr": [10 ** (-5 + i / 3) for i in rng],
        "config/model.shift": [1 if i % 2 else None for i in rng],  # sampled only for some trials
        "config/model.variant": ["tvae" if i < 6 else "vae" for i in rng],
        "config/model_kind": ["bubble" if i < 6 else "plain" for i in rng],  # the preset's recorded name
        "final/log_likelihood": [-100.0 - i for i in rng],
        "final/equivariance_ratio": [1.0 / (i + 1) for i in rng],
    })
    lr = axis_table(frame, "train.lr", ParamSpec(type="float", low=1e-5, high=1e-1, log=True))
    assert lr["train.lr"].nunique() == 5 and set(lr["metric"]) == {"log_likelihood", "equivariance_ratio"}
    assert lr.groupby("metric")["count"].sum().to_dict() == {"equivariance_ratio": 11, "log_likelihood": 11}
    shift = axis_table(frame, "model.shift", ParamSpec(type="int", low=0, high=2, when={"model.variant": ["tvae"]}))
    ll = shift[shift["metric"] == "log_likelihood"]
    assert ll["count"].tolist() == [5, 6]  # 1, then not sampled (the ERROR trial is left out)
    assert ll["best"].tolist() == [-101.0, -100.0]
    assert ll["std"].iloc[0] == pytest.approx(pd.Series([-101.0, -103, -105, -107, -109]).std())
    preset = ParamSpec(type="preset", values={"bubble": {"model.variant": "tvae"}, "plain": {"model.variant": "vae"}})
    by_preset = axis_table(frame, "model_kind", preset)
    assert by_preset[by_preset["metric"] == "log_likelihood"].set_index("model_kind")["count"].to_dict() == \
        {"bubble": 6, "plain": 5}
    assert ranked(frame, "log_likelihood", 1)["trial_id"].tolist() == ["t0"]
    front = pareto_front(frame)  # the likeliest trial is also the least equivariant here, so all are on it
    assert list(front["trial_id"]) == [f"t{i}" for i in reversed(range(11))]


def test_the_pareto_front_of_several_objectives_keeps_exactly_the_undominated_trials():
    frame = pd.DataFrame({
        "trial_id": ["a", "b", "c", "d", "e", "f"],
        "state": ["TERMINATED"] * 5 + ["ERROR"],
        "final/log_likelihood": [-100.0, -110.0, -105.0, -120.0, -100.0, -50.0],
        "final/equivariance_ratio_learned": [0.0, -0.2, -0.2, -0.1, 0.1, -0.9],
        "final/roll_gain": [0.1, 0.0, 0.3, 0.0, 0.1, 9.0],
    })
    two = pareto_trials(frame, ["log_likelihood", "equivariance_ratio_learned"], ["max", "min"])
    assert list(two["trial_id"]) == ["a", "c"]  # b, d and e are beaten; f failed
    three = pareto_trials(frame, ["log_likelihood", "equivariance_ratio_learned", "roll_gain"], ["max", "min", "max"])
    assert list(three["trial_id"]) == ["a", "c"]
    flipped = pareto_trials(frame, ["log_likelihood", "equivariance_ratio_learned"], ["min", "max"])
    assert list(flipped["trial_id"]) == ["d", "e"]


# ---------------------------------------------------------------- the sweep: interrupted, killed, resumed


@pytest.mark.slow
def test_ctrl_c_leaves_no_run_running_and_the_resume_continues_the_same_runs(sweep, runs):
    assert sweep["interrupted_code"] == 130, sweep["launch_log"]
    after = sweep["after_ctrl_c"]
    assert after[NAME] == "KILLED"
    assert set(after.values()) <= {"KILLED", "FINISHED"}, after
    interrupted = [name for name, status in after.items() if name != NAME and status == "KILLED"]
    final = {f"trial-{trial_id}": run.info.status for trial_id, run in runs[1].items()}
    assert interrupted and all(final[name] == "FINISHED" for name in interrupted), (after, final)


@pytest.mark.slow
def test_sigkill_leaves_runs_that_the_resume_settles(sweep, runs, client):
    assert sweep["state_after_sigkill"] == "running"
    assert sweep["after_sigkill"][NAME] == "RUNNING"  # the killed driver could not close it
    parent, children, trials = runs
    assert parent.info.status == "FINISHED"
    assert sorted(children) == sorted(trials["trial_id"]) and len(children) == len(POINTS)
    assert "RUNNING" not in {r.info.status for r in children.values()}
    # a trial that the killed driver had started before Ray saved it is run again under a new id;
    # its first run is deleted, never left beside the new one
    deleted = client.search_runs([parent.info.experiment_id], run_view_type=ViewType.DELETED_ONLY)
    assert all("tvae_sweep.discarded" in r.data.tags and r.info.status != "RUNNING" for r in deleted)
    assert "tracking:" not in sweep["final_stderr"], sweep["final_stderr"][-3000:]


@pytest.mark.slow
def test_each_trial_has_its_status_config_and_tags(runs, sweep):
    parent, children, trials = runs
    bad = {r.data.tags["tvae_sweep.trial_id"] for r in by_lr(children, trials, BAD_LR)}
    assert bad
    for trial_id, run in children.items():
        tags, params = run.data.tags, run.data.params
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["tvae_sweep.sweep"] == NAME and run.info.run_name == f"trial-{trial_id}"
        config = trials.set_index("trial_id").loc[trial_id]
        assert params["model.n_caps"] == str(config["config/model.n_caps"])
        assert float(params["train.lr"]) == config["config/train.lr"]
        assert params["train.epochs"] == str(EPOCHS) and params["data.dataset"] == "mnist5k"
        assert "model.coherence_window" in params and "train.batch_size" in params  # the full config
        if trial_id in bad:
            assert run.info.status == "FAILED"
            assert "DivergenceError" in tags["tvae_sweep.error"] or "non-finite" in tags["tvae_sweep.error"]
            assert int(tags["tvae_sweep.retries"]) >= 1 and "non-finite" in tags["tvae_sweep.last_error"]
        else:
            assert run.info.status == "FINISHED"
            assert Path(tags["tvae_sweep.checkpoint"]).is_dir()


@pytest.mark.slow
def test_every_epoch_logged_once_with_its_step(runs, client):
    _, children, trials = runs
    for run in by_lr(children, trials, GOOD_LR):
        for metric in ("train_loss", "loss", *reported(run)):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
            assert steps == list(range(1, EPOCHS + 1)), (metric, steps)
        final = trials.set_index("trial_id").loc[run.data.tags["tvae_sweep.trial_id"]]
        assert run.data.metrics["log_likelihood"] == pytest.approx(final["final/log_likelihood"])


@pytest.mark.slow
def test_traversal_images_are_artifacts_of_finished_trials(runs, client, tmp_path):
    _, children, trials = runs
    for run in by_lr(children, trials, GOOD_LR):
        assert "traversal.png" in {a.path for a in client.list_artifacts(run.info.run_id)}
        (tmp_path / run.info.run_id).mkdir()
        local = client.download_artifacts(run.info.run_id, "traversal.png", str(tmp_path / run.info.run_id))
        assert Image.open(local).size[0] > 28
    for failed in by_lr(children, trials, BAD_LR):
        assert "error.txt" in {a.path for a in client.list_artifacts(failed.info.run_id)}


@pytest.mark.slow
def test_parent_has_spec_search_settings_and_best_metrics(runs, client, sweep):
    parent, children, trials = runs
    tags, params = parent.data.tags, parent.data.params
    state = json.loads((Path(sweep["results"]) / NAME / "sweep.json").read_text())
    assert tags["tvae_sweep.sweep"] == NAME and tags["tvae_sweep.experiment_path"] == state["experiment_path"]
    assert json.loads(params["space.model.n_caps"]) == {"type": "categorical", "values": [2, 3]}
    assert params["search.algorithm"] == "random" and json.loads(params["search.metric"]) == OBJECTIVES
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "spec.yaml" in artifacts
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "aggregates")}
    for name in ("pareto.png", "metrics_by_axis.png", "best_traversals.png", *(f"{a}.json" for a in AXES)):
        assert f"aggregates/{name}" in figures
    finished = [r for r in children.values() if r.info.status == "FINISHED"]
    best = max(finished, key=lambda r: r.data.metrics["log_likelihood"])
    assert tags["tvae_sweep.best_trial"] == best.data.tags["tvae_sweep.trial_id"]
    for metric in reported(best):
        assert parent.data.metrics[metric] == pytest.approx(best.data.metrics[metric])
    assert parent.data.metrics["finished_trials"] == len(finished) == len(by_lr(children, trials, GOOD_LR))


@pytest.mark.slow
def test_parent_has_the_fronts_hypervolume_and_what_the_importance_could_not_assess(runs, client, sweep):
    parent, _, trials = runs
    tags = parent.data.tags
    value, reference = front_hypervolume(trials, OBJECTIVES, MODES)
    assert parent.data.metrics["front_hypervolume"] == pytest.approx(value)
    logged_reference = json.loads(tags["tvae_sweep.hypervolume_reference"])
    assert logged_reference == pytest.approx(dict(zip(OBJECTIVES, reference, strict=True)))
    assert tags["tvae_sweep.hypervolume_reference_from"] == "worst finished values"
    finished = (trials["state"] == "TERMINATED").sum()
    assert "aggregates/importance.json" in {a.path for a in client.list_artifacts(parent.info.run_id, "aggregates")}
    assert tags["tvae_sweep.importance_notes"] == "parameter importance needs 5 finished trials with every " \
                                                  f"objective; there are {finished}"  # a note, no table
    study = optuna.load_study(study_name=NAME, storage=f"sqlite:///{Path(sweep['results']) / NAME / 'optuna.db'}")
    assert study.metric_names == OBJECTIVES


def recomputed(children: dict, axis: str) -> pd.DataFrame:
    """The aggregated table of `axis`, computed again from the finished child runs in MLflow."""
    finished = [run for run in children.values() if run.info.status == "FINISHED"]
    logged = {m for run in finished for m in run.data.metrics}
    metrics = [m for m in logged if is_metric(m) and m not in ("loss", "train_loss")]
    assert set(METRICS) - {"capsule_correlation"} <= set(metrics)
    frame = pd.DataFrame([{"value": float(run.data.params[axis]), **run.data.metrics} for run in finished])
    out = []
    for value, group in frame.groupby("value"):
        for metric in metrics:
            series = group[metric].dropna()
            low, high = math.nan, math.nan
            if len(series) > 1:  # Student t's 95% interval (scipy's gives NaN for no spread: mean, mean)
                low, high = stats.t.interval(0.95, len(series) - 1, loc=series.mean(), scale=stats.sem(series)) \
                    if series.std() > 0 else (series.mean(), series.mean())
            out.append({"value": value, "metric": metric, "mean": series.mean(), "ci_low": low, "ci_high": high,
                        "std": series.std(ddof=1) if len(series) > 1 else math.nan,
                        "best": series.max() if metric_mode(metric) == "max" else series.min(),
                        "count": len(series)})
    return pd.DataFrame(out).sort_values(["value", "metric"]).reset_index(drop=True)


def same_table(table: pd.DataFrame, axis: str, expected: pd.DataFrame) -> None:
    got = table.rename(columns={axis: "value"}).astype({"value": float})
    got = got.sort_values(["value", "metric"]).reset_index(drop=True)
    assert list(got["value"]) == pytest.approx(list(expected["value"]))
    assert list(got["metric"]) == list(expected["metric"])
    assert list(got["count"]) == list(expected["count"])
    for stat in ("mean", "std", "ci_low", "ci_high", "best"):
        assert list(got[stat].fillna(-1e300)) == pytest.approx(list(expected[stat].fillna(-1e300))), (axis, stat)


@pytest.mark.slow
def test_aggregated_tables_match_a_recomputation_from_the_trials(runs, client, sweep, tmp_path):
    parent, children, _ = runs
    folder = Path(sweep["results"]) / NAME / "aggregates"
    for axis in AXES:
        expected = recomputed(children, axis)
        same_table(pd.read_parquet(folder / f"{axis}.parquet"), axis, expected)
        logged = client.download_artifacts(parent.info.run_id, f"aggregates/{axis}.json", str(tmp_path))
        doc = json.loads(Path(logged).read_text())
        same_table(pd.DataFrame(doc["data"], columns=doc["columns"]), axis, expected)
    assert set(recomputed(children, "train.lr")["value"]) == {GOOD_LR}  # the failed trial is left out


@pytest.mark.slow
def test_report_prints_and_writes_the_same_tables(runs, sweep, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    results = Path(sweep["results"])
    result = cli("report", NAME, "--results-dir", results)
    assert result.exit_code == 0, result.output
    markdown = re.sub(" +", " ", (results / NAME / "report.md").read_text())  # cells without their padding
    parent = runs[0]
    assert parent.info.run_id in result.stdout and parent.info.run_id in markdown
    for axis in AXES:
        assert f"\n{axis}  " in result.stdout and f"## {axis}" in markdown
        table = pd.read_parquet(results / NAME / "aggregates" / f"{axis}.parquet")
        for _, row in table.iterrows():
            assert f"| {row['metric']} | {row['mean']:.4g} |" in markdown
    assert "![Likelihood against equivariance ratio (Pareto front)](aggregates/pareto.png)" in markdown
    value, reference = front_hypervolume(runs[2], OBJECTIVES, MODES)
    front = (f"hypervolume {value:.4g} (reference log_likelihood {reference[0]:.4g}, "
             f"equivariance_ratio {reference[1]:.4g}")
    assert front in markdown and front in result.stdout


def test_presets_get_a_paper_style_table_and_one_picture_each(tmp_path):
    raw = tiny_raw()
    raw["space"] = {"paper_model": {"type": "preset", "values": {
        "vae": {"model.variant": "vae"}, "bubble": {"model.shift": 0}, "tvae": {"model.shift": 1}}},
        "train.seed": {"type": "categorical", "values": [0, 1]}}
    raw["search"] = {"algorithm": "grid", "scheduler": "fifo"}
    raw["baseline"] = "vae"
    spec = spec_from_dict(raw)
    rows = []
    for i, (variant, shift) in enumerate([("vae", 1), ("vae", 1), ("tvae", 0), ("tvae", 0), ("tvae", 1), ("tvae", 1)]):
        checkpoint = tmp_path / f"t{i}"
        checkpoint.mkdir()
        Image.new("RGB", (20, 10), (i * 40, 0, 0)).save(checkpoint / "forecast.png")
        rows.append({"trial_id": f"t{i}", "state": "TERMINATED", "config/model.variant": variant,
                     "config/paper_model": ["vae", "bubble", "tvae"][i // 2],
                     "config/model.shift": shift, "config/train.seed": i % 2, "checkpoint": str(checkpoint),
                     "final/log_likelihood": -100.0 - i, "final/equivariance_error": 10.0 * i,
                     "final/equivariance_error_init": 10.0 * i + 1, "final/equivariance_error_learned": -1.0})
    frame = pd.DataFrame(rows)
    sweep = SweepDir(tmp_path / "sweep")
    result = publish.compute(frame, spec, sweep)
    wide = pd.read_parquet(tmp_path / "sweep" / "aggregates" / "paper_model_summary.parquet")
    assert wide["paper_model"].tolist() == ["vae", "bubble", "tvae"]  # the spec's order
    assert wide["log_likelihood_mean"].tolist() == [-100.5, -102.5, -104.5]
    assert wide["equivariance_error_std"].tolist() == pytest.approx([pd.Series([0.0, 10]).std()] * 3)
    assert wide["count"].tolist() == [2, 2, 2]
    pictures = publish.pictures_by_value(frame, spec, sweep, "paper_model", "forecast.png")
    assert [(title.split("\n")[1], path.parent.name) for title, path in pictures] == \
        [("t0", "t0"), ("t2", "t2"), ("t4", "t4")]  # the best seed of each model
    assert "forecasts.png" in result.figures and "topographic_maps.png" not in result.figures
    _, markdown = report.render("paper", frame, spec, result, None)
    markdown = re.sub(" +", " ", markdown)  # cells without their padding
    assert "| vae | -100.5 ± 0.7071 [-106.9, -94.15] | 2 |" in markdown  # t(0.975, 1) = 12.71, sem 0.5
    assert "| vae | 5 ± 7.071 [-58.53, 68.53] (init 6 ± 7.071 [-57.53, 69.53]; learned -1 ± 0 [-1, -1]) | 2 |" \
        in markdown
    assert "| log_likelihood | bubble | 2 | -2 | [-2, -2] | 0 | 0 | lower (worse) |" in markdown  # each seed -2
    assert pd.read_parquet(tmp_path / "sweep" / "aggregates" / "comparisons.parquet")["model"].tolist()[:2] == \
        ["bubble", "tvae"]
    assert "(aggregates/forecasts.png)" in markdown


def test_reports_name_a_local_store_relative_to_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inside = Store(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}", "test", None)
    assert inside.portable() == "sqlite:///results/mlflow.db"
    outside = Store("sqlite:////elsewhere/mlflow.db", "test", None)
    assert outside.portable() == "sqlite:////elsewhere/mlflow.db"
    assert Store("http://alice:s3cret@host:5000", "test", None).portable() == "http://alice:***@host:5000"


def test_hooks_hand_their_mlflow_writes_to_the_tracking_thread_in_order(tmp_path):
    """A trial waits at each report until Tune's loop has run the hooks: they must not wait on MLflow."""
    release, written = threading.Event(), []

    class SlowRuns:  # stands in for SweepRuns: every write waits until released
        def child(self, trial_id, run_name, tags, params):
            return Child(f"run-{trial_id}", 0, RUNNING)

        def log_step(self, child, step, metrics, tags=None):
            assert release.wait(30)
            written.append((child.run_id, step, metrics["log_likelihood"]))

    tracking = MlflowTracking(TrialLog(Store("sqlite:///unused.db", "test", None), "e", spec_from_dict(spec_raw()),
                                       sweep_dir(tmp_path, "s")))
    tracking.log.children.runs = SlowRuns()
    trial = SimpleNamespace(trial_id="t1", status="RUNNING", config={"train.lr": 1e-3}, path=str(tmp_path),
                            last_result={}, checkpoint=None)
    started = time.monotonic()
    for epoch in (1, 2, 3):
        tracking.on_trial_result(epoch, [trial], trial, {"epoch": epoch, "log_likelihood": -float(epoch)})
    assert time.monotonic() - started < 5 and written == []  # the hooks returned; nothing written yet
    release.set()
    tracking.log.writer.drain()
    assert written == [("run-t1", 1, -1.0), ("run-t1", 2, -2.0), ("run-t1", 3, -3.0)]


def test_only_the_newest_aggregates_wait_for_a_busy_tracking_thread():
    """A long sweep's trials end faster than the thread writes the aggregates of every trial: at most
    one such write waits (the newest), while every trial's own write waits in order."""
    release, written = threading.Event(), []
    writer = Writer()
    writer.later("busy", lambda: release.wait(30))
    for i in range(100):
        writer.later("on_trial_complete", written.append, f"trial {i}")
        writer.latest("aggregates", "on_trial_complete", written.append, f"aggregates of {i + 1} trials")
    assert list(writer.waiting) == ["aggregates"]  # one waiting write of that kind, not 100
    copy = pickle.loads(pickle.dumps(writer))  # as Ray pickles the callbacks: settings only
    assert copy.pool is None and copy.waiting == {} and copy.lock is not writer.lock
    release.set()
    writer.drain()
    assert [w for w in written if w.startswith("trial")] == [f"trial {i}" for i in range(100)]
    assert [w for w in written if w.startswith("aggregates")] == ["aggregates of 100 trials"]
    assert written.index("aggregates of 100 trials") == 1  # where the first one stood, after trial 0
    writer.latest("aggregates", "on_trial_complete", written.append, "aggregates again")
    writer.drain()
    assert written[-1] == "aggregates again" and writer.waiting == {}  # the next one is written too


def test_tracking_warnings_reach_the_console_while_ray_output_goes_to_its_log(tmp_path, capsys):
    tracking = MlflowTracking(TrialLog(Store("sqlite:///unused.db", "test", None), "e", spec_from_dict(spec_raw()),
                                       sweep_dir(tmp_path, "s")))
    log = RayLog()
    with ray_output_to(log):  # as while Tune runs
        print("a line of Ray's", file=sys.stderr)
        tracking.log.writer.warn("on_trial_result", RuntimeError("the store went away"))
    err = capsys.readouterr().err
    assert "tvae-sweep: tracking: on_trial_result failed: RuntimeError: the store went away" in err
    assert "a line of Ray's" not in err
    log.attach(tmp_path)
    assert "a line of Ray's" in (tmp_path / "ray.log").read_text()
