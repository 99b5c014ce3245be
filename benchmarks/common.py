"""Machine description and timing helpers shared by the benchmarks.

Timings on a shared machine drift from minute to minute, so variants are timed in rounds, one
after another within each round, and compared by medians (of times and of per-round ratios). Each
timing also records how much of the machine's CPU other processes used meanwhile (from /proc), so
a report can keep the quiet samples only.
"""
from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

RESULTS = Path(__file__).with_name("RESULTS.md")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, str]:
    return {
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "torch": torch.__version__,
        "threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
    }


def machine_line() -> str:
    m = machine()
    return (f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}, {m['threads']} threads, "
            f"Python {m['python']}, {m['date']}")


def cpu_ticks() -> tuple[int, int, int]:
    """(all ticks, busy ticks) of the machine and this process's own busy ticks, from /proc."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0, 0, 0
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    return (sum(fields), user + nice + system + irq + softirq + steal, int(own[11]) + int(own[12]))


def others_share(before: tuple[int, int, int], after: tuple[int, int, int]) -> float:
    """Fraction of the machine's CPU time that other processes used between two cpu_ticks()."""
    total = after[0] - before[0]
    if total <= 0:
        return 0.0
    return max(0.0, ((after[1] - before[1]) - (after[2] - before[2])) / total)


def time_call(fn: Callable[[], object], reps: int) -> tuple[float, float]:
    """Mean seconds per call of `reps` calls back to back, and the others' CPU share meanwhile."""
    ticks = cpu_ticks()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    seconds = (time.perf_counter() - start) / reps
    return seconds, others_share(ticks, cpu_ticks())


QUIET = 0.10  # a sample is quiet when other processes used less than this share of the CPUs
MIN_QUIET = 3  # fewer quiet samples than this: use all of them


@dataclass
class Timings:
    """Per function, one time (seconds per call) and one others' CPU share per round."""

    times: dict[str, list[float]] = field(default_factory=dict)
    busy: dict[str, list[float]] = field(default_factory=dict)

    def quiet_rounds(self, *names: str) -> list[int]:
        rounds = range(len(self.times[names[0]]))
        quiet = [r for r in rounds if all(self.busy[n][r] < QUIET for n in names)]
        return quiet if len(quiet) >= MIN_QUIET else list(rounds)

    def median(self, name: str) -> float:
        return statistics.median(self.times[name][r] for r in self.quiet_rounds(name))

    def fastest(self, name: str) -> float:
        return min(self.times[name])

    def ratio(self, num: str, den: str) -> float:
        """Median over rounds of num/den, each ratio taken within one round, quiet rounds only."""
        return statistics.median(self.times[num][r] / self.times[den][r]
                                 for r in self.quiet_rounds(num, den))

    def n_quiet(self, *names: str) -> int:
        rounds = range(len(self.times[names[0]]))
        return sum(all(self.busy[n][r] < QUIET for n in names) for r in rounds)


def calibrate(fn: Callable[[], object], min_seconds: float) -> int:
    """Calls per timing so that one timing lasts at least min_seconds."""
    seconds, _ = time_call(fn, 1)
    return max(1, round(min_seconds / max(seconds, 1e-6) + 0.5))


def interleaved(fns: dict[str, Callable[[], object]], quiet_rounds: int, max_seconds: float,
                min_seconds: float = 0.2, warmup: int = 2) -> Timings:
    """Times each function once per round, the functions alternating within a round; each timing
    repeats its function enough times to last at least min_seconds. Rounds go on until every
    function has quiet_rounds quiet timings, or max_seconds have passed (one round at least)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    reps = {name: calibrate(fn, min_seconds) for name, fn in fns.items()}
    out = Timings({name: [] for name in fns}, {name: [] for name in fns})
    start = time.perf_counter()
    while True:
        for name, fn in fns.items():
            seconds, busy = time_call(fn, reps[name])
            out.times[name].append(seconds)
            out.busy[name].append(busy)
        enough = all(out.n_quiet(name) >= quiet_rounds for name in fns)
        if enough or time.perf_counter() - start > max_seconds:
            return out


def write_section(name: str, body: str, path: Path = RESULTS) -> None:
    """Replaces the text between <!-- name:start --> and <!-- name:end --> (appends it if absent)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def publish(name: str, text: str, write: bool) -> None:
    """Prints a benchmark's report and, if asked, writes it as section `name` of RESULTS.md."""
    print(text, flush=True)
    if write:
        write_section(name, text)
        print(f"written to {RESULTS.relative_to(RESULTS.parent.parent)}")
