"""A sweep's results as a table (one row per trial), and its best configs exported to train again."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import moocore
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..config import ConfigError, dump_yaml
from ..metrics import as_losses, is_metric, metric_mode, metric_order
from .records import TERMINATED, TrialRecord, saved_records
from .rungs import Rungs
from .space import trial_run_config
from .spec import SweepSpec

HYPERVOLUME_KEY = b"tvae_sweep.hypervolume"  # trials.parquet's schema metadata: the front's hypervolume, as JSON

def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return _numeric(value) and math.isfinite(value)


def trials_frame(path: str, rungs: Rungs | None = None) -> pd.DataFrame:
    """The trials table of the sweep whose Ray experiment is at `path` (`rungs`: its ASHA rungs)."""
    return frame_of(saved_records(path, rungs))


def frame_of(records: list[TrialRecord]) -> pd.DataFrame:
    """One row per trial (per point of a fused trial): id, state, config, final and best metrics,
    epochs, run time, node, error, checkpoint; and stopped_at_rung after epochs where ASHA stopped
    some trials early (the rung, rungs.py; empty for the others)."""
    rows = []
    for record in records:
        last, best = record.last, record.best
        row: dict[str, Any] = {"trial_id": record.trial_id, "state": record.state}
        row.update({f"config/{k}": v for k, v in sorted(record.config.items())})
        for metric in sorted(filter(is_metric, last), key=metric_order):
            if _numeric(last[metric]):
                row[f"final/{metric}"] = last[metric]
            if _numeric(best.get(metric)):
                row[f"best/{metric}"] = best[metric]
        row["epochs"] = record.epochs
        row["time_s"] = record.time_s
        row["node_id"] = record.node_id
        row["error"] = record.error
        row["checkpoint"] = record.checkpoint.path if record.checkpoint is not None else None
        rows.append(row)
    frame = pd.DataFrame(rows)
    stopped = [record.stopped_at_rung for record in records]
    if any(rung is not None for rung in stopped):  # ASHA stopped some: the rung of each, else empty
        frame.insert(frame.columns.get_loc("epochs") + 1, "stopped_at_rung", pd.array(stopped, dtype="Int64"))
    return frame


def ranked(frame: pd.DataFrame, metric: str, top: int | None = None, mode: str | None = None) -> pd.DataFrame:
    """The finished trials with a finite final `metric`, best first in the metric's direction (or
    `mode`), the first `top` of them. The one ranking: NaN, inf and failed trials are never ranked."""
    column = f"final/{metric}"
    if frame.empty or column not in frame:
        return frame.iloc[0:0]
    finite = frame[column].map(_finite)
    ordered = frame[(frame["state"] == TERMINATED) & finite].sort_values(
        column, ascending=(mode or metric_mode(metric)) == "min", kind="stable")
    return ordered if top is None else ordered.head(top)


def write_table(frame: pd.DataFrame, out: str | Path, metadata: dict[bytes, bytes] | None = None) -> Path:
    """The table as parquet (with `metadata` added to its schema's) or csv, by the file name."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        table = pa.Table.from_pandas(frame, preserve_index=False)
        pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), **(metadata or {})}), out)
    elif out.suffix == ".csv":
        frame.to_csv(out, index=False)
    else:
        raise ConfigError(f"--out {out}: use a .parquet or .csv file name")
    return out


def pareto_trials(frame: pd.DataFrame, metrics: list[str], modes: list[str]) -> pd.DataFrame:
    """The finished trials that no other finished trial beats on every objective (at least as good
    on all, better on one), ordered by the first objective, best first."""
    columns = [f"final/{m}" for m in metrics]
    done = finished_on(frame, columns)
    if done.empty:
        return done
    front = moocore.is_nondominated(as_losses(done[columns].to_numpy(), modes), keep_weakly=True)
    return done[front].sort_values(columns[0], ascending=modes[0] == "min")


