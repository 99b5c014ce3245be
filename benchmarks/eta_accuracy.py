"""How right the progress line's ETA was: each estimate a launch's log printed against the true time
left to its stage's end (the search's last trial event; then the confirmation's).

    python -m benchmarks.eta_accuracy launch.log

prints, per stage, one row per progress line (time, share of the epochs done, ETA, true time left,
error) and how many estimates past 10% of the epochs were within 25% of the truth.
"""
from __future__ import annotations

import re
import sys
from datetime import datetime, timedelta
from pathlib import Path

STAMP = r"(\d\d:\d\d:\d\d)  "
PROGRESS = re.compile(STAMP + r".*?; (\d+)/(\d+) epochs; .*?, about (?:(\d+)h)?(\d+)m(?:(\d+)s)? to go")
TRIAL_END = re.compile(STAMP + r"trial \S+ (finished|failed|stopped)")
STAGE = re.compile(r"^sweep \S+, (\w+) stage:")
WITHIN, PAST = 0.25, 0.10


def clock(text: str) -> datetime:
    return datetime.strptime(text, "%H:%M:%S")


def stages(lines: list[str]) -> dict[str, list[str]]:
    """The log's lines by stage: the search, then each later stage its launch announced."""
    out, name = {"search": []}, "search"
    for line in lines:
        if m := STAGE.match(line):
            name = m.group(1)
            out[name] = []
        out[name].append(line)
    return out


def rows(lines: list[str]) -> list[tuple[str, float, float, float]]:
    """(time, share of epochs done, ETA s, true s) for each progress line of one stage."""
    ends = [clock(m.group(1)) for line in lines if (m := TRIAL_END.match(line))]
    if not ends:
        return []
    end, out = ends[-1], []
    for line in lines:
        if m := PROGRESS.match(line):
            at = clock(m.group(1))
            h, mins, s = (int(g or 0) for g in m.groups()[3:])
            eta = timedelta(hours=h, minutes=mins, seconds=s).total_seconds()
            out.append((m.group(1), int(m.group(2)) / int(m.group(3)), eta, (end - at).total_seconds()))
    return out


def table(name: str, measured: list[tuple[str, float, float, float]]) -> str:
    lines = [f"{name}:", "", "| time | epochs done | ETA s | true s | error |", "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {t} | {done:.0%} | {eta:.0f} | {true:.0f} | {eta / true - 1:+.0%} |" if true > 0 else
              f"| {t} | {done:.0%} | {eta:.0f} | {true:.0f} | |" for t, done, eta, true in measured]
    past = [(eta, true) for _, done, eta, true in measured if done >= PAST and true > 0]
    good = sum(abs(eta / true - 1) <= WITHIN for eta, true in past)
    lines += ["", f"past {PAST:.0%} of the epochs: {good} of {len(past)} estimates within {WITHIN:.0%}"]
    return "\n".join(lines)


def main(path: str) -> None:
    for name, lines in stages(Path(path).read_text().splitlines()).items():
        if measured := rows(lines):
            print(table(name, measured), end="\n\n")


if __name__ == "__main__":
    main(sys.argv[1])
