"""One training run into a directory: what `tvae-sweep train` does (several, fused: one folder each).

DIR/config.yaml (fully resolved), DIR/metrics.json ({"epochs": [...], "final": {...}}),
DIR/checkpoint/ (resumed when the same config is run into the same directory again),
DIR/traversal.png, DIR/forecast.png for sequence models, DIR/topographic_map.png for static models
with a square latent grid (the 2-D model).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import yaml

from .config import ConfigError, RunConfig, dump_yaml, load_run_config
from .fused_training import FusedTrainer, check_members, with_seed
from .images import save_pictures
from .metrics import STD, over_seeds
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


def train_members_to_directory(members: dict[str, RunConfig], output: str | Path, overwrite: bool = False,
                               on_epoch: Callable[[dict[str, dict]], None] | None = None,
                               on_step: Callable[[int, float], None] | None = None) -> dict[str, dict | str]:
    """Trains the configs of `members` ({folder name: config}) as one fused model into
    output/<name>/, each folder holding what train_to_directory writes; returns each member's final
    metrics, or why it failed. Members that cannot be fused are refused before anything is written.

    Running it again resumes the members from their checkpoints; a member recorded as failed
    stays failed (its folder's metrics.json says why) until --overwrite."""
    check_members(list(members.values()))
    dirs = {name: Path(output) / name for name in members}
    resume = {name: prepare_directory(cfg, dirs[name], overwrite) for name, cfg in members.items()}
    outcome: dict[str, dict | str] = {}
    for name in members:
        earlier = json.loads((dirs[name] / "metrics.json").read_text()) \
            if resume[name] and (dirs[name] / "metrics.json").is_file() else {}
        if "error" in earlier:
            outcome[name] = earlier["error"]
    training = [name for name in members if name not in outcome]
    if not training:
        return outcome
    if len({resume[n] for n in training}) > 1:
        has = ", ".join(n for n in training if resume[n])
        raise ConfigError(f"{output}: {has} holds a checkpoint and the other members none; "
                          "pass --overwrite to start all afresh")
    trainer = FusedTrainer([members[n] for n in training])
    folders = [dirs[n] for n in training]
    if resume[training[0]]:
        trainer.load_checkpoints([d / "checkpoint" for d in folders])

    def record(error: str | None = None) -> None:
        for m, d in enumerate(folders):
            write_metrics(d / "metrics.json", trainer.histories[m], error=trainer.errors[m] or error)

    try:
        for _ in trainer.epochs(on_step=on_step):
            trainer.save_checkpoints([d / "checkpoint" for d in folders])
            record()
            if on_epoch is not None and trainer.alive:
                on_epoch({training[m]: trainer.histories[m][-1] for m in trainer.alive})
    except Exception as e:
        record(error=str(e))
        raise
    for m, (name, d) in enumerate(zip(training, folders)):
        if trainer.errors[m] is not None:
            outcome[name] = trainer.errors[m]
            continue
        save_pictures(trainer.member_model(m), trainer.data[m].test_set(), d)
        outcome[name] = final_metrics(trainer.histories[m])
    record()
    return {name: outcome[name] for name in members}


def fused_members(configs: list[Path], overrides: list[str], seeds: str | None) -> dict[str, RunConfig]:
    """What `train` fuses, {folder name: config}: one config under each of --seeds (seed_<s>), or
    several configs, each in the folder of its file's name."""
    if seeds is not None:
        if len(configs) > 1:
            raise ConfigError(f"--seeds: trains one config under several seeds, got {len(configs)} configs")
        cfg = load_run_config(configs[0], overrides)
        return {f"seed_{s}": with_seed(cfg, s) for s in parse_seeds(seeds)}
    names = [Path(c).stem for c in configs]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash:
        raise ConfigError(f"{clash}: two configs of that name would share the folder OUTPUT/{clash}; rename one")
    return {name: load_run_config(c, overrides) for name, c in zip(names, configs)}


def member_summary(outcome: dict[str, dict | str]) -> tuple[list[str], list[str]]:
    """Lines of every final metric's mean and standard deviation over the members that finished,
    and the members that failed."""
    finished = {s: m for s, m in outcome.items() if isinstance(m, dict)}
    failed = [s for s in outcome if s not in finished]
    summary = over_seeds(finished) if finished else {}
    lines = [f"  {key:28s} {summary[key]:.6g} ± {summary[key + STD]:.3g}"
             for key in sorted(summary) if key + STD in summary]
    return lines, failed
