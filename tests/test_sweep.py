"""A real sweep on a real local Ray: trials, ASHA, the results table, exports, and a name clash."""
import dataclasses
import io
import json
import math
import os
import re
import time
import types
from datetime import datetime
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState
from rich.console import Console
from sweeps import run_cli, sweep_spec, trials

from benchmarks.eta_accuracy import configs_in_order, replayed, rows, saved_reports, stages
from tvae_sweep.sweep.console import TrialConsole, short_names
from tvae_sweep.sweep.eta import MAX_EXPONENT, PRIOR_EPOCHS, PRIOR_EXPONENT, Eta, finish_time, fitted_exponent
from tvae_sweep.sweep.fusion import MEMBERS, PARAMS, POINTS
from tvae_sweep.sweep.launch import sweep_eta, trial_queue
from tvae_sweep.sweep.pbt import full_points
from tvae_sweep.sweep.records import TrialRecord, records_of
from tvae_sweep.sweep.trainable import best_metrics
from tvae_sweep.sweep.validation import load_spec

pytestmark = pytest.mark.cost(216)  # seconds on 2 cores (measured): costliest files first


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory, ray_temp):
    tmp = tmp_path_factory.mktemp("sweep")
    spec = sweep_spec(tmp)
    results = tmp / "results"
    proc = run_cli("launch", spec, "--name", "e2e", "--results-dir", results, RAY_TMPDIR=ray_temp)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp, results, proc


def row_of(frame: pd.DataFrame, trial_id: str) -> pd.Series:
    return frame.set_index("trial_id").loc[trial_id]


def processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if entry.name.isdigit() and text in cmdline:
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


@pytest.mark.slow
def test_the_local_ray_cluster_ends_with_the_launch(finished_sweep, ray_temp):
    """A launch skips the interpreter's teardown, and still leaves nothing of the cluster it started
    (GCS, raylet, workers) running."""
    _, _, proc = finished_sweep
    assert list(Path(ray_temp).glob("ray/session_*"))  # the cluster lived in ray_temp
    deadline = time.monotonic() + 15
    while processes_mentioning(ray_temp) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_mentioning(ray_temp) == []


@pytest.mark.slow
def test_every_trial_finishes_with_a_config_in_the_space(finished_sweep):
    _, results, proc = finished_sweep
    frame = trials(results, "e2e")
    assert len(frame) == 6
    assert set(frame["state"]) == {"TERMINATED"}
    for _, row in frame.iterrows():
        assert row["config/model.seq_len"] == row["config/model.cap_dim"]
        assert 1 <= row["config/model.coherence_window"] <= row["config/model.seq_len"]
        has_shift = row.get("config/model.shift") == row.get("config/model.shift")  # not NaN
        assert has_shift == (row["config/model.variant"] == "tvae")
        assert 1e-5 <= row["config/train.lr"] <= 3e-3
    assert not frame.filter(like="config/").duplicated().any()  # no config trained twice
    assert "best trials by log_likelihood" in proc.stdout


@pytest.mark.slow
def test_the_console_shows_the_sweep_and_ray_writes_to_its_log(finished_sweep):
    """Not on a terminal: one line per trial event; Ray's banner and warnings in the sweep's ray.log."""
    _, results, proc = finished_sweep
    frame = trials(results, "e2e")
    for trial_id in frame["trial_id"]:
        assert re.search(rf"trial {trial_id} started\n", proc.stdout)
        said = "finished" if row_of(frame, trial_id)["epochs"] == 3 else "stopped by ASHA at rung 0"
        assert re.search(rf"trial {trial_id} {said} after \d+ epochs  log_likelihood -?\d", proc.stdout)
    # at the end every planned epoch is done: those of the trials ASHA stopped left the plan
    assert re.search(r"6/6 trials done, 0 running, 0 pending; (\d+)/\1 epochs;", proc.stdout), proc.stdout[-500:]
    shown = proc.stdout + proc.stderr
    for ray_text in ("Configuration for experiment", "View detailed results here", "snapshotting",
                     "Token authentication", "TensorBoard"):
        assert ray_text not in shown
    assert "Configuration for experiment" in (results / "e2e" / "ray.log").read_text()


@pytest.mark.slow
def test_asha_stops_some_trials_early(finished_sweep):
    _, results, _ = finished_sweep
    frame = trials(results, "e2e")
    assert frame["epochs"].min() < 3 and frame["epochs"].max() == 3
    # rungs at epoch 1 (and 3, the last): the trials it stopped after their first epoch, at rung 0
    assert frame.loc[frame["epochs"] < 3, "epochs"].eq(1).all()
    assert frame.loc[frame["epochs"] < 3, "stopped_at_rung"].eq(0).all()
    assert frame.loc[frame["epochs"] == 3, "stopped_at_rung"].isna().all()


