"""Sweep benchmark: what a sweep costs beyond its trainings, and how much search it buys.

    .venv/bin/python -m benchmarks.bench_sweep                 # about 60 minutes on 2 cores
    .venv/bin/python -m benchmarks.bench_sweep --quick         # a smoke check of every part
    .venv/bin/python -m benchmarks.bench_sweep --only overhead # overhead and concurrency only

Three measurements, on the same machine in one run, written to RESULTS.md (section bench_sweep):

- overhead: N identical trainings of about 30 s in a plain loop in one process, against the same
  N as trials of `tvae-sweep launch` one at a time (MLflow tracking on, as users run it); Ray's
  own start-up (import and ray.init) is timed apart. The machine's speed drifts over the minutes
  each takes, so they run in rounds (loop, sweeps, loop again), compared within the round. Once
  after the rounds: a sweep with a new worker process per trial, and one without MLflow;
- concurrency: in the same rounds, the N trials two at a time, each on one CPU, against one at a time;
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
import threading
import time
from pathlib import Path

import pandas as pd
import yaml

from .common import machine_line, publish

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "tvae_sweep"]

# one training of about 30 s on one thread: the full-size MNIST TVAE, a few hundred sequences
TRIAL = {
    "data": {"dataset": "mnist5k", "transforms": ["rotation", "hue", "scale"],
             "train_sequences": 480, "test_sequences": 32},
    "model": {"variant": "tvae", "n_caps": 18, "cap_dim": 18, "seq_len": 18, "coherence_window": 13,
              "n_off_diag": 1, "shift": 1, "mu_init": 30.0},
    "train": {"epochs": 3, "batch_size": 8, "lr": 1e-3, "optimizer": "adam", "seed": 0,
              "device": "cpu", "ll_samples": 10, "num_threads": 1},
}
QUICK_TRIAL = {"data": {"train_sequences": 16, "test_sequences": 8}, "train": {"epochs": 1}}

# capsules.yaml at a size where one search takes about two minutes, searching on the likelihood alone
ONE_OBJECTIVE = ["search.metric=log_likelihood", "search.mode=max"]
SEARCH_SET = [*ONE_OBJECTIVE, "data.train_sequences=96", "data.test_sequences=32", "train.epochs=4",
              "search.num_trials=12"]
QUICK_SEARCH_SET = [*ONE_OBJECTIVE, "data.train_sequences=16", "data.test_sequences=8", "train.epochs=2",
                    "search.num_trials=3",
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
        command = " ".join(map(str, cmd))
        raise RuntimeError(f"{command} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
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
    """Each trial's own training time as Ray recorded it (time_s of the sweep's trials table)."""
    return [float(v) for v in pd.read_parquet(results / name / "trials.parquet")["time_s"]]


def timed_sweep(spec: dict, work: Path, name: str) -> dict:
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    wall = run([*CLI, "launch", str(path), "--results-dir", str(work / "results"), "--name", name])
    return {"wall_s": wall, "trial_s": trial_times(work / "results", name)}


# (label, trials at a time, reused workers, MLflow tracking): timed in every round, beside the loop
ROUND_VARIANTS = (("one_at_a_time", 1, True, True), ("two_at_a_time", 2, True, True))
# timed once, after the rounds: what the defaults save
ONCE_VARIANTS = (("new_process_per_trial", 1, False, True), ("without_mlflow", 1, True, False))


def overhead(quick: bool, n: int, rounds: int) -> dict:
    """The loop and the sweeps in alternation, `rounds` times: the machine's speed drifts over the
    minutes each takes, so each round times the loop before and after its sweeps, and compares
    them with the mean of the two."""
    trial = merged(TRIAL, QUICK_TRIAL) if quick else TRIAL
    out: dict = {"n": n, "rounds": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for r in range(rounds):
            timings = {"ray": ray_start_up(), "loops": [plain_loop(trial, n)]}
            for label, concurrent, reuse, tracking in ROUND_VARIANTS:
                spec = sweep_spec(trial, n, concurrent, reuse, tracking)
                timings[label] = timed_sweep(spec, work, f"{label}_{r}")
            timings["loops"].append(plain_loop(trial, n))
            out["rounds"].append(timings)
        for label, concurrent, reuse, tracking in ONCE_VARIANTS:
            out[label] = timed_sweep(sweep_spec(trial, n, concurrent, reuse, tracking), work, label)
    return out


# ---------------------------------------------------------------- search efficiency


def epoch_reports(results: Path, name: str) -> list[tuple[float, str, float]]:
    """(time, trial, log_likelihood) of every report of a sweep, in the order they were made, from
    each trial's result.json in the Ray experiment that sweep.json names (one JSON object per report)."""
    experiment = Path(json.loads((results / name / "sweep.json").read_text())["experiment_path"])
    reports = []
    for path in experiment.glob("*/result.json"):
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if "log_likelihood" in r:
                reports.append((float(r["timestamp"]), r["trial_id"], float(r["log_likelihood"])))
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


