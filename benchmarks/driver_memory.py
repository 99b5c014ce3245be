"""Where a sweep's driver memory goes: the scale sweep of bench_sweep run in this process under
tracemalloc, with snapshots as trials end, and the growth between two of them by where it was
allocated.

    .venv/bin/python -m benchmarks.driver_memory --trials 250 --at 50,250
    .venv/bin/python -m benchmarks.driver_memory --trials 250 --at 50,250 --set tracking.enabled=false

For each snapshot: the driver's RSS, the memory tracemalloc sees (Python's allocator and numpy's),
and the live objects by type; then, between consecutive snapshots, the allocations that grew most,
each with its call stack (`--frames` deep). RSS growing faster than the traced memory is memory
outside Python's allocator (pyarrow's pool, C libraries). Measurements, not a test; nothing here is
written to RESULTS.md.
"""
from __future__ import annotations

import argparse
import collections
import gc
import os
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from tvae_sweep import sweeping
from tvae_sweep.sweep.console import TrialConsole
from tvae_sweep.sweep.heap import malloc_info

from .bench_sweep import SCALE_SPEC, driver_memory


def tracking_backlog() -> int:
    """Writes handed to the tracking thread and not yet done (all tracking threads' queues)."""
    pools = [o for o in gc.get_objects() if isinstance(o, ThreadPoolExecutor)]
    return sum(p._work_queue.qsize() for p in pools if p._thread_name_prefix == "mlflow-log")


def malloc_mb() -> tuple[float, float, float]:
    """glibc's heap, all arenas: (MB in use, MB free but held in the arenas, MB mapped apart)."""
    info = malloc_info()
    return info.get("uordblks", 0) / 2**20, info.get("fordblks", 0) / 2**20, info.get("hblkhd", 0) / 2**20


def object_counts() -> collections.Counter:
    gc.collect()
    return collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())


class Snapshots:
    """Takes a snapshot when the sweep's `marks`-th trial has ended (in the console's hook)."""

    def __init__(self, marks: list[int], done):
        """done: called with the snapshots once the last one is taken (the sweep then goes on to its end)."""
        self.marks, self.ended, self.taken, self.done = marks, 0, [], done

    def on_trial_complete(self, *args, **kwargs) -> None:
        self.ended += 1
        if self.ended in self.marks:
            rss, _ = driver_memory(os.getpid())
            counts = object_counts()
            traced = tracemalloc.get_traced_memory()[0] / 2**20
            snapshot = tracemalloc.take_snapshot() if tracemalloc.is_tracing() else None
            self.taken.append((self.ended, rss, traced, counts, snapshot))
            used, free, mapped = malloc_mb()
            print(f"at {self.ended} trials: RSS {rss:.0f} MB; malloc: {used:.0f} MB in use, {free:.0f} MB free "
                  f"in its arenas, {mapped:.0f} MB mmapped; traced {traced:.0f} MB (tracemalloc's own "
                  f"{tracemalloc.get_tracemalloc_memory() / 2**20:.0f} MB); tracking backlog {tracking_backlog()} "
                  "writes", file=sys.__stdout__, flush=True)  # stdout is Ray's log while Tune runs
            if self.ended == max(self.marks):
                self.done(self.taken)


def report(taken: list, top: int) -> str:
    lines = []
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__),
              tracemalloc.Filter(False, "<frozen importlib._bootstrap*>")]
    for (n0, rss0, tr0, c0, s0), (n1, rss1, tr1, c1, s1) in zip(taken, taken[1:], strict=False):
        per = n1 - n0
        lines += [f"## {n0} -> {n1} trials: RSS {rss0:.0f} -> {rss1:.0f} MB ({(rss1 - rss0) / per:.3f} MB/trial), "
                  f"traced {tr0:.1f} -> {tr1:.1f} MB ({(tr1 - tr0) / per:.3f} MB/trial)", "",
                  "### objects by type, growth", ""]
        for name, grown in (c1 - c0).most_common(top):
            lines.append(f"  {grown:+8d} ({grown / per:+.1f}/trial)  {name}")
        lines += ["", "### allocations that grew most, by call stack", ""]
        stats = s1.filter_traces(ignore).compare_to(s0.filter_traces(ignore), "traceback") if s0 else []
        for stat in stats[:top]:
            lines.append(f"  {stat.size_diff / 2**10:+10.1f} KiB ({stat.size_diff / per / 2**10:+.2f} KiB/trial), "
                         f"{stat.count_diff:+d} blocks")
            lines += [f"      {frame}" for frame in stat.traceback.format()]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=250)
    parser.add_argument("--at", default="50,250", help="trials ended at which to take snapshots")
    parser.add_argument("--frames", type=int, default=12,
                        help="call stack depth of each allocation; 0: no tracemalloc (RSS, malloc, objects)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="changes to the scale sweep's spec (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("driver_memory.txt"))
    args = parser.parse_args(argv)
    marks = [int(v) for v in args.at.split(",")]

    start = time.perf_counter()

    def write(taken: list) -> None:
        args.out.write_text(f"# driver memory, {args.trials} trials, snapshots {args.at}, "
                            f"{time.perf_counter() - start:.0f} s under tracemalloc\n\n" + report(taken, args.top))
        print(f"written to {args.out}", file=sys.__stdout__, flush=True)

    snapshots = Snapshots(marks, write)
    complete = TrialConsole.on_trial_complete

    def on_trial_complete(self, *a, **kw):
        complete(self, *a, **kw)
        snapshots.on_trial_complete()

    TrialConsole.on_trial_complete = on_trial_complete
    spec = {**SCALE_SPEC, "search": {**SCALE_SPEC["search"], "num_trials": args.trials}}
    if args.frames:
        tracemalloc.start(args.frames)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scale.yaml"
        path.write_text(yaml.safe_dump(spec))
        sweeping.launch(path, args.overrides, None, "scale", Path(tmp) / "results", None, False, None,
                        lambda *a, **kw: print(*a, flush=True))
    rss, hwm = driver_memory(os.getpid())
    print(f"sweep ended after {time.perf_counter() - start:.0f} s: RSS {rss:.0f} MB, peak {hwm:.0f} MB")
    os._exit(0)  # Ray's teardown at exit is not measured


if __name__ == "__main__":
    main()