@pytest.mark.slow
def test_results_table_as_csv_and_parquet(finished_sweep):
    tmp, results, _ = finished_sweep
    for suffix in (".csv", ".parquet"):
        out = tmp / f"table{suffix}"
        proc = run_cli("results", "e2e", "--results-dir", results, "--out", out)
        assert proc.returncode == 0, proc.stderr
        frame = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
        assert len(frame) == 6
        for column in ("trial_id", "state", "epochs", "time_s", "final/log_likelihood", "best/log_likelihood",
                       "final/equivariance_error", "config/model.cap_dim", "checkpoint"):
            assert column in frame.columns
        assert (frame["best/log_likelihood"] >= frame["final/log_likelihood"] - 1e-9).all()
        # per-trial histories agree with the table
        row = frame.iloc[0]
        history = [json.loads(line) for line in
                   open(Path(row["checkpoint"]).parent / "result.json")]
        assert history[-1]["log_likelihood"] == pytest.approx(row["final/log_likelihood"])
        assert max(h["log_likelihood"] for h in history) == pytest.approx(row["best/log_likelihood"])


def test_a_trials_best_counts_its_whole_history_in_each_metrics_direction():
    history = [{"epoch": 1, "train_loss": 5.0, "loss": float("nan"), "log_likelihood": -300.0,
                "equivariance_ratio": 0.9},
               {"epoch": 2, "train_loss": 4.0},
               {"epoch": 3, "train_loss": 4.5, "loss": 3.0, "log_likelihood": -310.0, "equivariance_ratio": 0.7}]
    assert best_metrics(history) == {"loss": 3.0, "train_loss": 4.0, "log_likelihood": -300.0,
                                     "equivariance_ratio": 0.7}
    assert best_metrics([]) == {}


@pytest.mark.slow
def test_exported_best_configs_train_as_they_are(finished_sweep):
    tmp, results, _ = finished_sweep
    out = tmp / "best"
    proc = run_cli("export-best", "e2e", "--results-dir", results, "--top", "2", "--out", out)
    assert proc.returncode == 0, proc.stderr
    files = sorted(out.glob("rank*.yaml"))
    assert [f.name[:5] for f in files] == ["rank1", "rank2"]
    frame = trials(results, "e2e")
    best = frame.sort_values("final/log_likelihood", ascending=False).iloc[0]
    assert best["trial_id"] in files[0].name
    exported = yaml.safe_load(files[0].read_text())
    assert exported["model"]["cap_dim"] == best["config/model.cap_dim"]
    assert "checkpoint:" in files[0].read_text()
    proc = run_cli("train", files[0], "--output", tmp / "retrain")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp / "retrain" / "metrics.json").read_text())["final"]["epoch"] == exported["train"]["epochs"]


@pytest.mark.slow
def test_status_and_list_show_the_sweep(finished_sweep):
    _, results, _ = finished_sweep
    proc = run_cli("list", "--results-dir", results)
    assert proc.returncode == 0 and "e2e" in proc.stdout and "finished" in proc.stdout
    proc = run_cli("status", "e2e", "--results-dir", results)
    assert proc.returncode == 0 and "MB on disk" in proc.stdout and "TERMINATED" in proc.stdout
    # the footprint it reports is the folder's
    shown = float(re.search(r"([0-9.]+) MB on disk", proc.stdout).group(1))
    on_disk = sum(f.stat().st_size for f in (results / "e2e").rglob("*") if f.is_file()) / 1e6
    assert abs(shown - on_disk) <= 0.1 + 0.05 * on_disk


@pytest.mark.slow
def test_a_finished_trial_keeps_one_checkpoint_of_weights_and_ray_writes_no_unread_logs(finished_sweep):
    _, results, _ = finished_sweep
    frame = trials(results, "e2e")
    trial_dirs = list((results / "e2e" / "tune").glob("train_trial_*"))
    assert len(trial_dirs) == 6 and frame["epochs"].min() < frame["epochs"].max()  # ASHA-stopped ones too
    for folder in trial_dirs:
        checkpoints = list(folder.glob("checkpoint_*"))
        assert len(checkpoints) == 1, folder
        state = torch.load(checkpoints[0] / "state.pt", weights_only=True)
        assert "model" in state and "optimizer" not in state and "rng" not in state
        assert str(checkpoints[0]) in set(frame["checkpoint"])  # the one Ray reports as the trial's
        assert (folder / "result.json").is_file()
        assert not list(folder.glob("events.out.tfevents*")) and not (folder / "progress.csv").exists()


@pytest.mark.slow
def test_launching_an_existing_name_never_overwrites_it(finished_sweep):
    tmp, results, _ = finished_sweep
    before = (results / "e2e" / "trials.parquet").stat().st_mtime
    proc = run_cli("launch", sweep_spec(tmp, "again.yaml"), "--name", "e2e", "--results-dir", results)
    assert proc.returncode == 2
    assert "tvae-sweep resume e2e" in proc.stderr and "--overwrite" in proc.stderr
    assert (results / "e2e" / "trials.parquet").stat().st_mtime == before


