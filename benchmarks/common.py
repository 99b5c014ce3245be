"""Machine description and timing helpers shared by the benchmarks.

Timings on a shared machine drift from minute to minute, so variants are timed in rounds, one
after another within each round, and compared by medians (of times and of per-round ratios).
"""
from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

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


def time_call(fn: Callable[[], object], reps: int) -> float:
    """Mean seconds per call of `reps` calls back to back."""
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, reps: int = 1,
                warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per call of each function, one value per round; the functions alternate within a round."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(time_call(fn, reps))
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def median_ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of num/den, each ratio taken within one round."""
    return statistics.median(a / b for a, b in zip(num, den))


def spread(values: list[float]) -> tuple[float, float]:
    return min(values), max(values)


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
