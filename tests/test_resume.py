"""A sweep whose launch process is killed with SIGKILL midway, then resumed."""
import json
import os
import signal
import subprocess
import time

import pytest
import torch
from sweeps import CLI, cli_env, run_cli, sweep_spec, trials

pytestmark = pytest.mark.cost(111)  # seconds on 2 cores (measured): costliest files first


def finished_trials(experiment, epochs=3):
    """Trial folder -> its reported epochs, for trials that reported their final epoch."""
    done = {}
    for folder in experiment.glob("train_trial_*"):
        result = folder / "result.json"
        if result.is_file():
            lines = [json.loads(ln) for ln in result.read_text().splitlines() if ln.strip()]
            if lines and lines[-1]["epoch"] == epochs:
                done[folder.name] = [ln["epoch"] for ln in lines]
    return done


def pruned_trials(experiment) -> set[str]:
    """Trial folders already pruned to one checkpoint of weights only."""
    pruned = set()
    for folder in experiment.glob("train_trial_*"):
        found = list(folder.glob("checkpoint_*/state.pt"))
        if len(found) == 1 and "optimizer" not in torch.load(found[0], weights_only=True):
            pruned.add(folder.name)
    return pruned


@pytest.mark.slow
def test_resume_after_sigkill_keeps_finished_trials_and_completes_the_rest(tmp_path):
    """Killed once a finished trial has been pruned, while the sweep runs: the resume neither runs a
    finished trial again nor misses a checkpoint that an unfinished one needs."""
    # trials of a few seconds each, so that the kill lands with some of them still to run
    spec = sweep_spec(tmp_path, search={"num_trials": 4, "max_concurrent": 1, "scheduler": "fifo"},
                      data={"train_sequences": 1024})
    results = tmp_path / "results"
    experiment = results / "killed" / "tune"
    proc = subprocess.Popen([*CLI, "launch", str(spec), "--name", "killed", "--results-dir", str(results)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            # Ray saves the experiment every second instead of every 10 s or more:
                            # the pruner, which waits two saves, prunes the first trial while others run
                            env=cli_env(TUNE_GLOBAL_CHECKPOINT_S="1"),
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while not pruned_trials(experiment) and time.monotonic() < deadline:
        assert proc.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # a pruned trial's end was in two saved experiment states: the resume must not run it again; a
    # trial that ended just before the kill may be in none yet, and runs its last epoch again
    finished = finished_trials(experiment)
    before = {name: epochs for name, epochs in finished.items() if name in pruned_trials(experiment)}
    assert 1 <= len(before) and len(finished) < 4

    resumed = run_cli("resume", "killed", "--results-dir", results)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    frame = trials(results, "killed")
    assert len(frame) == 4 and set(frame["state"]) == {"TERMINATED"}
    after = finished_trials(experiment)
    assert len(after) == 4
    for name, epochs in before.items():
        assert after[name] == epochs  # a finished trial was not run again
    for epochs in after.values():
        # no epoch missing; at most one runs again: one whose report the driver's last saved state
        # holds but whose checkpoint it had not taken yet (Ray takes it just after the report), or
        # whose end no saved state holds yet
        assert sorted(set(epochs)) == [1, 2, 3] and epochs == sorted(epochs) and len(epochs) <= 4
    state = json.loads((results / "killed" / "sweep.json").read_text())
    assert state["status"] == "finished"
    assert len(pruned_trials(experiment)) == 4


def test_resume_of_an_unknown_sweep_is_one_line(tmp_path):
    proc = run_cli("resume", "nothing", "--results-dir", tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no sweep named 'nothing'" in proc.stderr
