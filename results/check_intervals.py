"""Every interval results/README.md states, checked against the reference runs' own files.

    python results/check_intervals.py

An interval is written `mean [low, high]`. Each must be, to the digits it is written with, one the
reference data give: a row of an aggregates parquet (a group's `mean`, `ci_low`, `ci_high`, or a
summary's `<metric>_mean`, `_ci_low`, `_ci_high`), or a cell printed by one of the `python
results/...` commands the README names for its tables. A difference (an aggregates comparison's
`diff`, `ci_low`, `ci_high`, a cell of paired_table.py) may also be stated the other way round: "A is
5.4 [2.4, 8.3] below B" for -5.4 [-8.3, -2.4]. Prints each interval found nowhere, with its line, and
exits 1 if there is one.
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
NUMBER = r"[-+]?\d+\.\d+"
INTERVAL = re.compile(rf"({NUMBER}) \[({NUMBER}), ({NUMBER})\]")
COMMAND = re.compile(r"`python (results/\w+\.py [^`]+)`")
DIFFERENCES = "results/paired_table.py"  # the command whose cells are differences

Triple = tuple[float, float, float]


def written(text: str) -> list[tuple[int, tuple[str, str, str]]]:
    """(line number, (mean, low, high) as written) of every interval in `text`."""
    return [(i, m.groups()) for i, line in enumerate(text.splitlines(), 1) for m in INTERVAL.finditer(line)]


def parquet_triples(path: Path) -> list[Triple]:
    """The (mean, low, high) of each row of an aggregates parquet; a comparison's also negated."""
    frame = pd.read_parquet(path)
    columns = set(frame.columns)
    prefixes = [c.removesuffix("mean") for c in columns if c.endswith("mean")]
    keys = [(f"{p}mean", f"{p}ci_low", f"{p}ci_high") for p in prefixes if {f"{p}ci_low", f"{p}ci_high"} <= columns]
    if {"diff", "ci_low", "ci_high"} <= columns:
        keys.append(("diff", "ci_low", "ci_high"))
    return [t for mean, low, high in keys for t in frame[[mean, low, high]].itertuples(index=False)
            for t in ([t, negated(t)] if mean == "diff" else [t])]


def negated(triple: Triple) -> Triple:
    """A difference the other way round: -(mean), -(high), -(low)."""
    mean, low, high = triple
    return -mean, -high, -low


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
        cells = [tuple(map(float, groups)) for _, groups in written(printed(command))]
        out += cells
        if command.startswith(DIFFERENCES):
            out += map(negated, cells)
    return out


def found(stated: tuple[str, str, str], triples: np.ndarray) -> bool:
    """Whether a row of `triples` rounds to what is written, digit for digit."""
    value = np.array([float(text) for text in stated])
    half = np.array([0.5 * 10.0 ** -len(text.split(".")[1]) for text in stated]) + 1e-9
    return bool((np.abs(triples - value) <= half).all(axis=1).any())


def unfounded(readme: str, triples: list[Triple]) -> list[tuple[int, str]]:
    """(line, interval) of each stated interval that no triple matches."""
    known = np.array(triples, dtype=float).reshape(-1, 3)
    return [(line, f"{m} [{a}, {b}]") for line, (m, a, b) in written(readme) if not found((m, a, b), known)]


def main() -> int:
    readme = README.read_text()
    triples = [t for path in sorted(REFERENCE.rglob("aggregates/*.parquet")) for t in parquet_triples(path)]
    triples += printed_triples(readme)
    missing = unfounded(readme, triples)
    for line, stated in missing:
        print(f"results/README.md:{line}: {stated} is in no reference file")
    print(f"{len(written(readme)) - len(missing)} of {len(written(readme))} intervals found in the reference runs")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