@pytest.mark.slow
def test_prune_keeps_the_best_trials_weights_after_saying_what_it_frees(finished_sweep):
    """Last of the tests on this sweep: it removes weights."""
    tmp, results, _ = finished_sweep
    frame = trials(results, "e2e")
    best = frame.sort_values("final/log_likelihood", ascending=False)["trial_id"].iloc[:2].tolist()
    state = results / "e2e" / "sweep.json"
    saved = state.read_text()
    state.write_text(json.dumps({**json.loads(saved), "status": "running", "pid": os.getpid()}))
    proc = run_cli("prune", "e2e", "--keep-best", "2", "--yes", "--results-dir", results)
    assert proc.returncode == 2 and "is running" in proc.stderr, proc.stderr
    state.write_text(saved)
    for args, message in ((["--keep-best", "-1"], "--keep-best"), (["--keep-best", "1"], "no sweep named")):
        name = "e2e" if "-1" in args else "nothing"
        proc = run_cli("prune", name, *args, "--yes", "--results-dir", results)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(list((results / "e2e" / "tune").glob("train_trial_*/checkpoint_*/state.pt"))) == 6  # nothing removed

    proc = run_cli("prune", "e2e", "--keep-best", "2", "--results-dir", results, input="n\n")
    assert proc.returncode != 0 and "removes the weights of 4 finished trials" in proc.stdout
    assert len(list((results / "e2e" / "tune").glob("train_trial_*/checkpoint_*/state.pt"))) == 6
    pictures = len(list((results / "e2e" / "tune").glob("train_trial_*/checkpoint_*/*.png")))
    proc = run_cli("prune", "e2e", "--keep-best", "2", "--yes", "--results-dir", results)
    assert proc.returncode == 0, proc.stderr
    kept = {p.parent.parent.name for p in (results / "e2e" / "tune").glob("train_trial_*/checkpoint_*/state.pt")}
    assert len(kept) == 2 and all(any(t in name for name in kept) for t in best)
    # what a user still has: configs, tables, pictures, and a retrain of any trial
    proc = run_cli("export-best", "e2e", "--results-dir", results, "--top", "3", "--out", tmp / "after_prune")
    assert proc.returncode == 0, proc.stderr
    assert len(list((results / "e2e" / "tune").glob("train_trial_*/checkpoint_*/*.png"))) == pictures > 0
    proc = run_cli("train", sorted((tmp / "after_prune").glob("rank3_*.yaml"))[0], "--output", tmp / "rank3")
    assert proc.returncode == 0, proc.stderr[-2000:]


TWO_CONFIGS = {"model.n_caps": {"type": "categorical", "values": [2, 3]}}
TWIN = {"model.n_caps": 2}


@pytest.mark.slow
def test_multi_objective_asha_stops_trials_that_evaluate_every_other_epoch_and_no_config_runs_twice(tmp_path):
    """Rungs at epochs 1 and 2 of 3; the first report with the objectives is epoch 2's (eval_every 2:
    the scheduler and the searcher wait for it), recorded at rung 1, where of the first two trials to
    arrive one goes on (ceil(2 / 2)) and the other stops. Two warm starts train the same config
    under the same seed (taken as given); TPE then finds one new config of the two-config space, and
    the fourth trial planned finds none: the sweep ends, finished, after three."""
    spec = sweep_spec(tmp_path, space=TWO_CONFIGS, train={"epochs": 3, "eval_every": 2},
                      search={"algorithm": "tpe", "metric": ["log_likelihood", "kl_z"], "mode": ["max", "min"],
                              "scheduler": "asha", "grace_period": 1, "reduction_factor": 2, "num_trials": 4,
                              "max_concurrent": 2, "warm_start": [TWIN, TWIN]})
    results = tmp_path / "results"
    proc = run_cli("launch", spec, "--name", "moasha", "--results-dir", results)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "the space holds no config beyond the 2 asked for: the sweep ended after 3 of 4 trials" in proc.stdout
    frame = trials(results, "moasha")
    assert sorted(frame["config/model.n_caps"]) == [2, 2, 3]
    objectives = ["final/log_likelihood", "final/kl_z"]
    assert len(frame) == 3 and set(frame["state"]) == {"TERMINATED"} and frame[objectives].notna().all().all()
    stopped = frame[frame["epochs"] < 3]
    assert len(stopped) >= 1 and set(stopped["epochs"]) == {2} and set(stopped["stopped_at_rung"]) == {1}
    assert frame.loc[frame["epochs"] == 3, "stopped_at_rung"].isna().all()
    for trial_id in stopped["trial_id"]:
        assert re.search(rf"trial {trial_id} stopped by ASHA at rung 1 after 2 epochs", proc.stdout)
    saved = json.loads((results / "moasha" / "rungs.json").read_text())  # what a resumed sweep continues from
    assert saved["stopped"] == dict.fromkeys(stopped["trial_id"], 1)
    assert set(saved["recorded"][1]) == set(frame["trial_id"])

    study = optuna.load_study(study_name="moasha", storage=f"sqlite:///{results / 'moasha' / 'optuna.db'}")
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == len(frame) - len(stopped)
    assert sorted((t.user_attrs["last_values"]["log_likelihood"], t.user_attrs["last_values"]["kl_z"])
                  for t in pruned) == sorted(map(tuple, stopped[objectives].to_numpy().tolist()))
    assert {t.user_attrs["stopped_at_rung"] for t in pruned} == {1}

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("moasha").experiment_id])
    rungs = {r.data.tags.get("tvae_sweep.trial_id"): r.data.tags.get("tvae_sweep.stopped_at_rung") for r in runs}
    assert {trial_id: rungs[trial_id] for trial_id in frame["trial_id"]} == \
        {trial_id: "1" if trial_id in set(stopped["trial_id"]) else None for trial_id in frame["trial_id"]}