# ---------------------------------------------------------------- driver memory at scale

# the tiniest trial the config allows: one capsule of 3, sequences of 2 frames, 2 training sequences,
# one epoch; random search over two keys, FIFO, two at a time, MLflow tracking on as users run it
SCALE_SPEC = {
    "data": {"dataset": "mnist5k", "transforms": ["rotation"], "train_sequences": 2, "test_sequences": 1},
    "model": {"variant": "tvae", "n_caps": 1, "cap_dim": 3, "seq_len": 2, "coherence_window": 1,
              "n_off_diag": 1, "shift": 1},
    "train": {"epochs": 1, "batch_size": 2, "eval_batch_size": 1, "ll_samples": 1, "device": "cpu",
              "num_threads": 1},
    "space": {"train.lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
              "train.seed": {"type": "int", "low": 0, "high": 1_000_000}},
    "search": {"algorithm": "random", "scheduler": "fifo", "metric": "log_likelihood", "mode": "max",
               "max_concurrent": 2, "seed": 0},
    "resources": {"cpus_per_trial": 1},
    "tracking": {"enabled": True},
}
MILESTONES = (100, 250, 500, 1000)  # finished trials at which the driver's memory is read out
ENDED = (" finished after ", " failed after ")  # the console's line for a trial that ended (not a terminal)


def driver_memory(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB, from /proc/<pid>/status; (nan, nan) once it is gone."""
    fields = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return fields.get("VmRSS", float("nan")), fields.get("VmHWM", float("nan"))


class MemoryPoll:
    """Reads a process's memory every `every` seconds on a thread, with the trials ended by then."""

    def __init__(self, pid: int, every: float = 2.0):
        self.pid, self.every = pid, every
        self.ended = 0
        self.samples: list[tuple[float, int, float, float]] = []  # (seconds, trials ended, RSS MB, HWM MB)
        self.start = time.perf_counter()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def sample(self) -> tuple[float, int, float, float]:
        rss, hwm = driver_memory(self.pid)
        row = (time.perf_counter() - self.start, self.ended, rss, hwm)
        if rss == rss:  # not nan: the process is still there
            self.samples.append(row)
        return row

    def _poll(self) -> None:
        while not self.stopped.wait(self.every):
            self.sample()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()


def scale_sweep(n: int, env: dict[str, str], work: Path, name: str) -> dict:
    """A sweep of `n` tiny trials by the command line, its driver's memory read while it runs and at
    every milestone (trials ended)."""
    spec = {**SCALE_SPEC, "search": {**SCALE_SPEC["search"], "num_trials": n}}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    cmd = [*CLI, "launch", str(path), "--results-dir", str(work / "results"), "--name", name]
    marks = [m for m in MILESTONES if m < n] + [n]
    at: dict[int, tuple] = {}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **env})
    poll = MemoryPoll(proc.pid)
    tail: list[str] = []
    for line in proc.stdout:
        tail = [*tail[-40:], line]
        if any(word in line for word in ENDED):
            poll.ended += 1
            if poll.ended in marks:
                at[poll.ended] = poll.sample()
    proc.wait()
    wall = time.perf_counter() - start
    poll.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{''.join(tail)}")
    peak = max((s[3] for s in poll.samples), default=float("nan"))
    return {"n": n, "env": env, "wall_s": wall, "peak_mb": peak,
            "at": {str(m): {"s": s, "rss_mb": rss, "hwm_mb": hwm} for m, (s, _, rss, hwm) in at.items()},
            "samples": poll.samples}


