"""One training run into a directory: what `tvae-sweep train` does.

DIR/config.yaml (fully resolved), DIR/metrics.json ({"epochs": [...], "final": {...}}),
DIR/checkpoint/ (resumed when the same config is run into the same directory again),
DIR/traversal.png, DIR/forecast.png for sequence models, DIR/topographic_map.png for static models
with a square latent grid (the 2-D model).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import yaml

from .config import ConfigError, RunConfig, dump_yaml
from .images import save_pictures
from .training import CHECKPOINT_FILE, Trainer


def final_metrics(history: list[dict]) -> dict:
    """The last epoch's metrics; it is always evaluated."""
    return dict(history[-1]) if history else {}


def write_metrics(path: Path, history: list[dict], error: str | None = None) -> None:
    doc = {"epochs": history, "final": final_metrics(history)}
    if error:
        doc["error"] = error
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)


def train_to_directory(cfg: RunConfig, output: str | Path, overwrite: bool = False,
                       on_epoch: Callable[[dict], None] | None = None,
                       on_step: Callable[[int, float], None] | None = None) -> dict:
    """Trains `cfg` into `output`, resuming a checkpoint of the same config found there."""
    output = Path(output)
    checkpoint = output / "checkpoint"
    resolved = cfg.to_dict()
    resume = (checkpoint / CHECKPOINT_FILE).is_file() and not overwrite
    if resume:
        previous = yaml.safe_load((output / "config.yaml").read_text()) if (output / "config.yaml").is_file() else None
        if previous != resolved:
            raise ConfigError(f"{output}: holds a run of another config; choose another --output or pass --overwrite")
    output.mkdir(parents=True, exist_ok=True)
    dump_yaml(resolved, output / "config.yaml")

    trainer = Trainer(cfg)
    if resume:
        trainer.load_checkpoint(checkpoint)
    try:
        for metrics in trainer.epochs(on_step=on_step):
            trainer.save_checkpoint(checkpoint)
            write_metrics(output / "metrics.json", trainer.history)
            if on_epoch is not None:
                on_epoch(metrics)
    except Exception as e:
        write_metrics(output / "metrics.json", trainer.history, error=str(e))
        raise
    save_pictures(trainer.model, trainer.data.test_set(), output)
    write_metrics(output / "metrics.json", trainer.history)
    return final_metrics(trainer.history)