@pytest.mark.slow
def test_pbt_continues_trials_from_better_ones_with_mutated_values(tmp_path):
    """Three trials that differ in lr only, one of them far too slow: at the first evaluation (epoch
    2: with eval_every 2 the first report holds no objective, and PBT waits for one) it is the
    population's worst, and synchronous PBT must exploit it (clone a better trial's config and
    checkpoint, then perturb lr), whatever the timing."""
    spec = sweep_spec(tmp_path, train={"epochs": 3, "eval_every": 2}, data={"train_sequences": 64},
                      resources={"cpus_per_trial": 0.5},
                      search={"algorithm": "random", "scheduler": "pbt", "num_trials": 3, "max_concurrent": 3,
                              "perturbation_interval": 2, "mutate": ["train.lr"],
                              "warm_start": [{"train.lr": 1e-5}, {"train.lr": 3e-3}, {"train.lr": 2e-3}]})
    results = tmp_path / "results"
    proc = run_cli("launch", spec, "--name", "pbt", "--results-dir", results)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    frame = trials(results, "pbt")
    assert len(frame) == 3 and set(frame["state"]) == {"TERMINATED"}
    # PBT's own record of each exploitation: [target trial's index in the population, the index of
    # the trial it clones, their epochs, the clone's config, the target's new config]
    steps = [json.loads(line) for line in (results / "pbt" / "tune" / "pbt_global.txt").read_text().splitlines()]
    assert steps and steps[0][0] == "0" and steps[0][1] != "0", steps  # the slow trial first
    population = full_points(load_spec(results / "pbt" / "spec.yaml"))
    def without_lr(config):
        return {k: v for k, v in config.items() if k != "train.lr"}

    for *_, clone, new in steps:
        assert without_lr(new) == without_lr(clone) and without_lr(new) in map(without_lr, population)
        assert 1e-5 <= new["train.lr"] <= 3e-3  # explored (perturbed or resampled) inside the space

class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def record(i: int, state: str, epochs: int, config: dict | None = None, **last) -> TrialRecord:
    """A trial as Ray names them (experiment id, counter), `epochs` reported."""
    return TrialRecord(trial_id=f"8e3f1_{i:05d}", ray_id=f"8e3f1_{i:05d}", state=state, config=config or {},
                       last={"training_iteration": epochs, **last}, epochs=epochs)


def timed(i: int, state: str, epochs: int, seconds: float, config: dict | None = None, ray_id: str | None = None,
          ray_state: str = "RUNNING") -> TrialRecord:
    """A trial that has reported `epochs` epochs in `seconds` of its own time."""
    r = record(i, state, epochs, config)
    return dataclasses.replace(r, time_s=seconds, ray_state=ray_state, ray_id=ray_id or r.ray_id)


def test_the_eta_costs_each_trials_epochs_at_its_own_rate_and_fills_the_free_slot_first():
    """4 trials of 10 epochs, 2 at once: trial 0 has taken 10 s an epoch, trial 1 2 s; with the
    median (6 s) counted as PRIOR_EPOCHS more epochs of each, 8 s and 4 s. The two not yet created
    cost the median of those, 6 s an epoch, each on the slot that frees first."""
    assert PRIOR_EPOCHS == 2
    eta = Eta(total=4, epochs=10)
    assert eta.seconds_left([record(0, "RUNNING", 0)]) is None and eta.planned([]) == 40  # nothing reported
    running = [timed(0, "RUNNING", 2, 20.0), timed(1, "RUNNING", 2, 4.0)]  # 64 s and 32 s left
    # trial 1's slot frees at 32 s: trial 2 there until 92 s; trial 0's at 64 s: trial 3 there until 124 s
    assert eta.seconds_left(running) == pytest.approx(124)
    console = TrialConsole([], ["log_likelihood"], Eta(total=4, epochs=10), clock=FakeClock())
    assert console.progress_line(running).endswith("pending; 4/40 epochs; 0m00s elapsed, about 2m04s to go")


