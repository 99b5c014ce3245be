"""A run's checkpoint on disk: state.pt in a folder (one per member), written atomically, read
with a one-line error when it cannot be restored, and pruned to its weights once the run is done."""
from __future__ import annotations

from pathlib import Path

import torch

CHECKPOINT_FILE = "state.pt"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be restored: truncated, corrupt, or not a training state."""


def state_files(folder: str | Path) -> list[Path]:
    """The training states in a checkpoint folder: a single run's, or each member's (seed_<s>/ of a
    replicated trial, point_<i>/ of a fused one)."""
    folder = Path(folder)
    if (folder / CHECKPOINT_FILE).is_file():
        return [folder / CHECKPOINT_FILE]
    return sorted(p for p in folder.glob(f"*/{CHECKPOINT_FILE}"))


def write_checkpoint(state: dict, directory: str | Path) -> Path:
    """Writes a training state atomically (a temporary file renamed into place)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (CHECKPOINT_FILE + ".tmp")
    torch.save(state, tmp)
    tmp.replace(directory / CHECKPOINT_FILE)
    return directory


def read_checkpoint(directory: str | Path, device: torch.device, epochs: int) -> dict:
    """The training state saved in `directory`, refused with a CheckpointError when it is unreadable
    or pruned before its run's `epochs`."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint there")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise CheckpointError(f"{path}: not a readable tvae-sweep checkpoint ({type(e).__name__})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: holds no training state of this config (no model)")
    if "optimizer" not in state and int(state.get("epoch", 0)) < epochs:
        raise CheckpointError(f"{path}: holds model weights only (pruned when its run finished), "
                              "which cannot continue training")
    if "rng" in state:
        state["rng"] = {k: v.cpu() for k, v in state["rng"].items()}  # RNG states are CPU byte tensors
    return state


# what a finished run's checkpoint keeps once pruned: its weights and its record, no optimiser or RNG state
PRUNED_KEYS = ("model", "epoch", "history", "init_metrics", "config")


def prune_checkpoint(directory: str | Path) -> int:
    """Rewrites a finished run's checkpoint with its model weights and record only (the optimiser's
    moment buffers are twice the weights again); returns the bytes freed. Atomic: a process killed
    during it leaves the full checkpoint or the pruned one, never a broken file."""
    path = Path(directory) / CHECKPOINT_FILE
    before = path.stat().st_size
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "optimizer" not in state:
        return 0
    tmp = path.with_name(CHECKPOINT_FILE + ".pruning")
    torch.save({k: state[k] for k in PRUNED_KEYS if k in state}, tmp)
    tmp.replace(path)
    return before - path.stat().st_size
