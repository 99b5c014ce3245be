"""Every interval and every mean ± standard deviation results/README.md states, checked against the
reference runs' own files.

    python results/check_readme.py

Each must be, to the digits it is written with, what the reference data give:
- `mean [low, high]`: a row of an aggregates parquet (a group's `mean`, `ci_low`, `ci_high`, or a
  summary's `<metric>_mean`, `_ci_low`, `_ci_high`), or a cell printed by one of the `python
  results/...` commands the README names for its tables. A difference (an aggregates comparison's
  `diff`, `ci_low`, `ci_high`, a cell of paired_table.py) may also be stated the other way round: "A
  is 5.4 [2.4, 8.3] below B" for -5.4 [-8.3, -2.4].
- `mean ± sd`: an aggregates row's `mean`, `std` (or `<metric>_mean`, `_std`), or over the seeds of
  one config in a trials.parquet, a final or best metric's mean and standard deviation, or those of
  the likelihood above the test set's mean image (log_likelihood + mean_image_nll).
Prints each number found nowhere, with its line, and exits 1 if there is one.
"""
from __future__ import annotations

import io
import re
import runpy
import shlex
import sys
from contextlib import redirect_stdout
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "results" / "README.md"
REFERENCE = ROOT / "results" / "reference"
DECIMAL = r"[-+]?\d+\.\d+"
INTERVAL = re.compile(rf"({DECIMAL}) \[({DECIMAL}), ({DECIMAL})\]")
SPREAD = re.compile(r"([-+]?\d+(?:\.\d+)?) ± (\d+(?:\.\d+)?)")
COMMAND = re.compile(r"`python (results/\w+\.py [^`]+)`")
DIFFERENCES = "results/paired_table.py"  # the command whose cells are differences

Triple = tuple[float, float, float]


def stated(text: str, pattern: re.Pattern = INTERVAL) -> list[tuple[int, tuple[str, ...]]]:
    """(line number, the numbers as written) of every match of `pattern` in `text`."""
    return [(i, m.groups()) for i, line in enumerate(text.splitlines(), 1) for m in pattern.finditer(line)]


def aggregates(path: Path, spread: str) -> list[tuple[float, ...]]:
    """From an aggregates parquet, each row's (mean, low, high), a comparison's also negated, or
    with spread "std", each row's (mean, std)."""
    frame = pd.read_parquet(path)
    columns = set(frame.columns)
    ends = ("ci_low", "ci_high") if spread == "interval" else ("std",)
    prefixes = [c.removesuffix("mean") for c in columns if c.endswith("mean")]
    keys = [(f"{p}mean", *(p + e for e in ends)) for p in prefixes if {p + e for e in ends} <= columns]
    if spread == "interval" and {"diff", "ci_low", "ci_high"} <= columns:
        keys.append(("diff", "ci_low", "ci_high"))
    return [t for key in keys for t in frame[list(key)].itertuples(index=False)
            for t in ([t, negated(t)] if key[0] == "diff" else [t])]


def negated(triple: Triple) -> Triple:
    """A difference the other way round: -(mean), -(high), -(low)."""
    mean, low, high = triple
    return -mean, -high, -low


def seed_spreads(path: Path) -> list[tuple[float, float]]:
    """(mean, standard deviation) over the seeds of each config of a trials.parquet, of each final
    and best metric and of the likelihood above the mean image."""
    frame = pd.read_parquet(path)
    frame = frame[frame["state"] == "TERMINATED"]
    keys = [c for c in frame.columns if c.startswith("config/") and c != "config/train.seed"
            and frame[c].map(str).nunique() > 1]
    if not keys:
        return []
    frame = frame.assign(**{c: frame[c].map(str) for c in keys})  # lists and arrays group as text
    if "final/mean_image_nll" in frame:
        frame = frame.assign(above=frame["final/log_likelihood"] + frame["final/mean_image_nll"])
    values = [c for c in frame.columns if c.startswith(("final/", "best/", "above"))
              and pd.api.types.is_numeric_dtype(frame[c])]
    groups = frame.groupby(keys)[values]
    means, stds = groups.mean(), groups.std()
    return [pair for c in values for pair in zip(means[c], stds[c], strict=True)]


def printed(command: str) -> str:
    """What `python COMMAND` prints from the repository's root, run in this process (as python runs a
    script: its folder first on the path)."""
    argv = [str(ROOT / a) if (ROOT / a).exists() else a for a in shlex.split(command)]
    with mock.patch.object(sys, "argv", argv), mock.patch.object(sys, "path", [str(Path(argv[0]).parent), *sys.path]), \
            redirect_stdout(io.StringIO()) as out:
        runpy.run_path(argv[0], run_name="__main__")
    return out.getvalue()


def printed_triples(readme: str) -> list[Triple]:
    """The cells printed by each `python results/...` command the README names."""
    out = []
    for command in sorted(set(COMMAND.findall(readme))):
        cells = [tuple(map(float, groups)) for _, groups in stated(printed(command))]
        out += cells
        if command.startswith(DIFFERENCES):
            out += map(negated, cells)
    return out


def found(numbers: tuple[str, ...], known: np.ndarray) -> bool:
    """Whether a row of `known` rounds to `numbers` as written, digit for digit."""
    value = np.array([float(text) for text in numbers])
    half = np.array([0.5 * 10.0 ** -len(text.partition(".")[2]) for text in numbers]) + 1e-9
    return bool((np.abs(known - value) <= half).all(axis=1).any())


def unfounded(text: str, known: list[tuple[float, ...]], pattern: re.Pattern = INTERVAL) -> list[tuple[int, str]]:
    """(line, the match as written) of each match of `pattern` in `text` that no row of `known` gives."""
    width = pattern.groups
    rows = np.array(known, dtype=float).reshape(-1, width)
    return [(line, show(numbers)) for line, numbers in stated(text, pattern) if not found(numbers, rows)]


def show(numbers: tuple[str, ...]) -> str:
    return f"{numbers[0]} [{numbers[1]}, {numbers[2]}]" if len(numbers) == 3 else " ± ".join(numbers)


def main() -> int:
    readme = README.read_text()
    parquets = sorted(REFERENCE.rglob("aggregates/*.parquet"))
    triples = [t for path in parquets for t in aggregates(path, "interval")] + printed_triples(readme)
    pairs = [p for path in parquets for p in aggregates(path, "std")]
    pairs += [p for path in sorted(REFERENCE.rglob("trials.parquet")) for p in seed_spreads(path)]
    missing = unfounded(readme, triples, INTERVAL) + unfounded(readme, pairs, SPREAD)
    for line, numbers in sorted(missing):
        print(f"results/README.md:{line}: {numbers} is in no reference file")
    total = len(stated(readme, INTERVAL)) + len(stated(readme, SPREAD))
    print(f"{total - len(missing)} of {total} intervals and spreads found in the reference runs")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