def test_the_eta_drops_a_stopped_trials_epochs_and_keeps_the_slots_it_has_seen():
    eta = Eta(total=3, epochs=10)
    eta.seconds_left([timed(0, "RUNNING", 1, 5.0), timed(1, "RUNNING", 1, 5.0)])  # two slots seen
    stopped = [timed(0, "TERMINATED", 3, 15.0, ray_state="TERMINATED"), timed(1, "RUNNING", 4, 20.0)]  # ASHA stopped 0
    assert eta.planned(stopped) == 3 + 10 + 10
    assert eta.seconds_left(stopped) == pytest.approx(max(6 * 5.0, 10 * 5.0))  # trial 2 on the free slot
    searched = [timed(0, "RUNNING", 2, 2.0, {"train.epochs": 4})]  # a searched train.epochs is the trial's own
    assert eta.planned(searched) == 4 + 2 * 10


def test_the_eta_of_a_fused_trial_is_its_own_and_its_points_share_it():
    """Two points trained as one Ray trial at 8 s an epoch: 4 s an epoch per point for the point
    not yet created, which runs alone after them."""
    fused = [timed(i, "RUNNING", 5, 40.0, ray_id="8e3f1_00000") for i in (0, 1)]
    assert Eta(total=3, epochs=10).seconds_left(fused) == pytest.approx(5 * 8.0 + 10 * 4.0)


def test_the_trials_not_started_cost_the_median_rate_of_the_latest_two_per_slot():
    """Two costly warm starts first (10 s an epoch), then cheaper trials (1 s, 2 s, 2 s): with one
    slot, the two latest price the trial not yet created, not the warm starts nor the 1 s one."""
    eta = Eta(total=6, epochs=10)
    ended = [timed(i, "TERMINATED", 10, seconds, ray_state="TERMINATED")
             for i, seconds in enumerate((100.0, 100.0, 10.0, 20.0))]
    assert eta.seconds_left([*ended, timed(4, "RUNNING", 5, 10.0)]) == pytest.approx(5 * 2.0 + 10 * 2.0)


def test_the_warm_starts_price_the_trials_not_started_only_until_a_drawn_trial_reports():
    """The spec's two warm starts at 10 s an epoch, then the sampler's first trial at 3 s: the trial
    not yet created costs 3 s an epoch, not the median of 10 and 3."""
    warm = [timed(i, "TERMINATED", 10, 100.0, ray_state="TERMINATED") for i in (0, 1)]
    assert Eta(total=4, epochs=10, given=2).seconds_left(warm) == pytest.approx(2 * 10 * 10.0)
    drawn = [*warm, timed(2, "RUNNING", 5, 15.0)]
    assert Eta(total=4, epochs=10, given=2).seconds_left(drawn) == pytest.approx(5 * 3.0 + 10 * 3.0)
    assert Eta(total=4, epochs=10).seconds_left(drawn) > 1.5 * (5 * 3.0 + 10 * 3.0)  # the warm starts count


def test_a_trial_not_yet_reported_costs_what_its_config_predicts():
    """Two trials reported: an epoch of cost 4 took 8 s, one of cost 1 took 2 s (seconds grow as the
    cost to the power 1); a third of cost 2, just started, is priced at 4 s an epoch, not its own
    (none yet) nor the median."""
    eta = Eta(total=3, epochs=10, cost=lambda config: config["model.n_caps"])
    seen = [timed(0, "RUNNING", 5, 40.0, {"model.n_caps": 4}), timed(1, "RUNNING", 5, 10.0, {"model.n_caps": 1}),
            timed(2, "RUNNING", 0, float("nan"), {"model.n_caps": 2})]
    assert eta.seconds_left(seen) == pytest.approx(max(5 * 8.0, 5 * 2.0, 10 * 4.0))


def test_a_trials_epoch_cost_is_priced_once_not_at_every_estimate():
    priced = []
    eta = Eta(total=2, epochs=10, cost=lambda config: priced.append(config) or config["model.n_caps"])
    seen = [timed(0, "RUNNING", 5, 40.0, {"model.n_caps": 4}), timed(1, "RUNNING", 5, 10.0, {"model.n_caps": 1})]
    first = eta.seconds_left(seen)
    assert eta.seconds_left(seen) == first and len(priced) == 2


