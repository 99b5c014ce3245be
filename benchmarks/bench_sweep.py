"""Sweep benchmark: what a sweep costs beyond its trainings, and how much search it buys.

    .venv/bin/python -m benchmarks.bench_sweep                 # about 35 minutes on 2 cores
    .venv/bin/python -m benchmarks.bench_sweep --quick         # a smoke check of every part
    .venv/bin/python -m benchmarks.bench_sweep --only overhead # overhead and concurrency only

Three measurements, on the same machine in one run, written to RESULTS.md (section bench_sweep):

- overhead: N identical trainings in a plain loop in one process, against the same N as trials
  of `tvae-sweep launch` one at a time (MLflow tracking on, as users run it), with reused worker
  processes and without; Ray's own start-up (ray.init and shutdown) is timed apart;
- concurrency: the same N trials two at a time, each on one CPU, against one at a time;
- search efficiency: capsules.yaml at a reduced size, TPE with ASHA against random search without
  early stopping, same trial budget, several seeds: trial-epochs spent until a trial first reports
  a target log-likelihood.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from .common import machine_line, write_section

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "tvae_sweep"]

# one training of about 30 s on one thread: the full-size MNIST TVAE, a few hundred sequences
TRIAL = {
    "data": {"dataset": "mnist5k", "transforms": ["rotation", "hue", "scale"],
             "train_sequences": 384, "test_sequences": 32},
    "model": {"variant": "tvae", "n_caps": 18, "cap_dim": 18, "seq_len": 18, "coherence_window": 13,
              "n_off_diag": 1, "shift": 1, "mu_init": 30.0},
    "train": {"epochs": 3, "batch_size": 8, "lr": 1e-3, "optimizer": "adam", "seed": 0,
              "device": "cpu", "ll_samples": 10, "num_threads": 1},
}
QUICK_TRIAL = {"data": {"train_sequences": 16, "test_sequences": 8}, "train": {"epochs": 1}}

# capsules.yaml at a size where one search takes about two minutes
SEARCH_SET = ["data.train_sequences=96", "data.test_sequences=32", "train.epochs=4", "search.num_trials=12"]
QUICK_SEARCH_SET = ["data.train_sequences=16", "data.test_sequences=8", "train.epochs=2", "search.num_trials=3",
                    "search.n_startup_trials=2"]
SEARCHES = {"tpe+asha": ["search.algorithm=tpe", "search.scheduler=asha"],
            "random": ["search.algorithm=random", "search.scheduler=fifo"]}


def merged(base: dict, extra: dict) -> dict:
    return {k: {**v, **extra.get(k, {})} for k, v in base.items()}


def run(cmd: list[str], **kw) -> float:
    """Runs a command to its end; returns its wall-clock seconds; raises with its output on failure."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return time.perf_counter() - start


# ---------------------------------------------------------------- overhead and concurrency

LOOP = """
import json, sys, time
t0 = time.perf_counter()
import torch
from tvae_sweep.config import run_config_from_dict
from tvae_sweep.training import Trainer
imported = time.perf_counter() - t0
raw, seeds = json.loads(sys.argv[1]), json.loads(sys.argv[2])
torch.set_num_threads(1)
times = []
for seed in seeds:
    raw["train"]["seed"] = seed
    start = time.perf_counter()
    trainer = Trainer(run_config_from_dict(raw))
    for _ in trainer.epochs():
        pass
    times.append(time.perf_counter() - start)
print(json.dumps({"import_s": imported, "trial_s": times}))
"""

RAY_START = """
import time
t0 = time.perf_counter()
import ray
imported = time.perf_counter() - t0
t1 = time.perf_counter()
ray.init(num_cpus=2, include_dashboard=False)
started = time.perf_counter() - t1
t2 = time.perf_counter()
ray.shutdown()
print(imported, started, time.perf_counter() - t2)
"""


