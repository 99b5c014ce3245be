"""Every interval and every mean ± standard deviation results/README.md states, and every table cell
with a value beside it in parentheses, checked against the reference runs' own files.

    python results/check_readme.py

Each must be, to the digits it is written with, what the reference data give:
- `mean [low, high]`: a row of an aggregates parquet (a group's `mean`, `ci_low`, `ci_high`, or a
  summary's `<metric>_mean`, `_ci_low`, `_ci_high`), or a cell printed by one of the `python
  results/...` commands the README names for its tables. A difference (an aggregates comparison's
  `diff`, `ci_low`, `ci_high`, a cell of paired_table.py) may also be stated the other way round: "A
  is 5.4 [2.4, 8.3] below B" for -5.4 [-8.3, -2.4].
- `mean ± sd`: an aggregates row's `mean` and `std`, or `<metric>_mean` and `_std` (or `_std_mean`,
  the spread within replicated trials), or over the seeds of one config in a trials.parquet, a final
  or best metric's mean and standard deviation, or those of the likelihood above the test set's mean
  image (log_likelihood + mean_image_nll).
- a table cell `mean (x)` or `mean ± sd (x)`: x is the sd, as above, or the same metric at
  initialisation (`<metric>_init`), or the original per-frame likelihood beside log_likelihood.
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
NUMBER = r"[-+]?\d[\d,]*(?:\.\d+)?"  # 13,270 reads as 13270
INTERVAL = re.compile(rf"({DECIMAL}) \[({DECIMAL}), ({DECIMAL})\]")
SPREAD = re.compile(rf"({NUMBER}) ± ({NUMBER})")
BESIDE = re.compile(rf"(?<=\| )({NUMBER})(?: ± {NUMBER})? \(({NUMBER})\)(?= \|)")  # a whole table cell
COMMAND = re.compile(r"`python (results/\w+\.py [^`]+)`")
DIFFERENCES = "results/paired_table.py"  # the command whose cells are differences


def stated(text: str, pattern: re.Pattern = INTERVAL) -> list[tuple[int, tuple[str, ...]]]:
    """(line number, the numbers as written) of every match of `pattern` in `text`."""
    return [(i, m.groups()) for i, line in enumerate(text.splitlines(), 1) for m in pattern.finditer(line)]


def aggregate_rows(frame: pd.DataFrame, *ends: str) -> list[np.ndarray]:
    """From an aggregates table, (<p>mean, <p><end>, ...) of each row for every prefix p that has all
    those columns (p "" for a group's `mean`, `std`, ...; "kl_z_" in a summary)."""
    columns = set(frame.columns)
    prefixes = [c.removesuffix("mean") for c in columns if c.endswith("mean")]
    keys = [[f"{p}mean", *(p + e for e in ends)] for p in prefixes if {p + e for e in ends} <= columns]
    return [frame[key].to_numpy(dtype=float) for key in keys]


def comparisons(frame: pd.DataFrame) -> list[np.ndarray]:
    """An aggregates comparison's (diff, ci_low, ci_high), also the other way round."""
    if not {"diff", "ci_low", "ci_high"} <= set(frame.columns):
        return []
    rows = frame[["diff", "ci_low", "ci_high"]].to_numpy(dtype=float)
    return [rows, negated(rows)]


def negated(rows: np.ndarray) -> np.ndarray:
    """Differences the other way round: -(mean), -(high), -(low)."""
    return -rows[:, [0, 2, 1]]


def config_seeds(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The means and standard deviations over the seeds of each config of a trials.parquet (one row
    a config), of each final and best metric and of the likelihood above the mean image (`above`)."""
    frame = pd.read_parquet(path)
    frame = frame[frame["state"] == "TERMINATED"]
    keys = [c for c in frame.columns if c.startswith("config/") and c != "config/train.seed"
            and frame[c].map(str).nunique() > 1]
    if not keys:
        return pd.DataFrame(), pd.DataFrame()
    frame = frame.assign(**{c: frame[c].map(str) for c in keys})  # lists and arrays group as text
    if "final/mean_image_nll" in frame:
        frame = frame.assign(above=frame["final/log_likelihood"] + frame["final/mean_image_nll"])
    values = [c for c in frame.columns if c.startswith(("final/", "best/", "above"))
              and pd.api.types.is_numeric_dtype(frame[c])]
    groups = frame.groupby(keys)[values]
    return groups.mean(), groups.std()


def seed_spreads(means: pd.DataFrame, stds: pd.DataFrame) -> list[np.ndarray]:
    """(mean, sd) of each metric of each config."""
    return [np.column_stack([means[c], stds[c]]) for c in means.columns]


def beside_values(means: pd.DataFrame) -> list[np.ndarray]:
    """(mean, the mean beside it) of each config: a metric and the same at initialisation, the
    likelihood and the original per-frame estimator's."""
    twins = [(c, f"{c}_init") for c in means.columns] + [("final/log_likelihood", "final/log_likelihood_per_frame")]
    return [means[[a, b]].to_numpy(dtype=float) for a, b in twins if {a, b} <= set(means.columns)]


def printed(command: str) -> str:
    """What `python COMMAND` prints from the repository's root, run in this process (as python runs a
    script: its folder first on the path)."""
    argv = [str(ROOT / a) if (ROOT / a).exists() else a for a in shlex.split(command)]
    with mock.patch.object(sys, "argv", argv), mock.patch.object(sys, "path", [str(Path(argv[0]).parent), *sys.path]), \
            redirect_stdout(io.StringIO()) as out:
        runpy.run_path(argv[0], run_name="__main__")
    return out.getvalue()


def printed_intervals(readme: str) -> list[np.ndarray]:
    """The cells printed by each `python results/...` command the README names."""
    out = []
    for command in sorted(set(COMMAND.findall(readme))):
        cells = np.array([list(map(float, groups)) for _, groups in stated(printed(command))]).reshape(-1, 3)
        out += [cells, negated(cells)] if command.startswith(DIFFERENCES) else [cells]
    return out


def known_values(readme: str) -> dict[re.Pattern, list[np.ndarray]]:
    """What the reference runs give, for each form a number is stated in."""
    tables = [pd.read_parquet(path) for path in sorted(REFERENCE.rglob("aggregates/*.parquet"))]
    seeds = [config_seeds(path) for path in sorted(REFERENCE.rglob("trials.parquet"))]
    spreads = [row for t in tables for ends in (("std",), ("std_mean",)) for row in aggregate_rows(t, *ends)]
    spreads += [row for means, stds in seeds for row in seed_spreads(means, stds)]
    intervals = [row for t in tables for row in aggregate_rows(t, "ci_low", "ci_high") + comparisons(t)]
    beside = [row for t in tables for row in aggregate_rows(t, "init_mean")]
    beside += [row for means, _ in seeds for row in beside_values(means)]
    return {INTERVAL: intervals + printed_intervals(readme), SPREAD: spreads, BESIDE: spreads + beside}


def found(numbers: tuple[str, ...], known: np.ndarray) -> bool:
    """Whether a row of `known` rounds to `numbers` as written, digit for digit."""
    value = np.array([float(text.replace(",", "")) for text in numbers])
    half = np.array([0.5 * 10.0 ** -len(text.partition(".")[2]) for text in numbers]) + 1e-9
    return bool((np.abs(known - value) <= half).all(axis=1).any())


def unfounded(text: str, known: list[np.ndarray], pattern: re.Pattern = INTERVAL) -> list[tuple[int, str]]:
    """(line, the numbers as written) of each match of `pattern` in `text` that no row of `known` gives."""
    rows = np.vstack([np.empty((0, pattern.groups)), *known])
    return [(line, ", ".join(numbers)) for line, numbers in stated(text, pattern) if not found(numbers, rows)]


def main() -> int:
    readme = README.read_text()
    known = known_values(readme)
    missing = sorted(miss for pattern, rows in known.items() for miss in unfounded(readme, rows, pattern))
    for line, numbers in missing:
        print(f"results/README.md:{line}: ({numbers}) is in no reference file")
    total = sum(len(stated(readme, pattern)) for pattern in known)
    print(f"{total - len(missing)} of {total} stated numbers found in the reference runs")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