def test_a_trials_first_epoch_alone_does_not_price_it():
    """Its first epoch started its data, model and threads (6 s, three times the others' 2 s an
    epoch): until its second, a trial costs what the trials past theirs cost."""
    eta = Eta(total=2, epochs=10)
    eta.observe(2)
    assert eta.seconds_left([timed(0, "RUNNING", 5, 10.0), timed(1, "RUNNING", 1, 6.0)]) == pytest.approx(9 * 2.0)


def test_the_cost_exponent_is_fitted_once_the_costs_differ_and_kept_within_bounds():
    assert fitted_exponent([]) == PRIOR_EXPONENT
    assert fitted_exponent([(0.0, 1.0), (0.1, 5.0)]) == PRIOR_EXPONENT  # costs 1 and 1.1: too close to tell
    power = [(math.log(c), math.log(3.0 * c ** 0.6)) for c in (1.0, 4.0, 9.0)]
    assert fitted_exponent(power) == pytest.approx(0.6)
    assert fitted_exponent([(0.0, 1.0), (1.0, 0.5)]) == 0.0  # a costlier epoch taking less time: noise
    assert fitted_exponent([(0.0, 0.0), (1.0, 3.0)]) == MAX_EXPONENT


def test_a_grids_trials_not_yet_created_are_priced_by_their_configs():
    """The confirmation's case: its two 18x18 bundles (cost 9) ran first at 10 s an epoch; its two
    small bundles (cost 1), not yet created, cost 10 / 9^PRIOR_EXPONENT s an epoch, not 10: one slot each."""
    big, small = {"model.n_caps": 9}, {"model.n_caps": 1}
    eta = Eta(total=4, epochs=10, cost=lambda config: config["model.n_caps"], queue=[[big], [big], [small], [small]])
    eta.observe(2)
    ended = [timed(i, "TERMINATED", 10, 100.0, big, ray_state="TERMINATED") for i in (0, 1)]
    assert eta.planned(ended) == 40
    assert eta.seconds_left(ended) == pytest.approx(10 * 10.0 / 9 ** PRIOR_EXPONENT)
    sampler = Eta(total=4, epochs=10)
    sampler.observe(2)
    assert sampler.seconds_left(ended) == pytest.approx(10 * 10.0)  # a sampler's: at the latest trials' rate


def test_the_sweeps_eta_knows_a_grids_trials_costliest_first_and_a_samplers_not(tmp_path):
    grid = load_spec(sweep_spec(tmp_path, search={"algorithm": "grid", "scheduler": "fifo"},
                                space={"model.n_caps": {"type": "categorical", "values": [2, 4, 3]}}))
    eta = sweep_eta(grid)
    assert [points[0]["model.n_caps"] for points in trial_queue(grid)] == [4, 3, 2]
    assert eta.cost({"model.n_caps": 4}) == 2 * eta.cost({"model.n_caps": 2})
    tpe = load_spec(sweep_spec(tmp_path, search={"algorithm": "tpe"}))
    assert sweep_eta(tpe).queue is None and sweep_eta(tpe).total == tpe.search.num_trials


def test_a_samplers_eta_given_the_configs_it_drew_prices_them_as_a_grids(tmp_path):
    """The benchmark's --known-configs: the queue given, priced by each config."""
    tpe = load_spec(sweep_spec(tmp_path, search={"algorithm": "tpe"}))
    drawn = [[{"model.n_caps": 4}], [{"model.n_caps": 2}]]
    eta = sweep_eta(tpe, drawn)
    assert [q.cost for q in eta.queue] == [eta.cost(points[0]) for points in drawn]
    assert eta.queue[0].cost == 2 * eta.queue[1].cost


def test_the_console_counts_the_trials_running_as_each_starts():
    console = TrialConsole([], ["log_likelihood"], Eta(total=4, epochs=3), stream=io.StringIO())
    both = [ray_trial(0, "RUNNING", 0), ray_trial(1, "PENDING", 0)]  # Ray marks trial 1 RUNNING after the callback
    console.on_trial_start(0, both, both[1])
    assert console.eta.slots == 2


def test_the_last_slot_to_free_ends_the_sweep():
    assert finish_time([], [], slots=2) == 0.0
    assert finish_time([5.0], [1.0, 1.0, 1.0], slots=2) == 5.0  # the free slot takes all three
    assert finish_time([5.0, 1.0], [10.0], slots=2) == 11.0


CAPSULES = ["model.n_caps", "model.cap_dim", "model.n_off_diag", "model.coherence_window", "model.shift",
            "model.mu_init"]
OBJECTIVES = ["log_likelihood", "equivariance_ratio_learned"]


def capsules_records() -> list[TrialRecord]:
    states = ["TERMINATED", "RUNNING", "ERROR", "PENDING"]
    config = {"model.n_caps": 18, "model.cap_dim": 18, "model.n_off_diag": 2, "model.coherence_window": 13,
              "model.shift": 1, "model.mu_init": 30.0}
    return [record(i, states[i % 4], 20, config, log_likelihood=-1234.5678 - i, equivariance_ratio_learned=-0.01234)
            for i in range(24)]


