"""`tvae-sweep collect`: a spec's grid trained outside a sweep, read back as the sweep's results.

A grid can be trained without Ray (on a GPU machine that has only PyTorch, say): `Grid.write_configs`
writes each point as a `tvae-sweep train` config, DIR/group_<g>/point_<i>.yaml, one folder per
fused group (the groups `search.fuse` makes), and `tvae-sweep train DIR/group_<g>/*.yaml --output
RUNS/group_<g>` trains a group as one fused model. `collect` reads RUNS/group_<g>/point_<i>/ as the
trials of the sweep and writes what a sweep writes: trials.parquet, report.md with its figures,
aggregates/ and spec.yaml.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError, dump_yaml
from .sweep.fusion import Point, fused_groups
from .sweep.layout import SweepDir
from .sweep.records import ERROR, PENDING, RUNNING, TERMINATED, CheckpointRef, TrialRecord, histories_of, last_line
from .sweep.results import frame_of, write_trials
from .sweep.space import trial_run_config
from .sweep.spec import SweepSpec, read_spec
from .sweep.trainable import report_of
from .sweep.validation import spec_from_dict
from .tracking import publish
from .tracking import report as reports


def group_folder(g: int) -> str:
    return f"group_{g}"


def point_name(i: int) -> str:
    """A point's config file stem, and so its folder under its group's output."""
    return f"point_{i}"


@dataclass(frozen=True)
class Grid:
    """A sweep spec whose grid is trained point by point outside a sweep."""

    raw: dict  # the spec as read, its profile and overrides applied
    spec: SweepSpec

    @classmethod
    def load(cls, path: Path, overrides: Sequence[str] = (), profile: str | None = None) -> Grid:
        raw = read_spec(path, list(overrides), profile)
        return cls(raw, spec_from_dict(raw))

    @property
    def name(self) -> str:
        return self.spec.name

    def points(self) -> list[tuple[int, Point]]:
        """(group, point) for every point of the grid, the fused groups one after another: point i
        is the i-th of this list."""
        return [(g, point) for g, points in enumerate(fused_groups(self.spec)) for point in points]

    def write_configs(self, out: Path) -> list[Path]:
        """Each point as a full run config, out/group_<g>/point_<i>.yaml, to train each fused group
        as `tvae-sweep train out/group_<g>/*.yaml`."""
        base, written = self.spec.base_dict(), []
        for i, (g, point) in enumerate(self.points()):
            path = out / group_folder(g) / f"{point_name(i)}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            dump_yaml(trial_run_config(base, point.config).to_dict(), path)
            written.append(path)
        return written


def run_record(trial_id: str, config: dict, folder: Path, epochs: int) -> TrialRecord:
    """A point trained by `tvae-sweep train` into `folder`, as a trial: finished when its
    metrics.json has every epoch, failed when it names an error, running when it has some."""
    metrics = folder / "metrics.json"
    doc = json.loads(metrics.read_text()) if metrics.is_file() else {}
    history, error = doc.get("epochs", []), doc.get("error")
    state = ERROR if error else TERMINATED if len(history) >= epochs else RUNNING if history else PENDING
    report = report_of(history)
    return TrialRecord(
        trial_id=trial_id, ray_id="", state=state, ray_state=state, config=config, last=report,
        best=report.get("best") or {}, epochs=len(history),
        time_s=sum(e.get("train_time_s", 0.0) + e.get("eval_time_s", 0.0) for e in history),
        error=last_line(error) if error else None, traceback=error, path=str(folder), history=tuple(history),
        # a finished point's pictures are in its folder, where a sweep's are in the checkpoint
        checkpoint=CheckpointRef(str(folder)) if state == TERMINATED else None)


def collect(grid: Grid, runs: Path, out: Path, source: str | None = None) -> Path:
    """The runs/group_<g>/point_<i>/ folders as the trials of `grid`'s sweep: out/trials.parquet,
    out/report.md, out/aggregates/ and out/spec.yaml; returns the report's path. `source`: how the
    runs were trained, for the report."""
    points = grid.points()
    folders = [runs / group_folder(g) / point_name(i) for i, (g, _) in enumerate(points)]
    if not any(folder.is_dir() for folder in folders):
        raise ConfigError(f"{runs}: holds none of the {len(points)} points of {grid.name or 'the spec'}'s grid "
                          f"({group_folder(0)}/{point_name(0)}/ ...); pass the folder their `tvae-sweep train` "
                          "runs were written into")
    records = [run_record(f"g{g}_p{i}", point.trial_config, folder, grid.spec.run.train.epochs)
               for i, ((g, point), folder) in enumerate(zip(points, folders, strict=True))]
    sweep = SweepDir(out)
    out.mkdir(parents=True, exist_ok=True)
    frame = frame_of(records)
    write_trials(frame, grid.spec, sweep.trials)
    dump_yaml(grid.raw, sweep.spec)
    result = publish.compute(frame, grid.spec, sweep, histories=histories_of(records))
    groups = len({g for g, _ in points})
    how = source or (f"trained without Ray by `tvae-sweep train`, {len(points)} points in {groups} fused groups, "
                     f"collected from {runs} by `tvae-sweep collect`")
    _, markdown = reports.render(out.name, frame, grid.spec, result, how)
    return reports.write(sweep, markdown)
