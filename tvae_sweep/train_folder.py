"""One training run into a directory: what `tvae-sweep train` does (`--seeds`: one per seed, fused).

DIR/config.yaml (fully resolved), DIR/metrics.json ({"epochs": [...], "final": {...}}),
DIR/checkpoint/ (resumed when the same config is run into the same directory again),
DIR/traversal.png, DIR/forecast.png for sequence models, DIR/topographic_map.png for static models
with a square latent grid (the 2-D model).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
import yaml

from .config import ConfigError, RunConfig, dump_yaml
from .fused_training import FusedTrainer, with_seed
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


def prepare_directory(cfg: RunConfig, output: Path, overwrite: bool) -> bool:
    """Writes config.yaml into `output`; returns whether a checkpoint of the same config is there
    to resume (one of another config is refused)."""
    resolved = cfg.to_dict()
    resume = (output / "checkpoint" / CHECKPOINT_FILE).is_file() and not overwrite
    if resume:
        previous = yaml.safe_load((output / "config.yaml").read_text()) if (output / "config.yaml").is_file() else None
        if previous != resolved:
            raise ConfigError(f"{output}: holds a run of another config; choose another --output or pass --overwrite")
    output.mkdir(parents=True, exist_ok=True)
    dump_yaml(resolved, output / "config.yaml")
    return resume


def train_to_directory(cfg: RunConfig, output: str | Path, overwrite: bool = False,
                       on_epoch: Callable[[dict], None] | None = None,
                       on_step: Callable[[int, float], None] | None = None) -> dict:
    """Trains `cfg` into `output`, resuming a checkpoint of the same config found there."""
    output = Path(output)
    checkpoint = output / "checkpoint"
    resume = prepare_directory(cfg, output, overwrite)
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


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; refuses an empty list, duplicates and non-integers naming --seeds."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or not all(parts):
        raise ConfigError(f"--seeds {text!r}: give one or more integer seeds separated by commas, like 0,1,2")
    try:
        seeds = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: seeds must be integers, like 0,1,2") from None
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ConfigError(f"--seeds {text!r}: seed {repeated[0]} is given twice; each seed is one run")
    return seeds


def seed_directory(output: str | Path, seed: int) -> Path:
    return Path(output) / f"seed_{seed}"


def train_seeds_to_directory(cfg: RunConfig, output: str | Path, seeds: list[int], overwrite: bool = False,
                             on_epoch: Callable[[dict[int, dict]], None] | None = None,
                             on_step: Callable[[int, float], None] | None = None) -> dict[int, dict | str]:
    """Trains `cfg` under each seed as one fused model into output/seed_<s>/, each folder holding
    what train_to_directory writes; returns each seed's final metrics, or why it failed.

    Running it again resumes the members from their checkpoints; a member recorded as failed
    stays failed (its folder's metrics.json says why) until --overwrite."""
    cfgs = [with_seed(cfg, s) for s in seeds]
    dirs = [seed_directory(output, s) for s in seeds]
    resume = [prepare_directory(c, d, overwrite) for c, d in zip(cfgs, dirs)]
    outcome: dict[int, dict | str] = {}
    for seed, d, resumed in zip(seeds, dirs, resume):
        earlier = json.loads((d / "metrics.json").read_text()) if resumed and (d / "metrics.json").is_file() else {}
        if "error" in earlier:
            outcome[seed] = earlier["error"]
    training = [i for i, s in enumerate(seeds) if s not in outcome]
    if not training:
        return outcome
    if len({resume[i] for i in training}) > 1:
        has = ", ".join(dirs[i].name for i in training if resume[i])
        raise ConfigError(f"{output}: {has} holds a checkpoint and the other seeds none; "
                          "pass --overwrite to start all afresh")
    trainer = FusedTrainer([cfgs[i] for i in training])
    dirs = [dirs[i] for i in training]
    if resume[training[0]]:
        trainer.load_checkpoints([d / "checkpoint" for d in dirs])

    def record(error: str | None = None) -> None:
        for m, d in enumerate(dirs):
            write_metrics(d / "metrics.json", trainer.histories[m], error=trainer.errors[m] or error)

    try:
        for _ in trainer.epochs(on_step=on_step):
            trainer.save_checkpoints([d / "checkpoint" for d in dirs])
            record()
            if on_epoch is not None and trainer.alive:
                on_epoch({seeds[training[m]]: trainer.histories[m][-1] for m in trainer.alive})
    except Exception as e:
        record(error=str(e))
        raise
    for m, d in enumerate(dirs):
        seed = seeds[training[m]]
        if trainer.errors[m] is not None:
            outcome[seed] = trainer.errors[m]
            continue
        save_pictures(trainer.member_model(m), trainer.data[m].test_set(), d)
        outcome[seed] = final_metrics(trainer.histories[m])
    record()
    return {s: outcome[s] for s in seeds}


def seed_summary(outcome: dict[int, dict | str]) -> tuple[list[str], list[int]]:
    """Lines of every final metric's mean and standard deviation over the seeds that finished, and
    the seeds that failed."""
    finished = [m for m in outcome.values() if isinstance(m, dict)]
    failed = [s for s, m in outcome.items() if not isinstance(m, dict)]
    lines = []
    for key in sorted(finished[0]) if finished else []:
        if key == "epoch":
            continue
        values = torch.tensor([float(m[key]) for m in finished if key in m], dtype=torch.float64)
        std = float(values.std()) if len(values) > 1 else 0.0
        lines.append(f"  {key:28s} {float(values.mean()):.6g} ± {std:.3g}")
    return lines, failed