def rendered(console: TrialConsole, records: list[TrialRecord], width: int) -> list[str]:
    screen = Console(width=width, record=True, file=io.StringIO())
    screen.print(console.view(records, width))
    return screen.export_text().splitlines()


def test_the_live_table_fits_120_columns_without_cutting_a_word():
    console = TrialConsole(CAPSULES, OBJECTIVES, Eta(total=24, epochs=20))
    records = capsules_records()
    records[4] = dataclasses.replace(records[4], epochs=2, stopped_at_rung=11)  # ASHA stopped it at rung 11
    lines = rendered(console, records, 120)
    assert max(map(len, lines)) <= 120 and not any("…" in line for line in lines)
    assert lines[1].split() == ["trial", "state", "n_caps", "cap_dim", "K", "window", "shift", "mu", "epoch",
                                *OBJECTIVES]
    assert lines[2].split() == ["8e3f1_00000", "TERMINATED", "18", "18", "2", "13", "1", "30", "20", "-1235",
                                "-0.01234"]
    assert {line.split()[1] for line in lines[2:]} == {"TERMINATED", "RUNNING", "ERROR", "PENDING", "STOPPED"}
    assert lines[6].split()[:3] == ["8e3f1_00004", "STOPPED", "r11"]


def test_a_narrow_table_leaves_out_searched_keys_last_first_and_keeps_the_objectives():
    console = TrialConsole(CAPSULES, OBJECTIVES, Eta(total=24, epochs=20))
    lines = rendered(console, capsules_records(), 100)
    assert max(map(len, lines)) <= 100 and not any("…" in line for line in lines)
    assert lines[1].split() == ["trial", "state", "n_caps", "cap_dim", "K", "epoch", *OBJECTIVES]
    assert lines[-1].strip() == "not shown, for the width: window, shift, mu"


def test_searched_keys_that_share_a_last_name_keep_their_whole_names():
    assert short_names(["model.n_off_diag", "train.seed", "data.seed", "train.lr"]) == \
        ["K", "train.seed", "data.seed", "lr"]


def ray_trial(i: int, status: str, epoch: int) -> types.SimpleNamespace:
    """A stand-in for Ray's trial t<i> after `epoch` epochs of 5 s each (0: no report yet)."""
    return types.SimpleNamespace(
        trial_id=f"t{i}", status=status, config={"model.n_caps": 2 + i}, path="/nowhere", checkpoint=None,
        last_result={"training_iteration": epoch, "time_total_s": 5.0 * epoch, "log_likelihood": -100.0 - i}
        if epoch else {})


def test_on_a_terminal_the_console_redraws_one_table_under_a_progress_line():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    clock = FakeClock()
    console = TrialConsole(["model.n_caps"], ["log_likelihood"], Eta(total=3, epochs=3), stream=screen, clock=clock)
    console.on_trial_start(0, [ray_trial(0, "RUNNING", 0)], ray_trial(0, "RUNNING", 0))
    clock.now += 40
    population = [ray_trial(0, "TERMINATED", 3), ray_trial(1, "RUNNING", 1)]
    console.on_trial_complete(0, population, population[0])  # one slot: t1's 2 epochs, then t2's 3, at 5 s each
    console.on_experiment_end(population)
    out = screen.getvalue()
    words = " ".join(out.split())  # the progress line wraps at the terminal's width
    assert "1/3 trials done, 1 running, 1 pending; 4/9 epochs; 0m40s elapsed, about 0m25s to go" in words
    assert "\x1b[" in out  # drawn in place with cursor movements, not appended
    assert "trial t0 finished" not in out  # event lines are for logs, not terminals
    assert "-101" in out and "TERMINATED" in out


def test_in_a_log_a_trials_end_is_followed_by_the_progress_line_at_most_every_30_s():
    log = io.StringIO()
    clock = FakeClock()
    console = TrialConsole(["model.n_caps"], ["log_likelihood"], Eta(total=3, epochs=3), stream=log, clock=clock)
    clock.now += 10
    # Ray calls the callbacks of a trial's end while the trial is RUNNING still
    population = [ray_trial(0, "RUNNING", 3), ray_trial(1, "RUNNING", 1), ray_trial(2, "RUNNING", 1)]
    console.on_trial_complete(0, population, population[0])  # t1 and t2 at once: 2 epochs of 5 s each
    clock.now += 5
    population[:2] = [ray_trial(0, "TERMINATED", 3), ray_trial(1, "RUNNING", 3)]
    console.on_trial_complete(0, population, population[1])  # 5 s later: no second progress line
    lines = log.getvalue().splitlines()
    assert [line.split("  ", 1)[1].split(" after")[0] for line in lines] == \
        ["trial t0 finished", "1/3 trials done, 2 running, 0 pending; 5/9 epochs; 0m10s elapsed, about 0m10s to go",
         "trial t1 finished"]


