"""A finished trial's checkpoint pruned to its weights: what stays loadable, also when the prune is killed."""
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pyarrow.fs
import pytest
import torch

from tvae_sweep.checkpoints import CheckpointError, prune_checkpoint
from tvae_sweep.sweep.pruning import CheckpointPruner, checkpoints, prune_trial
from tvae_sweep.training import Trainer

PRUNE = "import sys, pathlib; from tvae_sweep.sweep.pruning import prune_trial; prune_trial(pathlib.Path(sys.argv[1]))"


def finished_trainer(tiny_config, **model):
    trainer = Trainer(tiny_config(model=model, train={"epochs": 1}))
    list(trainer.epochs())
    return trainer


def test_a_pruned_checkpoint_keeps_the_weights_and_the_record_of_a_finished_run(tiny_config, tmp_path):
    trainer = finished_trainer(tiny_config)
    trainer.save_checkpoint(tmp_path)
    full = (tmp_path / "state.pt").stat().st_size
    freed = prune_checkpoint(tmp_path)
    assert freed > 0.6 * full  # Adam's two moment buffers are twice the weights
    assert prune_checkpoint(tmp_path) == 0  # pruning again changes nothing
    restored = Trainer(trainer.cfg)
    restored.load_checkpoint(tmp_path)
    assert restored.finished and list(restored.epochs()) == []
    assert restored.history == trainer.history and restored.init_metrics == trainer.init_metrics
    for a, b in zip(trainer.model.parameters(), restored.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_pruned_checkpoint_cannot_continue_an_unfinished_run(tiny_config, tmp_path):
    trainer = finished_trainer(tiny_config)
    trainer.save_checkpoint(tmp_path)
    prune_checkpoint(tmp_path)
    longer = Trainer(tiny_config(train={"epochs": 3}))
    with pytest.raises(CheckpointError, match="weights only"):
        longer.load_checkpoint(tmp_path)


def wait_for(condition, proc, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None and time.monotonic() < deadline, "the prune ended before the kill"
        time.sleep(0.002)


def test_a_prune_killed_at_any_moment_leaves_a_loadable_checkpoint(tiny_config, tmp_path):
    # a full-size model: its checkpoint takes long enough to write that the kill lands inside it
    trainer = finished_trainer(tiny_config, n_caps=18, cap_dim=18, seq_len=18, coherence_window=13)
    trial = tmp_path / "trial"
    for i in range(2):
        trainer.save_checkpoint(trial / f"checkpoint_00000{i}")
    newest = trial / "checkpoint_000001" / "state.pt"
    full = newest.stat().st_size

    def loads():
        restored = Trainer(trainer.cfg)
        restored.load_checkpoint(newest.parent)
        assert restored.finished and restored.history == trainer.history

    # killed while it writes the pruned file: the full checkpoint stays
    proc = subprocess.Popen([sys.executable, "-c", PRUNE, str(trial)])
    wait_for(lambda: (newest.parent / "state.pt.pruning").exists(), proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert newest.stat().st_size == full
    loads()
    # killed once the pruned file is in place, while the older checkpoint goes
    proc = subprocess.Popen([sys.executable, "-c", PRUNE, str(trial)])
    wait_for(lambda: newest.stat().st_size < full, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    loads()
    # run again (as the end of a resumed sweep does): one checkpoint, weights only
    prune_trial(trial)
    assert checkpoints(trial) == [newest.parent]
    assert "optimizer" not in torch.load(newest, weights_only=True)
    loads()


def test_the_pruner_prunes_a_finished_trial_two_experiment_saves_after_its_end(tiny_config, tmp_path):
    """Ray saves its experiment state (calling the callbacks' get_state) and copies it to storage in
    the background: a trial that ended before one save is pruned at the second save after it, when
    the copy that shows it finished is in place. A trial that failed and may be resumed is kept."""
    trainer = finished_trainer(tiny_config)
    folders = {}
    for name in ("done", "lost"):
        for i in range(2):
            trainer.save_checkpoint(tmp_path / name / f"checkpoint_00000{i}")
        folders[name] = SimpleNamespace(
            trial_id=name, status="RUNNING", config={}, last_result={}, path=str(tmp_path / name), num_failures=0,
            checkpoint=SimpleNamespace(path=str(tmp_path / name / "checkpoint_000001"),
                                       filesystem=pyarrow.fs.LocalFileSystem()))
    pruner = CheckpointPruner()
    pruner.on_trial_complete(0, [], folders["done"])
    folders["lost"].status = "ERROR"  # its worker was lost: `resume` continues it
    pruner.on_trial_error(0, [], folders["lost"])
    for _ in range(CheckpointPruner.SAVES):
        assert pruner.get_state() is None  # Ray keeps no state of the pruner's
        assert len(checkpoints(tmp_path / "done")) == 2
    pruner.get_state()
    assert checkpoints(tmp_path / "done") == [tmp_path / "done" / "checkpoint_000001"]
    assert "optimizer" not in torch.load(tmp_path / "done" / "checkpoint_000001" / "state.pt", weights_only=True)
    assert len(checkpoints(tmp_path / "lost")) == 2