def finished_on(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The finished trials with a finite value in every one of `columns`."""
    if frame.empty or any(c not in frame for c in columns):
        return frame.iloc[0:0]
    done = frame[(frame["state"] == TERMINATED)]
    return done[done[columns].map(_finite).all(axis=1)]


def front_hypervolume(frame: pd.DataFrame, metrics: list[str], modes: list[str],
                      reference: list[float] | None = None) -> tuple[float, list[float] | None]:
    """(the hypervolume of the Pareto front of the finished trials, its reference point).

    The reference is one value per objective in the objectives' own units; by default the worst
    finished value of each. The volume is the part of objective space that the front dominates and
    that dominates the reference, in the product of the objectives' units; a trial not strictly
    better than the reference on every objective adds nothing, so 0.0 means none is (with the
    default reference: a front of one trial, or of trials each the worst on some objective). No
    finished trial: NaN (and no default reference)."""
    columns = [f"final/{m}" for m in metrics]
    done = finished_on(frame, columns)
    if done.empty:
        return float("nan"), None if reference is None else [float(v) for v in reference]
    losses = as_losses(done[columns].to_numpy(), modes)
    if reference is None:
        reference = as_losses(losses.max(axis=0), modes)[0].tolist()  # the worst value of each objective
    point = as_losses(reference, modes)[0]
    better = losses[(losses < point).all(axis=1)]
    return (float(moocore.hypervolume(better, ref=point)) if len(better) else 0.0), [float(v) for v in reference]


def hypervolume_summary(frame: pd.DataFrame, metrics: list[str], modes: list[str],
                        reference: list[float] | None = None) -> dict[str, Any] | None:
    """The front's hypervolume as a plain dict: value (None before any finished trial), reference,
    reference_from ("spec", or "worst finished values"), metrics and modes; None for a single
    objective."""
    if len(metrics) < 2:
        return None
    value, used = front_hypervolume(frame, metrics, modes, reference)
    return {"value": None if math.isnan(value) else value, "reference": used, "metrics": list(metrics),
            "modes": list(modes), "reference_from": "spec" if reference is not None else "worst finished values"}


def hypervolume_metadata(frame: pd.DataFrame, metrics: list[str], modes: list[str],
                         reference: list[float] | None = None) -> dict[bytes, bytes]:
    """The front's hypervolume as parquet schema metadata: {HYPERVOLUME_KEY: JSON of
    hypervolume_summary}; nothing for a single objective."""
    entry = hypervolume_summary(frame, metrics, modes, reference)
    return {} if entry is None else {HYPERVOLUME_KEY: json.dumps(entry).encode()}


def hypervolume_line(entry: dict[str, Any]) -> str:
    """"hypervolume H (reference ...)" of a hypervolume_summary with a value, and a word when no
    finished trial is better than the reference."""
    value, given = entry["value"], entry["reference_from"] == "spec"
    point = ", ".join(f"{m} {v:.4g}" for m, v in zip(entry["metrics"], entry["reference"], strict=True))
    line = f"hypervolume {value:.4g} (reference {point}{'' if given else ': the worst finished values'})"
    if value == 0:  # the one line that says so, beside the value
        line += "; no finished trial is better than the reference on every objective"
        line += ": search.hypervolume_reference is on the wrong side of the front" if given else ""
    return line


def write_trials(frame: pd.DataFrame, spec: SweepSpec, out: str | Path) -> Path:
    """A sweep's trials.parquet: the table, with the front's hypervolume in its schema metadata
    for a sweep of several objectives."""
    s = spec.search
    return write_table(frame, out, hypervolume_metadata(frame, s.metrics, s.modes, s.hypervolume_reference))


def export_best(spec: SweepSpec, frame: pd.DataFrame, metric: str, top: int, out: str | Path) -> list[Path]:
    """Writes rank<k>_<trial>.yaml files that `tvae-sweep train` runs as they are, plus best.csv."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if f"final/{metric}" not in frame:
        raise ConfigError(f"--metric {metric}: no trial reported it; reported: "
                          f"{', '.join(c.removeprefix('final/') for c in frame if c.startswith('final/'))}")
    base = spec.base_dict()
    written = []
    chosen = ranked(frame, metric, top)
    if chosen.empty:
        raise ConfigError(f"no finished trial reports {metric}; nothing to export")
    for rank, (_, row) in enumerate(chosen.iterrows(), start=1):
        config = row_config(row)
        run = trial_run_config(base, config)
        path = out / f"rank{rank}_{row['trial_id']}.yaml"
        header = (f"# trial {row['trial_id']} of the sweep, rank {rank} by {metric} = {row[f'final/{metric}']:.6g}\n"
                  f"# checkpoint: {row['checkpoint']}\n")
        if spec.search.replicates > 1:  # the trial's value is the mean over its seeds
            seeds = ",".join(str(run.train.seed + i) for i in range(spec.search.replicates))
            header += (f"# trained under {spec.search.replicates} seeds: "
                       f"tvae-sweep train {path.name} --output DIR --seeds {seeds}\n")
        dump_yaml(run.to_dict(), path)
        path.write_text(header + path.read_text())
        written.append(path)
    chosen.to_csv(out / "best.csv", index=False)
    return written


def row_config(row: pd.Series) -> dict[str, Any]:
    """A trials table row's config (its config/<key> cells) as Python values, the keys it does not
    set (None, NaN) left out."""
    config = {}
    for column, value in row.items():
        if str(column).startswith("config/"):
            if isinstance(value, np.ndarray):
                value = value.tolist()
            elif isinstance(value, np.generic):
                value = value.item()
            if _present(value):
                config[str(column).removeprefix("config/")] = value
    return config


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))