def scale(quick: bool, n: int, env: dict[str, str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return scale_sweep(8 if quick else n, env, Path(tmp), "scale")


def slope_mb(run: dict, first: int = 100) -> float:
    """MB of driver RSS per trial beyond the first `first`, while trials run: a least-squares line
    through the samples polled from `first` trials ended to the last (nan with fewer than two)."""
    n = run["n"]
    points = [(ended, rss) for _, ended, rss, _ in run["samples"] if first <= ended < n]
    if str(n) in run["at"]:
        points.append((n, run["at"][str(n)]["rss_mb"]))
    if len({e for e, _ in points}) < 2:
        return float("nan")
    return statistics.linear_regression([e for e, _ in points], [r for _, r in points]).slope


def scale_text(s: dict) -> str:
    env = ", ".join(f"{k}={v}" for k, v in s["env"].items()) or "none"
    rows = "\n".join(f"| {m} | {v['s']:.0f} | {v['rss_mb']:.0f} | {v['hwm_mb']:.0f} |" for m, v in s["at"].items())
    return "\n".join([
        f"{s['n']} trials of the tiniest training the config allows (one capsule of 3 units, sequences of "
        "2 frames, 2 training sequences, 1 epoch), random search over train.lr and train.seed, FIFO, two at "
        f"a time, MLflow tracking on; extra environment: {env}. The driver's (`tvae-sweep launch`) "
        "VmRSS and VmHWM from /proc, polled every 2 s and read as the console reports the trials ended.",
        "",
        "| trials ended | seconds | driver RSS MB | driver peak RSS MB |", "| ---: | ---: | ---: | ---: |", rows, "",
        f"Wall time {s['wall_s']:.0f} s ({s['wall_s'] / s['n']:.2f} s per trial; the machine is shared with "
        "other work, so this is not a quiet figure). Driver peak RSS "
        f"{s['peak_mb']:.0f} MB (after the last trial: the final tables, figures and MLflow runs). Slope beyond "
        "the first 100 trials while they run (least squares over the polled samples): "
        f"{slope_mb(s):.3f} MB per trial (goal < 0.5: {'met' if slope_mb(s) < 0.5 else '**not met**'}).",
    ])


# ---------------------------------------------------------------- report


def start_up_s(ray: dict) -> float:
    """Ray's import and start; its shutdown stays in the sweep's account (a sweep leaves Ray while it
    settles its MLflow runs, so only part of the shutdown adds to its wall time)."""
    return ray["import_s"] + ray["init_s"]


def loop_s(loops: list[dict]) -> float:
    """Mean wall time of the round's loops, their imports included (a plain loop imports torch too)."""
    return statistics.mean(loop["import_s"] + sum(loop["trial_s"]) for loop in loops)


def round_ratios(timings: dict) -> tuple[float, float]:
    """(overhead of the one-at-a-time sweep over the loop, throughput of two at a time over one),
    sweep wall times less Ray's start-up."""
    start_up, loop = start_up_s(timings["ray"]), loop_s(timings["loops"])
    one = timings["one_at_a_time"]["wall_s"] - start_up
    two = timings["two_at_a_time"]["wall_s"] - start_up
    return (one - loop) / loop, one / two


def overhead_text(o: dict) -> str:
    n, rounds = o["n"], o["rounds"]
    lines = [
        f"{n} identical trainings (the full-size MNIST TVAE, 18x18 capsules, {TRIAL['data']['train_sequences']} "
        f"training and {TRIAL['data']['test_sequences']} test sequences, {TRIAL['train']['epochs']} epochs, one "
        f"thread each), {len(rounds)} rounds; in each round Ray's start-up (import and `ray.init`, timed "
        "apart and taken off the sweeps' wall times; its shutdown counts as the sweeps'), the plain loop, "
        "the sweeps, and the plain loop again; the sweeps are compared with the mean of the two loops.",
        "",
        "| round | Ray start-up s | plain loop s, before / after (imports + trainings) | sweep, one at a time s "
        "| overhead beyond the loop "
        "| sweep, two at a time s | concurrency (one / two) | per training s: loop / one at a time / two at a time |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    overheads, speedups = [], []
    for i, t in enumerate(rounds, start=1):
        extra, speedup = round_ratios(t)
        overheads.append(extra)
        speedups.append(speedup)
        looped = [s for loop in t["loops"] for s in loop["trial_s"]]
        per = " / ".join(f"{sum(v) / len(v):.1f}" for v in (looped, t["one_at_a_time"]["trial_s"],
                                                           t["two_at_a_time"]["trial_s"]))
        loops = " / ".join(f"{loop_s([loop]):.1f}" for loop in t["loops"])
        lines.append(f"| {i} | {start_up_s(t['ray']):.1f} | {loops} | {t['one_at_a_time']['wall_s']:.1f} "
                     f"| {100 * extra:.1f}% | {t['two_at_a_time']['wall_s']:.1f} | {speedup:.2f}x | {per} |")
    once = [(label, title) for label, title in
            (("new_process_per_trial", "a new worker process per trial (before workers were reused)"),
             ("without_mlflow", "MLflow tracking off")) if label in o]
    if once:
        last = rounds[-1]
        lines += ["", "Once, after the rounds, one trial at a time (against the last round's loops):", "",
                  "| sweep | wall s | overhead beyond the loop | per training s |", "| --- | ---: | ---: | ---: |"]
        for label, title in once:
            s = o[label]
            extra = (s["wall_s"] - start_up_s(last["ray"]) - loop_s(last["loops"])) / loop_s(last["loops"])
            per_trial = sum(s["trial_s"]) / len(s["trial_s"])
            lines.append(f"| {title} | {s['wall_s']:.1f} | {100 * extra:.1f}% | {per_trial:.1f} |")
    pct, speedup = 100 * statistics.median(overheads), statistics.median(speedups)
    met = "met" if pct <= 10 else "**not met**"
    lines += ["", f"Sweep overhead, median over rounds: {pct:.1f}% (goal <= 10%: {met}).",
              f"Concurrency, median over rounds: two one-CPU trials at a time give {speedup:.2f}x the throughput "
              f"of one (goal >= 1.7x: {'met' if speedup >= 1.7 else '**not met**'})."]
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
        lines.append(f"| {r['search']} | {r['seed']} | {r['wall_s']:.0f} | {r['trial_epochs']} "
                     f"| {r['best']:.2f} | {reach} |")
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
    parser.add_argument("--only", choices=("overhead", "search", "scale"), default=None)
    parser.add_argument("--trials", type=int, default=8, help="identical trials for overhead and concurrency")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of loop and sweeps, side by side")
    parser.add_argument("--seeds", type=int, default=3, help="search seeds per algorithm")
    parser.add_argument("--scale-trials", type=int, default=1000, help="trials of the driver memory sweep")
    parser.add_argument("--scale-env", action="append", default=[], metavar="NAME=VALUE",
                        help="environment of the driver memory sweep (repeatable): Ray's knobs, say")
    parser.add_argument("--no-write", action="store_true", help="print without touching RESULTS.md")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw numbers here")
    args = parser.parse_args(argv)

    raw: dict = {"machine": machine_line()}
    rounds = 1 if args.quick else args.rounds
    parts = {"overhead": ("Sweep overhead and concurrency", lambda: overhead(args.quick, args.trials, rounds),
                          overhead_text),
             "search": ("Search efficiency: TPE with ASHA against random search",
                        lambda: search_efficiency(args.quick, list(range(args.seeds))), search_text),
             "scale": ("Driver memory over a long sweep",
                       lambda: scale(args.quick, args.scale_trials, dict(e.split("=", 1) for e in args.scale_env)),
                       scale_text)}
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
        publish(f"bench_sweep_{part}", text, not args.no_write and not args.quick)
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
