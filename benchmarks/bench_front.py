"""Front benchmark: how fast each search grows the Pareto front of capsules.yaml's two objectives.

    .venv/bin/python -m benchmarks.bench_front              # about 25 minutes on 2 cores
    .venv/bin/python -m benchmarks.bench_front --quick      # a smoke check of every part

capsules.yaml (the log-likelihood against equivariance_ratio_learned; its confirmation stage left
out) at a reduced size, searched by TPE with FIFO (every trial runs its epochs), TPE with
multi-objective ASHA, and random search with FIFO, each under several search seeds, one search
after another on the same machine. For every search, the hypervolume of the front of the trials
finished so far against wall time since its launch, all searches measured from one reference point
(the worst final value of each objective over every search), so their volumes compare. A trial
stopped early by ASHA counts with the values it last reported, as it does in the sweep's own front.

Written to RESULTS.md (section bench_front) with a figure, benchmarks/records/front_hypervolume.png.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from tvae_sweep.sweep.results import front_hypervolume

from .bench_sweep import CLI, ROOT, run
from .common import machine_line, publish

METRICS, MODES = ["log_likelihood", "equivariance_ratio_learned"], ["max", "min"]
SIZE = ["data.train_sequences=128", "data.test_sequences=32", "train.epochs=8", "search.num_trials=16",
        "search.n_startup_trials=6"]
QUICK_SIZE = ["data.train_sequences=16", "data.test_sequences=8", "train.epochs=2", "search.num_trials=3",
              "search.n_startup_trials=2", "train.ll_samples=2"]
SEARCHES = {"tpe+fifo": ["search.algorithm=tpe", "search.scheduler=fifo"],
            "tpe+mo-asha": ["search.algorithm=tpe", "search.scheduler=asha", "search.grace_period=2",
                            "search.reduction_factor=2"],
            "random+fifo": ["search.algorithm=random", "search.scheduler=fifo"]}
FIGURE = Path(__file__).with_name("records") / "front_hypervolume.png"


def finish_times(results: Path, name: str) -> dict[str, float]:
    """Each trial's last report (epoch seconds), from its result.json in the sweep's Ray experiment."""
    experiment = Path(json.loads((results / name / "sweep.json").read_text())["experiment_path"])
    ends = {}
    for path in experiment.glob("*/result.json"):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if lines:
            ends[lines[-1]["trial_id"]] = float(lines[-1]["timestamp"])
    return ends


def search_only(work: Path) -> Path:
    """capsules.yaml without its confirmation stage: the benchmark times the search alone."""
    spec = yaml.safe_load((ROOT / "search_spaces" / "capsules.yaml").read_text())
    spec.pop("confirm", None)
    path = work / "capsules_search.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def one_search(spec: Path, results: Path, label: str, seed: int, size: list[str]) -> dict:
    name = f"{label.replace('+', '_').replace('-', '_')}_{seed}"
    sets = [*size, *SEARCHES[label], f"search.seed={seed}", "tracking.enabled=false"]
    start = time.time()
    wall = run([*CLI, "launch", str(spec), "--results-dir", str(results), "--name", name,
                *[a for s in sets for a in ("--set", s)]])
    frame = pd.read_parquet(results / name / "trials.parquet")
    ends = finish_times(results, name)
    frame["finished_s"] = [ends.get(t, float("nan")) - start for t in frame["trial_id"]]
    keep = ["trial_id", "state", "epochs", "finished_s", *(f"final/{m}" for m in METRICS)]
    return {"search": label, "seed": seed, "wall_s": wall, "trials": frame[keep].to_dict("records")}


def reference_point(runs: list[dict]) -> list[float]:
    """The worst final value of each objective over every search's finished trials."""
    frame = pd.DataFrame([t for r in runs for t in r["trials"]])
    _, reference = front_hypervolume(frame, METRICS, MODES)
    return reference


def curve(run_: dict, reference: list[float]) -> list[tuple[float, float]]:
    """(seconds since launch, hypervolume of the trials finished by then) at each trial's end."""
    frame = pd.DataFrame(run_["trials"]).sort_values("finished_s")
    points = []
    for t in frame["finished_s"].dropna():
        value, _ = front_hypervolume(frame[frame["finished_s"] <= t], METRICS, MODES, reference)
        points.append((float(t), 0.0 if value != value else float(value)))
    return points


def time_to_reach(points: list[tuple[float, float]], target: float) -> float | None:
    return next((t for t, v in points if v >= target), None)