def plain_loop(trial: dict, n: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", LOOP, json.dumps(trial), json.dumps(list(range(n)))],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ray_start_up() -> dict:
    proc = subprocess.run([sys.executable, "-c", RAY_START], cwd=ROOT, capture_output=True, text=True, check=True)
    imported, started, stopped = map(float, proc.stdout.split()[-3:])
    return {"import_s": imported, "init_s": started, "shutdown_s": stopped}


def sweep_spec(trial: dict, n: int, concurrent: int, reuse: bool, tracking: bool = True) -> dict:
    return {**trial, "space": {"train.seed": {"type": "categorical", "values": list(range(n))}},
            "search": {"algorithm": "grid", "scheduler": "fifo", "max_concurrent": concurrent},
            "resources": {"cpus_per_trial": 1, "reuse_actors": reuse}, "tracking": {"enabled": tracking}}


def trial_times(results: Path, name: str) -> list[float]:
    """Each trial's own training time as Ray recorded it (time_total_s of its last report)."""
    from tvae_sweep.sweep.layout import sweep_dir
    from tvae_sweep.sweep.results import trials_frame

    frame = trials_frame(sweep_dir(results, name).read_state()["experiment_path"])
    return [float(v) for v in frame["time_s"]]


def timed_sweep(spec: dict, work: Path, name: str) -> dict:
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    wall = run([*CLI, "launch", str(path), "--results-dir", str(work / "results"), "--name", name])
    return {"wall_s": wall, "trial_s": trial_times(work / "results", name)}


# (label, trials at a time, reused workers, MLflow tracking)
VARIANTS = (("one_at_a_time", 1, True, True), ("new_process_per_trial", 1, False, True),
            ("without_mlflow", 1, True, False), ("two_at_a_time", 2, True, True))


def overhead(quick: bool, n: int) -> dict:
    trial = merged(TRIAL, QUICK_TRIAL) if quick else TRIAL
    out = {"n": n, "ray": ray_start_up(), "loop": plain_loop(trial, n)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for label, concurrent, reuse, tracking in VARIANTS:
            out[label] = timed_sweep(sweep_spec(trial, n, concurrent, reuse, tracking), work, label)
    return out


# ---------------------------------------------------------------- search efficiency


def epoch_reports(results: Path, name: str) -> list[tuple[float, str, float]]:
    """(time, trial, log_likelihood) of every report of a sweep, in the order they were made, from
    each trial's result.json (one JSON object per report)."""
    from ray.tune import ExperimentAnalysis

    from tvae_sweep.sweep.layout import sweep_dir

    analysis = ExperimentAnalysis(sweep_dir(results, name).read_state()["experiment_path"])
    reports = []
    for trial in analysis.trials:
        path = Path(trial.path) / "result.json"
        for line in path.read_text().splitlines() if path.is_file() else []:
            r = json.loads(line)
            if "log_likelihood" in r:
                reports.append((float(r["timestamp"]), trial.trial_id, float(r["log_likelihood"])))
    return sorted(reports)


def epochs_to_target(reports: list[tuple[float, str, float]], target: float) -> int | None:
    """Trial-epochs reported (all trials together) up to the first report at or above target."""
    for i, (_, _, value) in enumerate(reports, start=1):
        if value >= target:
            return i
    return None


def search_efficiency(quick: bool, seeds: list[int]) -> dict:
    extra = QUICK_SEARCH_SET if quick else SEARCH_SET
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results"
        for seed in seeds:
            for label, settings in SEARCHES.items():
                name = f"{label.replace('+', '_')}_{seed}"
                sets = [*extra, *settings, f"search.seed={seed}", "tracking.enabled=false"]
                wall = run([*CLI, "launch", "search_spaces/capsules.yaml", "--results-dir", str(results),
                            "--name", name, *[a for s in sets for a in ("--set", s)]])
                reports = epoch_reports(results, name)
                runs.append({"search": label, "seed": seed, "wall_s": wall, "trial_epochs": len(reports),
                             "best": max(v for _, _, v in reports), "reports": reports})
    bests = sorted(r["best"] for r in runs)
    targets = {"reached by every search": bests[0], "median of the searches' bests": statistics.median(bests)}
    for r in runs:
        r["to_target"] = {label: epochs_to_target(r["reports"], t) for label, t in targets.items()}
        del r["reports"]
    return {"settings": extra, "targets": targets, "runs": runs}


# ---------------------------------------------------------------- report


def overhead_text(o: dict) -> str:
    ray = o["ray"]
    start_up = ray["import_s"] + ray["init_s"] + ray["shutdown_s"]
    loop = o["loop"]["import_s"] + sum(o["loop"]["trial_s"])  # a plain loop imports torch too
    lines = [
        f"{o['n']} identical trainings (the full-size MNIST TVAE, 18x18 capsules, {TRIAL['data']['train_sequences']} "
        f"training and {TRIAL['data']['test_sequences']} test sequences, {TRIAL['train']['epochs']} epochs, one thread each).",
        "",
        f"Ray start-up, timed apart: import {ray['import_s']:.1f} s, `ray.init` {ray['init_s']:.1f} s, shutdown "
        f"{ray['shutdown_s']:.1f} s: {start_up:.1f} s in all, taken off every sweep's wall time below.",
        "",
        "| how | wall s | trainings s (sum, as each trial timed itself) | per training s | overhead beyond the loop |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| plain loop, one process (with its {o['loop']['import_s']:.1f} s of imports) | {loop:.1f} | "
        f"{sum(o['loop']['trial_s']):.1f} | {sum(o['loop']['trial_s']) / o['n']:.1f} | - |",
    ]
    for label, title in (("one_at_a_time", "sweep, one trial at a time, reused workers (the default)"),
                         ("new_process_per_trial", "sweep, one at a time, a new worker per trial (before)"),
                         ("without_mlflow", "sweep, one at a time, reused workers, MLflow tracking off"),
                         ("two_at_a_time", "sweep, two one-CPU trials at a time")):
        if label not in o:
            continue
        s = o[label]
        trainings = sum(s["trial_s"])
        extra = (s["wall_s"] - start_up - loop) / loop
        shown = f"{100 * extra:.1f}%" if label != "two_at_a_time" else "-"
        lines.append(f"| {title} | {s['wall_s']:.1f} | {trainings:.1f} | {trainings / max(1, len(s['trial_s'])):.1f} | {shown} |")
    one, two = o["one_at_a_time"]["wall_s"] - start_up, o["two_at_a_time"]["wall_s"] - start_up
    pct = 100 * (one - loop) / loop
    lines += ["", f"Sweep overhead (one at a time, reused workers, less Ray start-up): {pct:.1f}% "
                  f"(goal <= 10%: {'met' if pct <= 10 else '**not met**'}).",
              f"Concurrency: two one-CPU trials at a time give {one / two:.2f}x the throughput of one "
              f"(sweep wall times less Ray start-up; goal >= 1.7x: {'met' if one / two >= 1.7 else '**not met**'})."]
    return "\n".join(lines)


def search_text(s: dict) -> str:
    lines = [f"capsules.yaml with `--set {' '.join(s['settings'])}`; TPE+ASHA is the spec's own search, "
             "random runs every trial to its last epoch (FIFO). Trial-epochs counted over all trials in "
             "the order they were reported.", "",
             "| search | seed | wall s | trial-epochs | best log-likelihood | "
             + " | ".join(f"trial-epochs to {t:.2f} ({label})" for label, t in s["targets"].items()) + " |",
             "| --- | ---: | ---: | ---: | ---: |" + " ---: |" * len(s["targets"])]
    for r in s["runs"]:
        reach = " | ".join("not reached" if v is None else str(v) for v in r["to_target"].values())
        lines.append(f"| {r['search']} | {r['seed']} | {r['wall_s']:.0f} | {r['trial_epochs']} | {r['best']:.2f} | {reach} |")
    lines.append("")
    for label in SEARCHES:
        mine = [r for r in s["runs"] if r["search"] == label]
        parts = []
        for target in s["targets"]:
            reached = [r["to_target"][target] for r in mine if r["to_target"][target] is not None]
            parts.append(f"{len(reached)}/{len(mine)} reached the {target} target"
                         + (f" after a median of {statistics.median(reached):g} trial-epochs" if reached else ""))
        lines.append(f"- {label}: median {statistics.median(r['trial_epochs'] for r in mine):g} trial-epochs and "
                     f"{statistics.median(r['wall_s'] for r in mine):.0f} s per search; " + "; ".join(parts) + ".")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that every part runs")
    parser.add_argument("--only", choices=("overhead", "search"), default=None)
    parser.add_argument("--trials", type=int, default=8, help="identical trials for overhead and concurrency")
    parser.add_argument("--seeds", type=int, default=3, help="search seeds per algorithm")
    parser.add_argument("--no-write", action="store_true", help="print without touching RESULTS.md")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw numbers here")
    args = parser.parse_args(argv)

    raw: dict = {"machine": machine_line()}
    parts = {"overhead": ("Sweep overhead and concurrency", lambda: overhead(args.quick, args.trials), overhead_text),
             "search": ("Search efficiency: TPE with ASHA against random search",
                        lambda: search_efficiency(args.quick, list(range(args.seeds))), search_text)}
    for part, (title, measure, render) in parts.items():
        if args.only not in (None, part):
            continue
        load_before = os.getloadavg()
        raw[part] = measure()
        load_after = os.getloadavg()
        text = (f"### Sweeps: {title} (`python -m benchmarks.bench_sweep --only {part}`)\n\n"
                f"Machine: {raw['machine']}. Load average (1, 5, 15 min) before: "
                f"{' '.join(f'{v:.2f}' for v in load_before)}; after: {' '.join(f'{v:.2f}' for v in load_after)}.\n\n"
                + render(raw[part]))
        print(text, flush=True)
        if not args.no_write and not args.quick:
            write_section(f"bench_sweep_{part}", text)
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
