"""A sweep whose results folder (Ray's trials, the MLflow store, the Optuna study) fills its disk: a real
tmpfs of a few MB mounted for the test. The launch stops with one line and exit code 1, and once
the disk is bigger, `tvae-sweep resume` finishes every trial. Ray's files on it are written whole or
not at all (tvae_sweep/sweep/whole_files.py), which the resume needs."""
from __future__ import annotations

import errno
import io
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient
from sweeps import run_cli, sweep_spec, trials

from tvae_sweep.sweep.disk import EXIT_CODE, no_space, stop_line
from tvae_sweep.sweep.layout import SweepDir
from tvae_sweep.sweep.whole_files import whole_files

pytestmark = pytest.mark.cost(85)  # seconds on 2 cores (measured): costliest files first

SMALL_MB = 6  # room for the sweep to start (MLflow's store, the first trials) but not to finish
BIG_MB = 64  # the whole sweep takes about 13 MB


def mount_tmpfs(folder: Path, size_mb: int, remount: bool = False) -> subprocess.CompletedProcess:
    options = f"remount,size={size_mb}m" if remount else f"size={size_mb}m"
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True, text=True)


@pytest.fixture
def small_disk(tmp_path):
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = mount_tmpfs(folder, SMALL_MB)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here (it needs root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


def test_a_file_written_on_a_full_disk_keeps_its_previous_version(small_disk):
    """What Ray's experiment state needs: its copy to the storage folder written whole or not at all."""
    fs = whole_files()
    state = small_disk / "experiment_state.json"
    with fs.open_output_stream(str(state)) as f:
        f.write(b'{"trials": 1}')
    (small_disk / "filler").write_bytes(b"\0" * (SMALL_MB * 2**20 - 64 * 2**10))  # all but 64 kB
    with pytest.raises(OSError) as raised, fs.open_output_stream(str(state)) as f:
        f.write(b"x" * 2**20)
    assert no_space(raised.value)
    assert state.read_bytes() == b'{"trials": 1}'
    assert sorted(p.name for p in small_disk.iterdir()) == ["experiment_state.json", "filler"]


@pytest.mark.slow
def test_a_sweep_that_fills_its_disk_stops_with_one_line_and_resumes_to_the_end(small_disk, tmp_path):
    spec = sweep_spec(tmp_path)  # six trials of three epochs, MLflow's store beside them
    proc = run_cli("launch", spec, "--name", "full", "--results-dir", small_disk, timeout=300)
    assert proc.returncode == EXIT_CODE == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"tvae-sweep: error: {small_disk}") and "no space left on device" in line, line
    assert "`tvae-sweep resume full`" in line

    assert mount_tmpfs(small_disk, BIG_MB, remount=True).returncode == 0  # space freed
    proc = run_cli("resume", "full", "--results-dir", small_disk, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    frame = trials(small_disk, "full")
    assert len(frame) == 6 and set(frame["state"]) == {"TERMINATED"}
    assert frame["final/log_likelihood"].notna().all()
    assert not list(small_disk.rglob(".partial-*"))  # no half-written file left behind
    # one MLflow run per trial, each finished: none lost, none twice
    client = MlflowClient(f"sqlite:///{small_disk / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("full").experiment_id])
    children = [r for r in runs if "tvae_sweep.trial_id" in r.data.tags]
    assert sorted(r.data.tags["tvae_sweep.trial_id"] for r in children) == sorted(frame["trial_id"])
    assert {r.info.status for r in children} == {"FINISHED"}


def test_a_confirmation_stopped_by_a_full_disk_names_the_command_that_continues_it(tmp_path):
    """The confirm stage lives in the sweep's folder as confirm/; `tvae-sweep resume confirm` finds no
    sweep, `tvae-sweep confirm NAME` continues it."""
    search = SweepDir(tmp_path / "capsules")
    search.root.mkdir()
    search.write_state(status="finished")
    stage = SweepDir(search.root / "confirm")
    stage.root.mkdir()
    stage.write_state(status="running", stage="confirm")
    full = OSError(errno.ENOSPC, "No space left on device", str(stage.root / "tune"))
    line = stop_line(full, stage, io.StringIO())
    assert "the sweep capsules, confirm stage stopped" in line and "`tvae-sweep confirm capsules`" in line
    assert "`tvae-sweep resume capsules`" in stop_line(full, search, io.StringIO())