def test_the_console_shows_each_point_of_a_fused_trial():
    log = io.StringIO()
    console = TrialConsole(["model", "train.seed"], ["log_likelihood"], Eta(total=3, epochs=1), stream=log)
    fused = types.SimpleNamespace(
        trial_id="f", status="TERMINATED", path="/nowhere", checkpoint=None,
        config={POINTS: [{"model.shift": 1, "train.seed": s} for s in (0, 1, 2)],
                PARAMS: [{"model": "shifting", "train.seed": s} for s in (0, 1, 2)]},
        last_result={"training_iteration": 2, MEMBERS: [{"log_likelihood": -100.0}, {"log_likelihood": -101.0},
                                                         {"error": "non-finite loss at epoch 2"}]})
    console.on_trial_complete(0, [fused], fused)
    console.on_experiment_end([fused])
    lines = log.getvalue().splitlines()
    assert [line.split("  ", 1)[1].split(" after")[0] for line in lines[:3]] == \
        ["trial f_p0 finished", "trial f_p1 finished", "trial f_p2 failed"]
    assert "log_likelihood -101" in lines[1]
    assert lines[-1].startswith("3/3 trials done, 0 running, 0 pending")
    rows = console.rows(records_of([fused]))
    assert [row[:4] for row in rows] == [["f_p0", "TERMINATED", "shifting", "0"],
                                         ["f_p1", "TERMINATED", "shifting", "1"],
                                         ["f_p2", "ERROR", "shifting", "2"]]


def test_the_eta_benchmark_reads_each_stages_estimates_against_its_end():
    log = ["sweep capsules: 2 trials, results in /r", "10:00:00  trial a started",
           "10:01:00  1/2 trials done, 1 running, 0 pending; 5/10 epochs; 1m00s elapsed, about 1m30s to go",
           "10:03:00  trial b finished after 5 epochs", "sweep capsules, confirm stage: 1 trials",
           "10:04:00  0/1 trials done, 1 running, 0 pending; 1/4 epochs; 0m10s elapsed, about 1h02m to go",
           "10:05:00  trial c finished after 4 epochs"]
    by_stage = stages(log)
    assert list(by_stage) == ["search", "confirm"]
    assert rows(by_stage["search"]) == [("10:01:00", 0.5, 90.0, 120.0)]
    assert rows(by_stage["confirm"]) == [("10:04:00", 0.25, 3720.0, 60.0)]


def test_the_eta_benchmark_can_price_a_samplers_trials_by_the_configs_it_drew():
    """--known-configs: the configs in the order their trials started (a report's timestamp less its time)."""
    reports = {"late": [{"config": {"model.n_caps": 6}, "timestamp": 100, "time_total_s": 10.0}],
               "early": [{"config": {"model.n_caps": 18}, "timestamp": 100, "time_total_s": 50.0}]}
    assert configs_in_order(reports) == [[{"model.n_caps": 18}], [{"model.n_caps": 6}]]


def test_the_eta_benchmark_replays_the_current_estimator_on_a_saved_sweep(tmp_path):
    """Two trials of 4 epochs at once, 10 s an epoch: at 10:00:20 each has reported 2 epochs, so
    20 s are left, and the third trial (not yet created) takes 40 s more on the first slot to free;
    replayed every 20 s, at 10:00:40 only the third is left."""
    start = datetime(2026, 12, 3, 10, 0, 0).timestamp()
    for trial_id in ("a", "b"):
        folder = tmp_path / f"train_trial_{trial_id}"
        folder.mkdir()
        reports = [{"trial_id": trial_id, "training_iteration": e, "time_total_s": 10.0 * e,
                    "timestamp": int(start + 10 * e), "config": {"model.n_caps": 2}} for e in range(1, 5)]
        (folder / "result.json").write_text("\n".join(json.dumps(r) for r in reports))
    log = ["sweep s: 3 trials, results in /r", "10:00:00  trial a started", "10:00:00  trial b started",
           "10:00:20  0/3 trials done, 2 running, 1 pending; 4/12 epochs; 0m20s elapsed, about 9m00s to go",
           "10:01:20  trial c finished after 4 epochs"]
    assert replayed(log, saved_reports(tmp_path), Eta(total=3, epochs=4)) == [("10:00:20", 4 / 12, 60.0, 60.0)]
    dense = replayed(log, saved_reports(tmp_path), Eta(total=3, epochs=4), every=20)
    assert [t for t, *_ in dense] == ["10:00:00", "10:00:20", "10:00:40", "10:01:00"]
    assert dense[2] == ("10:00:40", 8 / 12, 40.0, 40.0)
