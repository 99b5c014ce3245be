"""Training into a directory: what `tvae-sweep train` does, one config into DIR, or several (or one
under several seeds) trained as one model, each member into DIR/<its name>/.

A member's folder: DIR/config.yaml (fully resolved), DIR/metrics.json ({"epochs": [...], "final": {...}}),
DIR/checkpoint/ (resumed when the same config is run into the same directory again),
DIR/traversal.png, DIR/forecast.png for sequence models, DIR/topographic_map.png for static models
with a square latent grid (the 2-D model).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import yaml

from .checkpoints import CHECKPOINT_FILE
from .config import ConfigError, RunConfig, dump_yaml, load_run_config
from .images import save_member_pictures
from .metrics import STD, over_seeds
from .training import DivergenceError, Trainer, check_members, with_seed


def final_metrics(history: list[dict]) -> dict:
    """The last epoch's metrics; it is always evaluated."""
    return dict(history[-1]) if history else {}


def write_metrics(path: Path, history: list[dict], error: str | None = None, failed: bool = False) -> None:
    """The record of a run: its epochs, its final metrics, and the error that stopped it; failed:
    the run itself failed (its loss diverged), so running it again would not resume it."""
    doc = {"epochs": history, "final": final_metrics(history)}
    if error:
        doc["error"] = error
    if failed:
        doc["failed"] = True
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


def train_to_directory(members: dict[str, RunConfig], output: str | Path, overwrite: bool = False,
                       on_epoch: Callable[[dict[str, dict]], None] | None = None,
                       on_step: Callable[[int, float], None] | None = None) -> dict[str, dict | str]:
    """Trains the configs of `members` ({folder name: config}) as one model, each into
    output/<name>/ (the name "": into output itself, a single run's folder); returns each member's
    final metrics, or why it failed. Members that cannot share a model are refused before anything
    is written; `on_epoch` gets each epoch's metrics of the members still training, by name.

    Running it again resumes the members from their checkpoints; a member recorded as failed
    stays failed (its folder's metrics.json says why) until `overwrite`."""
    check_members(list(members.values()))
    dirs = {name: Path(output) / name for name in members}
    resume = {name: prepare_directory(cfg, dirs[name], overwrite) for name, cfg in members.items()}
    outcome = recorded_failures({name: dirs[name] for name in members if resume[name]})
    training = [name for name in members if name not in outcome]
    if len({resume[n] for n in training}) > 1:
        has = ", ".join(n for n in training if resume[n])
        raise ConfigError(f"{output}: {has} holds a checkpoint and the other members none; "
                          "pass --overwrite to start all afresh")
    if training:
        outcome.update(train_members({n: members[n] for n in training}, [dirs[n] for n in training],
                                     resume[training[0]], on_epoch, on_step))
    return {name: outcome[name] for name in members}


def recorded_failures(dirs: dict[str, Path]) -> dict[str, str]:
    """Why the members of these folders failed, as their metrics.json recorded it (a run stopped by
    anything else, a full disk say, resumes)."""
    records = {name: json.loads((d / "metrics.json").read_text()) for name, d in dirs.items()
               if (d / "metrics.json").is_file()}
    return {name: record["error"] for name, record in records.items() if record.get("failed")}


def train_members(members: dict[str, RunConfig], dirs: list[Path], resume: bool,
                  on_epoch: Callable[[dict[str, dict]], None] | None,
                  on_step: Callable[[int, float], None] | None) -> dict[str, dict | str]:
    """The training of train_to_directory: one trainer, each member's checkpoint and record in its folder."""
    names = list(members)
    trainer = Trainer(list(members.values()))
    checkpoints = [d / "checkpoint" for d in dirs]
    if resume:
        trainer.load_checkpoints(checkpoints)

    def record(error: str | None = None) -> None:
        for m, d in enumerate(dirs):
            write_metrics(d / "metrics.json", trainer.histories[m], error=trainer.errors[m] or error,
                          failed=trainer.errors[m] is not None)

    try:
        for results in trainer.epochs(on_step=on_step):
            trainer.save_checkpoints(checkpoints)
            record()
            if on_epoch is not None:
                on_epoch({n: r for n, r in zip(names, results, strict=True) if "error" not in r})
    except DivergenceError:
        pass  # every member failed: each one's record says why
    except Exception as e:
        record(error=str(e))
        raise
    for m in trainer.alive:
        save_member_pictures(trainer, m, dirs[m])
    record()
    return {n: trainer.errors[m] or final_metrics(trainer.histories[m]) for m, n in enumerate(names)}


def load_members(configs: list[Path], overrides: list[str], seeds: str | None) -> dict[str, RunConfig]:
    """What `train` trains, {folder name: config}: one config into OUTPUT itself (""), one config
    under each of --seeds (seed_<s>), or several configs, each in the folder of its file's name."""
    if seeds is None and len(configs) == 1:
        return {"": load_run_config(configs[0], overrides)}
    if seeds is not None:
        if len(configs) > 1:
            raise ConfigError(f"--seeds: trains one config under several seeds, got {len(configs)} configs")
        cfg = load_run_config(configs[0], overrides)
        return {f"seed_{s}": with_seed(cfg, s) for s in parse_seeds(seeds)}
    names = [Path(c).stem for c in configs]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash:
        raise ConfigError(f"{clash}: two configs of that name would share the folder OUTPUT/{clash}; rename one")
    return {name: load_run_config(c, overrides) for name, c in zip(names, configs, strict=True)}


def member_summary(outcome: dict[str, dict | str]) -> tuple[list[str], list[str]]:
    """Lines of every final metric (of several members: its mean and standard deviation over the
    members that finished), and the members that failed."""
    finished = {s: m for s, m in outcome.items() if isinstance(m, dict)}
    failed = [s for s in outcome if s not in finished]
    if len(outcome) == 1:
        return [f"  {key:28s} {value:.6g}" for final in finished.values()
                for key, value in sorted(final.items()) if key != "epoch"], failed
    summary = over_seeds(finished) if finished else {}
    lines = [f"  {key:28s} {summary[key]:.6g} ± {summary[key + STD]:.3g}"
             for key in sorted(summary) if key + STD in summary]
    return lines, failed
