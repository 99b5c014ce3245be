"""Helpers to run real sweeps from tests: specs, the CLI as a subprocess, its trials table."""
from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import yaml
from helpers import SPACE, tiny_raw
from mlflow import MlflowClient

CLI = [sys.executable, "-m", "tvae_sweep"]


def sweep_spec(tmp_path: Path, name: str = "spec.yaml", space: dict | None = None, **sections) -> Path:
    """A spec file of a tiny sweep of SPACE (or `space`), `sections` updating its sections."""
    raw = tiny_raw()
    raw["space"] = copy.deepcopy(space or SPACE)
    raw["search"] = {"algorithm": "random", "metric": "log_likelihood", "mode": "max", "num_trials": 6,
                     "max_concurrent": 2, "seed": 0, "scheduler": "asha", "grace_period": 1,
                     "reduction_factor": 3}
    raw["resources"] = {"cpus_per_trial": 1, "gpus_per_trial": 0}
    raw["train"].update(epochs=3)
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def cli_env(**extra) -> dict:
    env = dict(os.environ, RAY_ENABLE_UV_RUN_RUNTIME_ENV="0", PYTHONUNBUFFERED="1", **extra)
    env.pop("RAY_ADDRESS", None)
    return env


def run_cli(*args, timeout=600, input=None, **env) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=cli_env(**env), input=input)


def trials(results: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(results / name / "trials.parquet")


@contextmanager
def running(args: list, log: Path, env: dict | None = None):
    """The CLI started with `args` in its own process group, its output in `log`; the group is killed
    if it still runs when the block ends."""
    proc = subprocess.Popen([*CLI, *map(str, args)], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env=env or cli_env(), start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def reports(experiment: Path) -> dict[str, list[dict]]:
    """Trial folder -> the results it reported so far (result.json, one JSON line per epoch)."""
    out = {}
    for path in experiment.glob("*/result.json"):
        try:
            lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except (OSError, json.JSONDecodeError):  # being written
            continue
        out[path.parent.name] = lines
    return out


def launch_grid(folder: Path, name: str, space: dict, search: dict, ray_temp: str, **top) -> Path:
    """Launches a tiny grid spec with `space` and `search` from `folder`; returns its results folder."""
    raw = tiny_raw()
    raw.update(name=name, space=space, resources={"cpus_per_trial": 1}, **top,
               search={"algorithm": "grid", "metric": "log_likelihood", "mode": "max", "seed": 0,
                       "scheduler": "fifo", "max_concurrent": 2, **search})
    spec = folder / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(raw))
    results = folder / "results"
    proc = run_cli("launch", spec, "--results-dir", results, RAY_TMPDIR=ray_temp)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (folder / f"{name}.out").write_text(proc.stdout)
    return results


def child_runs(results: Path, experiment: str, stage: str | None = None) -> dict:
    """The runs of the search's trials (or of a later stage's: the confirmation's), by trial id."""
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return {r.data.tags["tvae_sweep.trial_id"]: r for r in runs
            if "tvae_sweep.trial_id" in r.data.tags and r.data.tags.get("tvae_sweep.stage") == stage}
