"""Helpers to run real sweeps from tests: specs, the CLI as a subprocess, its trials table."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml
from helpers import SPACE, tiny_raw

CLI = [sys.executable, "-m", "tvae_sweep"]


def sweep_spec(tmp_path: Path, name: str = "spec.yaml", **sections) -> Path:
    raw = tiny_raw()
    raw["space"] = copy.deepcopy(SPACE)
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


def run_cli(*args, timeout=600, **env) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=cli_env(**env))


def trials(results: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(results / name / "trials.parquet")