def measure(quick: bool, seeds: list[int]) -> dict:
    size = QUICK_SIZE if quick else SIZE
    planned = int(next(s for s in size if s.startswith("train.epochs=")).split("=")[1])
    with tempfile.TemporaryDirectory() as tmp:
        spec = search_only(Path(tmp))
        runs = [one_search(spec, Path(tmp) / "results", label, seed, size) for seed in seeds for label in SEARCHES]
    reference = reference_point(runs)
    for r in runs:
        r["curve"] = curve(r, reference)
        r["final_hv"] = r["curve"][-1][1] if r["curve"] else 0.0
        r["stopped_early"] = sum(1 for t in r["trials"] if t["state"] == "TERMINATED" and t["epochs"] < planned)
        r["trial_epochs"] = int(sum(t["epochs"] for t in r["trials"]))
    return {"size": size, "reference": reference, "runs": runs}


def summary(m: dict) -> dict:
    """Per search: median final hypervolume, its range over seeds, median wall time; and the time
    each MO-ASHA search took to reach FIFO's final hypervolume within FIFO's spread (its lowest)."""
    out = {}
    for label in SEARCHES:
        mine = [r for r in m["runs"] if r["search"] == label]
        out[label] = {"hv": statistics.median(r["final_hv"] for r in mine),
                      "hv_range": (min(r["final_hv"] for r in mine), max(r["final_hv"] for r in mine)),
                      "wall_s": statistics.median(r["wall_s"] for r in mine), "n": len(mine)}
    target = out["tpe+fifo"]["hv_range"][0]
    reach = [time_to_reach(r["curve"], target) for r in m["runs"] if r["search"] == "tpe+mo-asha"]
    out["target"] = target
    out["asha_reach_s"] = reach
    return out


def figure(m: dict) -> None:
    import matplotlib  # noqa: PLC0415 only when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    colours = dict(zip(SEARCHES, ("tab:blue", "tab:orange", "tab:grey"), strict=True))
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in m["runs"]:
        if r["curve"]:
            t, v = zip(*r["curve"], strict=True)
            ax.step([0, *t], [0, *v], where="post", color=colours[r["search"]], alpha=0.8,
                    label=r["search"] if r["seed"] == 0 else None)
    ax.set_xlabel("wall time since launch (s)")
    ax.set_ylabel("hypervolume of the front")
    ax.set_title("capsules.yaml, reduced size: front hypervolume against wall time")
    ax.legend()
    fig.tight_layout()
    FIGURE.parent.mkdir(exist_ok=True)
    fig.savefig(FIGURE, dpi=100)
    plt.close(fig)


def text(m: dict) -> str:
    s = summary(m)
    lines = [f"capsules.yaml with `--set {' '.join(m['size'])}`, objectives {METRICS[0]} (max) and {METRICS[1]} "
             f"(min); one reference point for every search, the worst final values over all of them: "
             f"{', '.join(f'{v:.4g}' for v in m['reference'])}. Figure: `benchmarks/records/{FIGURE.name}`.", "",
             "| search | seed | wall s | trials | stopped early | trial-epochs | final hypervolume |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in m["runs"]:
        lines.append(f"| {r['search']} | {r['seed']} | {r['wall_s']:.0f} | {len(r['trials'])} | {r['stopped_early']} "
                     f"| {r['trial_epochs']} | {r['final_hv']:.4g} |")
    lines.append("")
    for label in SEARCHES:
        x = s[label]
        lines.append(f"- {label}: n = {x['n']} seeds, final hypervolume median {x['hv']:.4g} (range "
                     f"{x['hv_range'][0]:.4g} to {x['hv_range'][1]:.4g}), median wall time {x['wall_s']:.0f} s.")
    half = s["tpe+fifo"]["wall_s"] / 2
    reached = [t for t in s["asha_reach_s"] if t is not None]
    verdict = ("met" if len(reached) == len(s["asha_reach_s"]) and reached and statistics.median(reached) <= half
               else "**not met**")
    times = ", ".join("never" if t is None else f"{t:.0f} s" for t in s["asha_reach_s"])
    lines.append(f"- MO-ASHA reached FIFO's lowest final hypervolume ({s['target']:.4g}) after: {times}; goal: "
                 f"within half FIFO's median wall time ({half:.0f} s): {verdict}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that every part runs")
    parser.add_argument("--seeds", type=int, default=3, help="search seeds per search")
    parser.add_argument("--no-write", action="store_true", help="print without touching RESULTS.md")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw numbers here")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    m = measure(args.quick, list(range(1 if args.quick else args.seeds)))
    load_after = os.getloadavg()
    write = not args.no_write and not args.quick
    if write:
        figure(m)
    body = (f"## Search: the front's hypervolume against wall time, FIFO against MO-ASHA and random "
            f"(`python -m benchmarks.bench_front`)\n\nMachine: {machine_line()}. Load average (1, 5, 15 min) "
            f"before: {' '.join(f'{v:.2f}' for v in load_before)}; after: "
            f"{' '.join(f'{v:.2f}' for v in load_after)}.\n\n" + text(m))
    publish("bench_front", body, write)
    if args.json:
        args.json.write_text(json.dumps(m, indent=1))


if __name__ == "__main__":
    main()
