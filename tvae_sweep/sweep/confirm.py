"""A finished sweep's confirmation: its best configs and baselines retrained under seeds the search
never used, as a sweep of its own in results/<name>/confirm/.

Its spec is the sweep's with one preset key, `confirm`, whose bundles are the chosen configs
(`rank<k>_<trial>`, each its trial's searched values) and the baselines, searched as a grid (each
bundle one trial) under search.replicates new seeds; its `baseline` is the first baseline, so the
aggregates compare every config with it seed by seed (tracking/compare.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import ConfigError, RunConfig, read_yaml
from .layout import SweepDir
from .results import pareto_trials, ranked, row_config
from .space import trial_run_config
from .spec import RUN_SECTIONS, Baseline, SweepSpec

CONFIRM = "confirm"  # the folder in the sweep's, the preset key of its spec, the stage of its MLflow runs
SEED_STEP = 1000  # the new seeds start at the first multiple of this above every seed the search used
SEED_KEY = "train.seed"


def confirm_dir(sweep: SweepDir) -> SweepDir:
    return SweepDir(sweep.root / CONFIRM)


@dataclass(frozen=True)
class Chosen:
    """A config of the search to confirm: its bundle's name, its trial, its searched values."""

    name: str
    trial_id: str
    values: dict[str, Any]


def searched_config(row: pd.Series) -> dict[str, Any]:
    """A trial's sampled config keys (not a preset's name, not its seed, which the confirmation sets)."""
    return {key: value for key, value in row_config(row).items()
            if key.partition(".")[0] in RUN_SECTIONS and key.partition(".")[2] and key != SEED_KEY}


def chosen_configs(frame: pd.DataFrame, spec: SweepSpec, top: int) -> list[Chosen]:
    """One objective: the `top` best finished trials by it; several: the Pareto front, up to `top`
    of it, best first by the first objective. A config that a better trial had already (the same
    values under another seed) is left out."""
    s = spec.search
    if s.multi_objective:
        rows = pareto_trials(frame, s.metrics, s.modes)
    else:
        rows = ranked(frame, s.metrics[0], None, s.modes[0])
    chosen: list[Chosen] = []
    for _, row in rows.iterrows():
        values = searched_config(row)
        if any(c.values == values for c in chosen):
            continue
        chosen.append(Chosen(f"rank{len(chosen) + 1}_{row['trial_id']}", str(row["trial_id"]), values))
        if len(chosen) == top:
            break
    return chosen


def presets_of(spec: SweepSpec) -> dict[str, dict[str, Any]]:
    """Every preset of the space's preset keys, by name (the first key's where two share a name)."""
    named: dict[str, dict[str, Any]] = {}
    for p in spec.space.values():
        if p.type == "preset":
            for name, bundle in p.values.items():
                named.setdefault(name, bundle)
    return named


def baseline_bundles(items: list[Baseline], spec: SweepSpec, where: str) -> dict[str, dict[str, Any]]:
    """{name: config values} of each baseline: a preset of the sweep's space (its settings over the
    base config), a config file (what export-best writes, or any run config; named by its file), or
    an inline {name: {config.key: value}}. The seed is left to the confirmation."""
    bundles: dict[str, dict[str, Any]] = {}
    for item in items:
        named = item if isinstance(item, dict) else dict([_preset_or_file(item, spec, where)])
        for name, values in named.items():
            if name in bundles:
                raise ConfigError(f"{where}: two baselines are named {name!r}; name them apart")
            bundles[name] = _checked(name, values, spec, where)
    return bundles


def _preset_or_file(item: str, spec: SweepSpec, where: str) -> tuple[str, dict[str, Any]]:
    presets = presets_of(spec)
    if item in presets:
        return item, presets[item]
    path = Path(item)
    if not path.is_file():
        raise ConfigError(f"{where} {item}: neither a preset of the sweep's space (its presets: "
                          f"{', '.join(presets) or 'none'}) nor a config file")
    raw = read_yaml(path)
    values = {f"{section}.{k}": v for section in RUN_SECTIONS for k, v in (raw.get(section) or {}).items()}
    if not values:
        raise ConfigError(f"{where} {item}: not a config (no data, model or train section)")
    return path.stem, values


def _checked(name: str, values: Any, spec: SweepSpec, where: str) -> dict[str, Any]:
    """A baseline's values without the seed, refused with one line where they make no config."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where} {name}: give its settings as {{config.key: value}}")
    for key in values:
        section, _, field = str(key).partition(".")
        if section not in RUN_SECTIONS or not field:
            raise ConfigError(f"{where} {name}.{key}: not a config key; use section.field, e.g. model.n_caps")
    try:
        trial_run_config(spec.base_dict(), values)
    except ConfigError as e:
        raise ConfigError(f"{where} {name}: {e}") from None
    return {k: v for k, v in values.items() if k != SEED_KEY}


def used_seeds(frame: pd.DataFrame, spec: SweepSpec) -> set[int]:
    """The seeds the search trained with: train.seed and its replicates' (+1, ...), the seeds it
    searched or its presets set, and every `<m>_seed<s>` it reported."""
    used = {spec.run.train.seed + i for i in range(spec.search.replicates)}
    column = f"config/{SEED_KEY}"
    if column in frame:
        used |= {int(v) for v in frame[column] if pd.notna(v)}
    used |= {int(m.group(1)) for c in frame.columns if (m := re.fullmatch(r"final/.+_seed(\d+)", str(c)))}
    return used


def new_seeds(frame: pd.DataFrame, spec: SweepSpec, n: int) -> list[int]:
    """`n` seeds from the first multiple of SEED_STEP above every seed the search used."""
    start = (max(used_seeds(frame, spec)) // SEED_STEP + 1) * SEED_STEP
    return list(range(start, start + n))


def confirm_raw(saved: dict, sweep_name: str, bundles: dict[str, dict[str, Any]], baseline: str | None,
                seeds: list[int]) -> dict:
    """The confirmation's raw spec from the sweep's saved one: one preset key of the bundles, a grid
    that trains each once under the seeds (train.seed, +1, ...), fifo, evaluated at the end,
    compared with `baseline`."""
    raw = {k: v for k, v in saved.items() if k not in ("space", "search", "baseline", CONFIRM)}
    train = saved.get("train") or {}
    # evaluated after the last epoch only: the confirmation compares final values, and each
    # evaluation along the way costs about half an epoch
    raw["train"] = {**train, "seed": seeds[0], "eval_every": train.get("epochs", RunConfig().train.epochs)}
    raw["space"] = {CONFIRM: {"type": "preset", "values": bundles}}
    search = saved.get("search") or {}
    kept = {k: search[k] for k in ("metric", "mode", "max_concurrent", "seed", "hypervolume_reference") if k in search}
    raw["search"] = {**kept, "algorithm": "grid", "scheduler": "fifo", "replicates": len(seeds)}
    if baseline is not None:
        raw["baseline"] = baseline
    storage = saved.get("storage") or {}
    if storage.get("path"):  # Ray's experiment in a shared storage is named after the sweep: one of its own
        raw["storage"] = {**storage, "path": f"{str(storage['path']).rstrip('/')}/{sweep_name}"}
    return raw
